"""Quantum entropy from a local qiskit-aer simulator, one fresh job per draw.

The circuit puts every qubit in superposition with H and measures it
(``measure_all``), transpiled once to the backend's ISA
(``generate_preset_pass_manager(optimization_level=1)``), and is run as a
fresh job per draw through qiskit-ibm-runtime's client-side
``executor_sampler.Sampler``, which runs on qiskit-aer when given a local
backend. The circuit is Clifford, so Aer simulates it with the stabilizer
method even at 127 qubits.

Two simulators:

- noiseless ``AerSimulator()`` (default), with a configurable qubit count;
- the noise of a named fake IBM backend (e.g. ``"fake_sherbrooke"``), built
  once in the constructor by ``fake_backend_simulator``: its readout errors,
  the only part of its noise model that changes what this circuit measures,
  on the stabilizer method (the IBM source's local mode uses the same).

Each job's simulator is seeded from ``os.urandom`` (63 bits). A simulator is a
PRNG: a simulated batch holds at most those 63 bits of real entropy whatever
its statistical estimate says, which is why its records say
``quantum-simulator``, credit 0 bits of quantum min-entropy, and every record
also mixes in 512 OS bits.

Each draw's job and health tests run in the background right after the
previous draw, so a draw itself only conditions and seals (one job per draw,
never reused).

Every job's full raw output is published: the record commits to the whole
packed batch (``batchSha512``, ``batchBits``) and the source hands the batch
to the publisher (``ReleasesBatches``) once the pulse that used it is out, so
anyone can re-run the health tests and estimators on it
(``beacon-verify entropy``). At most ``MAX_UNPUBLISHED`` batches wait in
memory; a batch lost to a crash before publication shows up as a missing
raw batch to the verifier.

qiskit is imported when a source is constructed, never when this module is
imported. The job helpers here are shared with the IBM hardware source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from beacon.entropy import QUANTUM_SIMULATOR, EntropyDraw, RawBatch, random_bytes
from beacon.entropy.extract import condition, pack_bits, shot_major
from beacon.entropy.health import HealthConfig, HealthResult, run_health_tests
from beacon.entropy.record import OS_BITS_BYTES, Provenance, quantum_record, seal
from beacon.errors import EntropyError, HealthTestError

#: Shots per local job. 2048 shots x 127 qubits = 260,096 raw bits: two full
#: adaptive-proportion windows per qubit stream, a per-qubit 99 % bound on the
#: bias of about +-0.028, and ~1,100-1,300 bits consumed per draw (under 1 % of
#: the batch), while a noisy 127-qubit job stays well under a second on one core.
DEFAULT_SHOTS = 2048
#: Qubits of the noiseless simulator when none are given (a noisy one uses all
#: of its fake backend's qubits).
DEFAULT_QUBITS = 127
#: How many rejected batches a source keeps for audit.
DEFAULT_KEEP_REJECTED = 8
#: Used batches kept in memory until the publisher has them (about 32 KiB each).
MAX_UNPUBLISHED = 256

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Harvest:
    """The raw result of one job: its provenance and its ``(shots, qubits)`` 0/1 bits."""

    provenance: Provenance
    bits: NDArray[np.uint8]


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedBatch:
    """A batch that failed its health tests, kept for audit instead of being used."""

    harvest: Harvest
    health: HealthResult


# --- qiskit helpers (shared with ibm_source); each imports qiskit lazily ------------------


def check_job_size(shots: int, qubits: int | None) -> None:
    """Raise ``ValueError`` unless a job has at least two shots and one qubit."""
    if shots < 2:
        raise ValueError(f"shots must be >= 2, got {shots}")
    if qubits is not None and qubits < 1:
        raise ValueError(f"qubits must be >= 1, got {qubits}")


def load_fake_backend(name: str) -> Any:
    """A fake IBM backend by name (``"fake_sherbrooke"``).

    Raises ``EntropyError`` when no fake backend has that name.
    """
    try:
        from qiskit_ibm_runtime import fake_provider

        camel = "".join(part.capitalize() for part in name.split("_"))
        for cls_name in (camel, camel + "V2"):
            cls = getattr(fake_provider, cls_name, None)
            if cls is not None:
                backend = cls()
                if backend.name == name:
                    return backend
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fake_provider.FakeProviderForBackendV2().backend(name)
    except Exception as exc:
        raise EntropyError(f"no fake backend named {name!r}: {exc}") from exc


def hadamard_circuit(num_qubits: int) -> Any:
    """H on each of ``num_qubits`` qubits, then ``measure_all`` (qubit i into bit i)."""
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(num_qubits, name="beacon-entropy")
    circuit.h(range(num_qubits))
    circuit.measure_all()
    return circuit


def transpile_for(backend: Any, num_qubits: int) -> tuple[Any, tuple[int, ...]]:
    """The Hadamard circuit in ``backend``'s ISA, and the physical qubit behind each bit.

    Raises ``EntropyError`` when the circuit cannot be transpiled for the backend.
    """
    try:
        from qiskit.transpiler import generate_preset_pass_manager

        pass_manager = generate_preset_pass_manager(optimization_level=1, backend=backend)
        isa = pass_manager.run(hadamard_circuit(num_qubits))
        layout = isa.layout
        physical = (
            tuple(int(q) for q in layout.final_index_layout())
            if layout is not None
            else tuple(range(num_qubits))
        )
    except Exception as exc:
        raise EntropyError(f"cannot transpile the entropy circuit for {backend}: {exc}") from exc
    return isa, physical


def submit_sampler_job(mode: Any, isa: Any, shots: int, seed: int | None = None) -> Any:
    """Submit the ISA circuit through ``executor_sampler.Sampler`` and return the job.

    ``mode`` is a backend (local or IBM); ``seed`` seeds a local simulator.
    Raises ``EntropyError`` when the job cannot be submitted.
    """
    try:
        from qiskit_ibm_runtime.executor_sampler import Sampler

        sampler = Sampler(mode=mode)
        if seed is not None:
            sampler.options.simulator.seed_simulator = seed
        return sampler.run([isa], shots=shots)
    except Exception as exc:
        raise EntropyError(f"cannot submit the entropy job: {exc}") from exc


def job_bits(
    job: Any, shots: int, num_qubits: int, timeout: float | None = None
) -> NDArray[np.uint8]:
    """Wait for ``job`` and return its measurements as a ``(shots, num_qubits)`` uint8 array.

    Column ``c`` is classical bit ``c`` of the ``meas`` register. Raises
    ``EntropyError`` when the job fails or its result has another shape.
    """
    try:
        result = job.result(timeout=timeout) if timeout is not None else job.result()
        bool_bits = result[0].data.meas.to_bool_array(order="little")
    except Exception as exc:
        raise EntropyError(f"entropy job failed: {exc}") from exc
    bits = np.ascontiguousarray(bool_bits, dtype=np.uint8)
    if bits.shape != (shots, num_qubits):
        raise EntropyError(
            f"job returned bits of shape {bits.shape}, expected {(shots, num_qubits)}"
        )
    return bits


def job_id_of(job: Any) -> str:
    """The job's id. Raises ``EntropyError`` when it has none."""
    try:
        job_id = job.job_id()
    except Exception as exc:
        raise EntropyError(f"job has no id: {exc}") from exc
    if not isinstance(job_id, str) or not job_id:
        raise EntropyError(f"job has no usable id: {job_id!r}")
    return job_id


