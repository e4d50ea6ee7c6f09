"""Quantum entropy from IBM Quantum hardware, harvested in batches into the pool.

``IbmQuantumSource`` connects with ``QiskitRuntimeService`` (channel
``ibm_quantum_platform``; token and instance from ``QISKIT_IBM_TOKEN`` and
``QISKIT_IBM_INSTANCE``, else the saved account), picks the named backend or
the least busy one, and runs the same Hadamard circuit as the local source
through ``executor_sampler.Sampler``, ``qubits x shots`` bits per job.

Draws never wait for hardware: ``draw`` first collects any finished job into
the pool (health-tested; a failing batch is stored as rejected), starts the
next job when the pool says so (low-water mark, nothing pending, within the
daily QPU budget), then takes never-used bits from the pool. An empty pool is
an ``EntropyError``, and the service falls back to the OS source. Jobs are
recorded in the pool when submitted, so one still queued at a restart is
collected afterwards with ``service.job(id)``.

With ``channel="local"`` the same code runs against qiskit-ibm-runtime's
local testing mode and a fake backend: no credentials, records of kind
``quantum-simulator``. The circuit is transpiled to the fake backend's ISA and
run, through the same sampler, on ``fake_backend_simulator`` of it (an
``AerSimulator`` on the stabilizer method, the same the local source uses), so
every fake backend fits in memory, 156 qubits included; a two-shot job at
construction proves it. qiskit is imported only when a source is constructed.

A configuration no harvest can ever succeed with (an unknown backend, more
qubits than it has, a batch too small for one draw, a local simulation that
fails, a daily budget smaller than one job) is a ``ConfigError`` from the
constructor: ``beacon run`` stops at start-up rather than run on OS bits
under a quantum label. Every harvest that
fails later is recorded in the pool; ``beacon.entropy.harvest`` turns the run
of failures into the status, metrics and log signals.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from beacon_verifier.format import format_timestamp

from beacon.config import Settings
from beacon.entropy import (
    QUANTUM_HARDWARE,
    QUANTUM_SIMULATOR,
    EntropyDraw,
    RawBatch,
    random_bytes,
)
from beacon.entropy.extract import bits_needed
from beacon.entropy.harvest import (
    DEFAULT_FAILING_AFTER,
    HarvestAlarm,
    one_line,
    summary,
)
from beacon.entropy.health import HealthConfig, run_health_tests
from beacon.entropy.pool import (
    FAILED,
    LOST,
    EntropyPool,
    HarvestDecision,
    PendingJob,
    PoolPolicy,
)
from beacon.entropy.qiskit_source import (
    check_job_size,
    fake_backend_simulator,
    job_bits,
    job_id_of,
    submit_sampler_job,
    transpile_for,
)
from beacon.entropy.record import OS_BITS_BYTES, Provenance, quantum_record, seal
from beacon.errors import ConfigError, EntropyError

#: Shots per hardware job: 127 qubits x 20,000 shots ~ 2.5 Mbit, about a day
#: of 60 s pulses at ~1,300 bits each, for roughly 10 QPU-seconds.
DEFAULT_IBM_SHOTS = 20_000
DEFAULT_CHANNEL = "ibm_quantum_platform"
TOKEN_ENV = "QISKIT_IBM_TOKEN"  # noqa: S105 - the variable's name, not a secret
INSTANCE_ENV = "QISKIT_IBM_INSTANCE"


def connect(
    channel: str = DEFAULT_CHANNEL,
    *,
    token: str | None = None,
    instance: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """A ``QiskitRuntimeService`` for ``channel``.

    Token and instance default to ``QISKIT_IBM_TOKEN`` / ``QISKIT_IBM_INSTANCE``
    from ``env`` (the process environment by default), else the saved account.
    ``channel="local"`` needs neither. Raises ``EntropyError`` when the service
    cannot be reached or the account is missing or refused.
    """
    environ = os.environ if env is None else env
    kwargs: dict[str, Any] = {"channel": channel}
    if channel != "local":
        token = token or environ.get(TOKEN_ENV) or None
        instance = instance or environ.get(INSTANCE_ENV) or None
        if token:
            kwargs["token"] = token
        if instance:
            kwargs["instance"] = instance
    try:
        from qiskit_ibm_runtime import QiskitRuntimeService

        return QiskitRuntimeService(**kwargs)
    except Exception as exc:
        # The message may not echo the token; name only the channel.
        raise EntropyError(
            f"cannot connect to IBM Quantum ({channel}): {type(exc).__name__}"
        ) from exc


def pick_backend(service: Any, name: str | None, min_qubits: int | None) -> Any:
    """The backend called ``name``, else the least busy operational one.

    Raises ``ConfigError`` when the service knows no backend of that name,
    ``EntropyError`` when it cannot say (e.g. it cannot be reached).
    """
    from qiskit.providers.exceptions import QiskitBackendNotFoundError

    try:
        with warnings.catch_warnings():
            # Local mode instantiates every fake backend; some warn that their
            # figures are made up, which is not news here.
            warnings.simplefilter("ignore", UserWarning)
            if name:
                return service.backend(name)
            if getattr(service, "is_local", False):
                return service.least_busy(min_num_qubits=min_qubits)
        return service.least_busy(min_num_qubits=min_qubits, operational=True)
    except QiskitBackendNotFoundError as exc:
        if name:
            raise ConfigError(
                f"no IBM Quantum backend {name!r} on this channel: {one_line(str(exc))}"
            ) from None
        raise EntropyError(f"no IBM Quantum backend (least busy): {exc}") from exc
    except Exception as exc:
        raise EntropyError(f"no IBM Quantum backend {name or '(least busy)'}: {exc}") from exc


def check_budget(qpu_seconds_per_day: float, job_qpu_seconds_estimate: float) -> None:
    """Raise ``ConfigError`` when the daily QPU budget cannot pay for a single job."""
    if qpu_seconds_per_day < job_qpu_seconds_estimate:
        raise ConfigError(
            f"qpu_seconds_per_day ({qpu_seconds_per_day:g}) is smaller than one job"
            f" (job_qpu_seconds_estimate {job_qpu_seconds_estimate:g}): no harvest could ever run"
        )


def policy_for(settings: Settings) -> PoolPolicy:
    """The pool policy of the beacon's configuration."""
    return PoolPolicy(
        low_water_draws=settings.pool_low_water_draws,
        max_age_seconds=settings.pool_max_age_hours * 3600.0,
        qpu_seconds_per_day=settings.qpu_seconds_per_day,
        job_qpu_seconds_estimate=settings.job_qpu_seconds_estimate,
    )


