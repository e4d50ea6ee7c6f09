"""Failpoints for crash tests: die by SIGKILL at a named point of a tick.

``BEACON_FAILPOINT=name:n`` makes the n-th pass through ``failpoint(name)``
kill the process with SIGKILL (no cleanup, no flush), exactly as a power cut
or the OOM killer would. Unset, a failpoint costs one dict lookup. The tests in
tests/integration/test_crash_recovery.py use it to prove that no crash point
forks the chain, repeats an index or loses a pulse.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("BEACON_FAILPOINT", "")
_NAME, _, _COUNT = _SPEC.partition(":")
_remaining = {_NAME: int(_COUNT or "1")} if _NAME else {}


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is armed and its count is reached."""
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