def make_simulator(noise_backend: str | None, qubits: int | None) -> tuple[Any, int]:
    """An AerSimulator and the number of qubits to use on it.

    Noiseless with ``qubits`` (default 127) qubits when ``noise_backend`` is
    None; else with the noise of that fake backend and all its qubits unless
    ``qubits`` says fewer. Raises ``EntropyError`` when qiskit-aer or the fake
    backend is unusable and ``ValueError`` when the backend has too few qubits.
    """
    try:
        from qiskit_aer import AerSimulator
    except Exception as exc:
        raise EntropyError(f"qiskit-aer is not usable: {exc}") from exc
    if noise_backend is None:
        num_qubits = qubits if qubits is not None else DEFAULT_QUBITS
        try:
            backend = AerSimulator()
            # Its default target stops at the qubits a statevector would fit in
            # memory; the Hadamard circuit is Clifford and runs as a stabilizer.
            backend.set_max_qubits(num_qubits)
        except Exception as exc:
            raise EntropyError(f"cannot set up AerSimulator: {exc}") from exc
        return backend, num_qubits
    fake = load_fake_backend(noise_backend)
    num_qubits = qubits if qubits is not None else int(fake.num_qubits)
    if num_qubits > fake.num_qubits:
        raise ValueError(f"{noise_backend} has {fake.num_qubits} qubits, not {num_qubits}")
    return fake_backend_simulator(fake), num_qubits


