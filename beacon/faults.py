"""Fault injection for crash tests and the fault soak.

Failpoints: ``BEACON_FAILPOINT=name:n`` makes the n-th pass through
``failpoint(name)`` kill the process with SIGKILL (no cleanup, no flush),
exactly as a power cut or the OOM killer would; ``name:n:stop`` pauses it with
SIGSTOP instead (a VM frozen mid-write), for the harness to SIGCONT it. Unset, a failpoint costs one
dict lookup. The tests in tests/integration/test_crash_recovery.py use it to
prove that no crash point forks the chain, repeats an index or loses a pulse.

Fault files: when ``SOAK_FAULT_DIR`` names a directory, files in it switch
faults on and off while the beacon runs, so a harness (bench/soak.py) can make
one instance's world misbehave without touching the code under test:

- ``entropy-fail``: while it exists, the entropy source's ``draw`` raises
  ``EntropyError`` (the service then publishes disclosed OS-fallback pulses);
- ``clock-offset-ms``: an integer added to the wall clock (negative steps it
  back), re-read at most every ``OFFSET_REFRESH_S``; absent means 0.

Unset, none of this exists: the source is not wrapped and the clock never
touches the file system. (The variable is not ``BEACON_*``: those are
settings, and the configuration refuses names it does not know.)
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beacon.entropy import EntropyDraw, EntropySource
from beacon.errors import EntropyError

FAULT_DIR_ENV = "SOAK_FAULT_DIR"
ENTROPY_FAIL_FILE = "entropy-fail"
CLOCK_OFFSET_FILE = "clock-offset-ms"
#: A tick reads the clock a few times; the file need not be read for each.
OFFSET_REFRESH_S = 0.1

log = logging.getLogger("beacon")

_SPEC = os.environ.get("BEACON_FAILPOINT", "")
_NAME, _, _REST = _SPEC.partition(":")
_COUNT, _, _ACTION = _REST.partition(":")
_remaining = {_NAME: int(_COUNT or "1")} if _NAME else {}
#: ``name:n:stop`` pauses the process (SIGSTOP) instead, for a harness to resume it.
_SIGNAL = signal.SIGSTOP if _ACTION == "stop" else signal.SIGKILL


def failpoint(name: str) -> None:
    """Kill (or pause) this process if ``name`` is armed and its count is reached."""
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] == 0:
            os.kill(os.getpid(), _SIGNAL)


def fault_dir() -> Path | None:
    """The directory named by ``SOAK_FAULT_DIR``, or None when fault files are off."""
    value = os.environ.get(FAULT_DIR_ENV, "")
    return Path(value) if value else None


class FailingEntropy:
    """An entropy source that fails while ``{directory}/entropy-fail`` exists.

    Everything but ``draw`` is forwarded to the wrapped source, so the
    runtime-checkable protocols it implements (``ReleasesBatches``,
    ``ReportsPool``) still match the wrapper, and its ``name`` still names it.
    """

    def __init__(self, inner: EntropySource, directory: Path) -> None:
        self._inner = inner
        self._flag = directory / ENTROPY_FAIL_FILE
        self.name = inner.name

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        """The wrapped source's draw, unless the fault is on: then ``EntropyError``."""
        if self._flag.exists():
            raise EntropyError(f"injected fault: {self._flag} exists")
        return self._inner.draw(chain_index, pulse_index)

    def __getattr__(self, attribute: str) -> Any:
        # Only reached for attributes not defined here: the wrapped source's.
        return getattr(self._inner, attribute)


def with_entropy_faults(source: EntropySource) -> EntropySource:
    """``source`` wrapped in ``FailingEntropy`` when ``SOAK_FAULT_DIR`` is set, else itself."""
    directory = fault_dir()
    if directory is None:
        return source
    log.warning("fault injection: entropy fails while %s exists", directory / ENTROPY_FAIL_FILE)
    return FailingEntropy(source, directory)


class ClockOffset:
    """Milliseconds to add to the wall clock, from ``{directory}/clock-offset-ms``.

    The file holds one integer; absent means 0. It is re-read at most every
    ``refresh_s`` seconds of monotonic time. A file that is not an integer (a
    writer caught half-way) keeps the last value, so a torn write can never
    look like a clock jump.
    """

    def __init__(
        self,
        directory: Path,
        *,
        refresh_s: float = OFFSET_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = directory / CLOCK_OFFSET_FILE
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._value = 0
        self._read_at = float("-inf")

    def ms(self) -> int:
        """The current offset in milliseconds."""
        now = self._monotonic()
        if now - self._read_at >= self._refresh_s:
            self._read_at = now
            self._value = self._read(self._value)
        return self._value

    def _read(self, last: int) -> int:
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return 0
        except OSError:
            return last
        try:
            value = int(text.strip())
        except ValueError:
            return last
        if value != last:
            log.warning("fault injection: wall clock offset now %+d ms", value)
        return value


def clock_offset() -> ClockOffset | None:
    """A ``ClockOffset`` when ``SOAK_FAULT_DIR`` is set, else None."""
    directory = fault_dir()
    return None if directory is None else ClockOffset(directory)