#: File name of the pool inside the beacon's data directory.
POOL_FILE_NAME = "entropy-pool.sqlite"


class IbmQuantumSource:
    """``EntropySource`` drawing from a pool filled by IBM Quantum jobs.

    ``service`` may be passed in (e.g. ``QiskitRuntimeService(channel="local")``);
    otherwise ``connect(channel, token=..., instance=...)`` makes one.
    ``backend`` names the backend (least busy when None); ``qubits`` defaults
    to all of its qubits. ``failing_after`` failed harvests in a row make the
    source report itself failing. ``urandom`` and ``clock`` are injectable for
    tests. The constructor checks the budget, connects, picks the backend,
    transpiles, and in local mode runs a two-shot job; it raises
    ``ConfigError`` when no harvest could ever succeed (see the module),
    ``EntropyError`` when the rest fails, and ``ValueError`` for bad sizes.
    """

    name = "qiskit-ibm"

    def __init__(
        self,
        *,
        pool: EntropyPool,
        backend: str | None = None,
        qubits: int | None = None,
        shots: int = DEFAULT_IBM_SHOTS,
        channel: str = DEFAULT_CHANNEL,
        token: str | None = None,
        instance: str | None = None,
        service: Any | None = None,
        health: HealthConfig | None = None,
        result_timeout: float | None = None,
        failing_after: int = DEFAULT_FAILING_AFTER,
        urandom: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_job_size(shots, qubits)
        check_budget(pool.policy.qpu_seconds_per_day, pool.policy.job_qpu_seconds_estimate)
        self.pool = pool
        self.shots = shots
        self.health_config = health if health is not None else HealthConfig()
        self.result_timeout = result_timeout
        self._urandom = urandom
        self._clock = clock
        self._service = (
            service if service is not None else connect(channel, token=token, instance=instance)
        )
        self.is_local = bool(getattr(self._service, "is_local", False))
        self.kind = QUANTUM_SIMULATOR if self.is_local else QUANTUM_HARDWARE
        self._backend = pick_backend(self._service, backend, qubits)
        self.backend_name = str(self._backend.name)
        self.num_qubits = qubits if qubits is not None else int(self._backend.num_qubits)
        if self.num_qubits > int(self._backend.num_qubits):
            raise ConfigError(
                f"ibm_qubits is {self.num_qubits} but {self.backend_name}"
                f" has {self._backend.num_qubits} qubits"
            )
        if self.num_qubits * shots < bits_needed(1.0):
            raise ConfigError(
                f"a harvest of {self.num_qubits} qubits x {shots} shots"
                f" ({self.num_qubits * shots} bits) cannot serve a single draw"
                f" (at least {bits_needed(1.0)} bits): raise ibm_shots"
            )
        self._isa, self.physical_qubits = transpile_for(self._backend, self.num_qubits)
        # Jobs run on the backend itself, or in local mode on a simulator of it.
        self._mode = fake_backend_simulator(self._backend) if self.is_local else self._backend
        self._jobs: dict[str, Any] = {}  # submitted in this process, by id
        self.alarm = HarvestAlarm(failing_after)
        if self.is_local:
            self._check_local_simulation()

    def _check_local_simulation(self) -> None:
        """Run a two-shot job now: raise ``ConfigError`` when the simulation cannot run."""
        try:
            job = submit_sampler_job(self._mode, self._isa, 2, seed=0)
            job_bits(job, 2, self.num_qubits)
        except EntropyError as exc:
            raise ConfigError(
                f"IBM local mode cannot simulate {self.backend_name}: {one_line(str(exc))}"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> IbmQuantumSource:
        """The source for the beacon's configuration: pool ``<data_dir>/entropy-pool.sqlite``.

        Empty ``ibm_backend`` means the least busy backend, empty
        ``ibm_instance`` the environment or saved account, ``ibm_qubits`` 0
        every qubit. Raises as the constructor and ``EntropyPool`` do.
        """
        # Before the data directory and the pool are created, not only in the constructor.
        check_budget(settings.qpu_seconds_per_day, settings.job_qpu_seconds_estimate)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            pool=EntropyPool(settings.data_dir / POOL_FILE_NAME, policy_for(settings)),
            backend=settings.ibm_backend or None,
            qubits=settings.ibm_qubits or None,
            shots=settings.ibm_shots,
            channel=settings.ibm_channel,
            instance=settings.ibm_instance or None,
            failing_after=settings.harvest_failing_after,
        )

    # --- harvesting ---------------------------------------------------------------------

    def start_harvest(self) -> str:
        """Submit one job now, charge it to the budget, and return its id.

        Does not consult the pool's policy (``maintain`` does). Raises
        ``EntropyError`` when the job cannot be submitted.
        """
        seed = None
        if self.is_local:
            seed = int.from_bytes(random_bytes(self._urandom, 8), "big") >> 1
        job = submit_sampler_job(self._mode, self._isa, self.shots, seed=seed)
        job_id = job_id_of(job)
        self._jobs[job_id] = job
        self.pool.record_submission(
            job_id, self.backend_name, qubits=self.physical_qubits, shots=self.shots
        )
        return job_id

    def _job_for(self, pending: PendingJob) -> Any | None:
        job = self._jobs.get(pending.job_id)
        if job is not None or self.is_local:
            return job  # a local job dies with its process: None marks it lost
        try:
            job = self._service.job(pending.job_id)
        except Exception:
            return None
        self._jobs[pending.job_id] = job
        return job

    @staticmethod
    def _finished(job: Any) -> bool:
        try:
            return bool(job.in_final_state())
        except Exception:
            return False

    def _usage(self, job: Any) -> float | None:
        if self.is_local:
            return 0.0
        try:
            seconds = float(job.usage())
        except Exception:
            return None
        return seconds if seconds > 0 else None  # 0 until IBM has computed it

    def collect(self, *, wait: bool = False) -> int:
        """Store the bits of finished jobs in the pool; returns how many batches were stored.

        With ``wait`` it blocks for each pending job (up to ``result_timeout``).
        A job that failed, or that cannot be found after a restart, is marked
        so and no longer counted as pending; its bits never enter the pool.
        A batch that fails its health tests is stored as rejected. Raises
        ``EntropyError`` only when the pool itself fails.
        """
        stored = 0
        for pending in self.pool.pending_jobs():
            job = self._job_for(pending)
            if job is None:
                self.pool.record_job_end(pending.job_id, state=LOST, detail="job not found")
                continue
            if not wait and not self._finished(job):
                continue
            try:
                bits = job_bits(job, pending.shots, len(pending.qubits), self.result_timeout)
            except EntropyError as exc:
                self.pool.record_job_end(
                    pending.job_id, state=FAILED, qpu_seconds=self._usage(job), detail=str(exc)
                )
                self._jobs.pop(pending.job_id, None)
                continue
            provenance = Provenance(
                backend=pending.backend,
                job_id=pending.job_id,
                batch_id=pending.job_id,
                qubits=pending.qubits,
                shots=pending.shots,
                harvested_at=self._clock(),
            )
            health = run_health_tests(bits, self.health_config)
            self.pool.add_batch(
                kind=self.kind,
                provenance=provenance,
                bits=bits,
                health=health,
                qpu_seconds=self._usage(job),
            )
            self._jobs.pop(pending.job_id, None)
            stored += 1
        return stored

    def maintain(self) -> HarvestDecision:
        """Collect finished jobs, then start the next one if the pool's policy says so.

        A job that cannot be started is recorded in the pool as a failed
        harvest rather than raised: a draw can still be served from the pool.
        Then ``alarm`` logs what the run of failures calls for. Raises
        ``EntropyError`` only when the pool itself fails.
        """
        self.collect()
        decision = self.pool.harvest_decision()
        if decision.start:
            try:
                self.start_harvest()
            except EntropyError as exc:
                self.pool.record_unsubmitted(self.backend_name, str(exc))
        self.alarm.observe(self.pool.harvest_record(), self._clock())
        return decision

    def harvest_now(self) -> int:
        """Run one job to completion and store it (e.g. to fill an empty pool at start-up).

        Ignores the low-water mark but not the budget. Returns the batches
        stored. Raises ``EntropyError`` when the budget is spent or the job
        cannot be submitted.
        """
        spent = self.pool.spent_today()
        policy = self.pool.policy
        if spent + policy.job_qpu_seconds_estimate > policy.qpu_seconds_per_day:
            raise EntropyError(
                f"QPU budget spent: {spent:.1f} of {policy.qpu_seconds_per_day:.1f} s today"
            )
        self.start_harvest()
        return self.collect(wait=True)

    # --- the ports ----------------------------------------------------------------------

    def released_batches(self, chain_index: int, pulse_index: int) -> list[RawBatch]:
        """Batches to publish now that pulse ``chain_index``/``pulse_index`` is out."""
        return self.pool.released_batches(chain_index, pulse_index)

    def batch_published(self, batch_id: str) -> None:
        """The store holds the batch: drop its bits from the pool."""
        self.pool.batch_published(batch_id)

    def pool_status(self) -> dict[str, Any]:
        """Pool level, age limit, budget and how the last harvests went, for ``status.json``."""
        return (
            self.pool.summary()
            | summary(self.pool.harvest_record(), self.alarm.failing_after)
            | {"backend": self.backend_name}
        )

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        """Never-used pooled bits for one pulse, sealed into a record.

        In local mode a draw that finds the pool empty waits for the job this
        process has running (seconds, on a simulator), so a dry run's first
        pulses are not OS fallbacks; a hardware job may queue for hours and is
        never waited for. Raises ``EntropyError`` when the pool is empty or fails.
        """
        self.maintain()
        if self.is_local and self.pool.usable_draws() == 0 and self.pool.pending_jobs():
            self.collect(wait=True)
            self.alarm.observe(self.pool.harvest_record(), self._clock())
        pooled = self.pool.take(chain_index, pulse_index)
        os_bits = random_bytes(self._urandom, OS_BITS_BYTES)
        return seal(
            quantum_record(
                kind=pooled.kind,
                chain_index=chain_index,
                pulse_index=pulse_index,
                provenance=pooled.provenance,
                health=pooled.health,
                conditioned=pooled.conditioned,
                os_bits=os_bits,
                batch_sha512=pooled.batch_sha512,
                batch_bits=pooled.batch_bits,
            )
        )


def harvest_report(settings: Settings) -> dict[str, Any]:
    """What ``beacon status`` shows of the pool: its level and the last harvest.

    Empty unless the IBM source is configured and its pool exists (it is never
    created here). Times are RFC 3339 UTC. Raises ``EntropyError`` when the
    pool cannot be read.
    """
    path = settings.data_dir / POOL_FILE_NAME
    if settings.entropy_source != "ibm" or not path.exists():
        return {}
    with EntropyPool(path, policy_for(settings)) as pool:
        draws = pool.usable_draws()
        record = pool.harvest_record()
    figures = summary(record, settings.harvest_failing_after)
    last = figures["lastHarvest"]
    return {
        "poolUsableDraws": draws,
        "lastHarvestAt": None if last is None else format_timestamp(round(last["at"] * 1000)),
        "lastHarvestResult": None if last is None else last["result"],
        "lastHarvestError": None if last is None else last["error"],
        "consecutiveHarvestFailures": figures["consecutiveHarvestFailures"],
        "harvestFailing": figures["harvestFailing"],
    }