def fake_backend_simulator(fake: Any) -> Any:
    """An AerSimulator for the Hadamard circuit on fake backend ``fake``, under its noise.

    The circuit is H (``rz sx rz`` in the ISA) then a measurement on each
    qubit, nothing else. A Pauli error after any of those gates maps the
    qubit's state to another one with equal weight on 0 and 1, so the
    backend's gate errors leave the outcome distribution unchanged: only its
    readout errors (from the snapshot's assignment errors) shape it. Thermal
    relaxation, the one non-Pauli term, is left out; over a ~50 ns gate it
    would move a qubit's bias by ~1e-4. With readout errors alone the circuit
    runs on the ``"stabilizer"`` method and Aer samples every shot from one
    simulation: 127 qubits x 20,000 shots in a few seconds and a few MB,
    where the full noise model makes Aer pick a dense method that needs more
    memory than the machine has. Both sources use it: the local source's
    ``local_backend`` and the IBM source's local mode (qiskit-ibm-runtime
    runs an ``AerSimulator`` passed as the primitive's mode as configured).
    Raises ``EntropyError`` when qiskit-aer or the noise model is unusable.
    """
    try:
        from qiskit_aer import AerSimulator
        from qiskit_aer.noise import NoiseModel

        noise = NoiseModel.from_backend(fake, gate_error=False, thermal_relaxation=False)
        return AerSimulator.from_backend(fake, noise_model=noise, method="stabilizer")
    except Exception as exc:
        raise EntropyError(f"cannot build the simulator of {fake.name}: {exc}") from exc


# --- the local source --------------------------------------------------------------------


class LocalQuantumSource:
    """``EntropySource`` running a fresh Hadamard job on qiskit-aer for every draw.

    ``noise_backend`` names a fake IBM backend whose noise to simulate (all its
    qubits are used unless ``qubits`` says fewer); without it the simulator is
    noiseless with ``qubits`` qubits (default 127). A batch that fails its
    health tests is not used: ``draw`` raises ``EntropyError`` and the batch
    goes to ``rejected`` (the last ``keep_rejected`` of them, oldest first) and
    to ``on_reject`` when given. ``urandom`` and ``clock`` (Unix seconds) are
    injectable for tests.

    The constructor imports qiskit, builds the noise model and transpiles the
    circuit; it raises ``EntropyError`` when any of that fails and
    ``ValueError`` for a bad size.
    """

    name = "qiskit-local"

    def __init__(
        self,
        *,
        noise_backend: str | None = None,
        qubits: int | None = None,
        shots: int = DEFAULT_SHOTS,
        health: HealthConfig | None = None,
        keep_rejected: int = DEFAULT_KEEP_REJECTED,
        on_reject: Callable[[RejectedBatch], None] | None = None,
        urandom: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_job_size(shots, qubits)
        self.shots = shots
        self.health_config = health if health is not None else HealthConfig()
        self.rejected: deque[RejectedBatch] = deque(maxlen=keep_rejected)
        self._on_reject = on_reject
        self._urandom = urandom
        self._clock = clock
        self._backend, self.num_qubits = make_simulator(noise_backend, qubits)
        self.backend_name = str(self._backend.name)
        self._isa, self.physical_qubits = transpile_for(self._backend, self.num_qubits)
        # batch id -> (chain, pulse) of the record that used it, and its packed bits
        self._unpublished: OrderedDict[str, tuple[tuple[int, int], bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-qiskit")
        self._prefetch: Future[tuple[Harvest, HealthResult]] | None = None

    def harvest(self) -> Harvest:
        """Run one job and return its raw bits, untested.

        Raises ``EntropyError`` when the job cannot be run or returns malformed data.
        """
        seed = int.from_bytes(random_bytes(self._urandom, 8), "big") >> 1
        job = submit_sampler_job(self._backend, self._isa, self.shots, seed=seed)
        job_id = job_id_of(job)
        bits = job_bits(job, self.shots, self.num_qubits)
        provenance = Provenance(
            backend=self.backend_name,
            job_id=job_id,
            batch_id=job_id,
            qubits=self.physical_qubits,
            shots=self.shots,
            harvested_at=self._clock(),
        )
        return Harvest(provenance=provenance, bits=bits)

    def _harvest_and_test(self) -> tuple[Harvest, HealthResult]:
        harvest = self.harvest()
        return harvest, run_health_tests(harvest.bits, self.health_config)

    def _next_tested(self) -> tuple[Harvest, HealthResult]:
        """This draw's job, health-tested, and the next draw's job started.

        Each draw uses exactly one job, run after the previous draw returned: the
        job and its tests (about a second for 260,096 bits) run in the background
        between draws instead of inside the draw's deadline. Raises as ``harvest``.
        """
        with self._lock:
            pending = self._prefetch if self._prefetch is not None else self._start()
            try:
                return pending.result()
            finally:
                self._prefetch = self._start()

    def _start(self) -> Future[tuple[Harvest, HealthResult]]:
        return self._executor.submit(self._harvest_and_test)

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        """Take this draw's fresh job (tested in the background), condition it, seal the record.

        Raises ``EntropyError`` when the job fails, the batch fails its health
        tests (the batch is kept in ``rejected``), or it holds too few bits.
        """
        harvest, health = self._next_tested()
        if not health.passed:
            rejected = RejectedBatch(harvest=harvest, health=health)
            self.rejected.append(rejected)
            if self._on_reject is not None:
                self._on_reject(rejected)
            raise HealthTestError(
                f"job {harvest.provenance.job_id} on {self.backend_name} failed health tests: "
                + ", ".join(health.failures)
            )
        conditioned = condition(harvest.bits, 0, health.min_entropy)
        os_bits = random_bytes(self._urandom, OS_BITS_BYTES)
        packed = pack_bits(shot_major(harvest.bits))
        draw = seal(
            quantum_record(
                kind=QUANTUM_SIMULATOR,
                chain_index=chain_index,
                pulse_index=pulse_index,
                provenance=harvest.provenance,
                health=health,
                conditioned=conditioned,
                os_bits=os_bits,
                batch_sha512=hashlib.sha512(packed).digest(),
                batch_bits=int(harvest.bits.size),
            )
        )
        self._unpublished[harvest.provenance.batch_id] = ((chain_index, pulse_index), packed)
        while len(self._unpublished) > MAX_UNPUBLISHED:
            lost, _ = self._unpublished.popitem(last=False)
            log.warning("raw batch %s dropped unpublished: the publisher is behind", lost)
        return draw

    def released_batches(self, chain_index: int, pulse_index: int) -> list[RawBatch]:
        """Batches whose pulse is published once pulse ``chain_index``/``pulse_index`` is."""
        return [
            RawBatch(batch_id=batch_id, data=packed)
            for batch_id, (used_by, packed) in self._unpublished.items()
            if used_by <= (chain_index, pulse_index)
        ]

    def batch_published(self, batch_id: str) -> None:
        """Forget a batch the store now holds."""
        self._unpublished.pop(batch_id, None)
