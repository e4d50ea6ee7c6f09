"""The verifier's one exception tree.

``VerifierError`` is the root. Content errors (the data is wrong) are kept apart
from transport errors (the data could not be had), as python-tuf does:

- ``PulseFormatError``: bytes that are not a well-formed pulse; names the field.
- ``CheckError``: a well-formed pulse failed a check; carries the pulse index,
  the check's name, and the expected and actual values.
  - ``SignatureError``: certificate, signature or outputValue checks.
  - ``ChainError``: relations between pulses (links, precommitment, status bits).
- ``FetchError``: a pulse, certificate or index could not be fetched or read.
- ``DrawError``: a fair draw cannot be made or checked (bad manifest, entrant
  list, target pulse); the message names what was wrong.
"""

from __future__ import annotations


class VerifierError(Exception):
    """Root of every error the verifier raises on purpose."""


class PulseFormatError(VerifierError):
    """The input is not a well-formed pulse; ``field`` names where it went wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class CheckError(VerifierError):
    """A well-formed pulse failed a named check."""

    def __init__(
        self,
        check: str,
        *,
        pulse_index: int | None = None,
        expected: str = "",
        actual: str = "",
        detail: str = "",
    ) -> None:
        self.check = check
        self.pulse_index = pulse_index
        self.expected = expected
        self.actual = actual
        self.detail = detail
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"pulse {self.pulse_index}" if self.pulse_index is not None else "pulse"
        text = f"{where}: {self.check} failed"
        if self.detail:
            text += f": {self.detail}"
        if self.expected or self.actual:
            text += f" (expected {self.expected or '-'}, got {self.actual or '-'})"
        return text


class SignatureError(CheckError):
    """certificateId, signature or outputValue does not hold."""


class ChainError(CheckError):
    """A relation between pulses does not hold (links, precommitment, status bits)."""


class FetchError(VerifierError):
    """A pulse, certificate or index could not be fetched or read."""


class DrawError(VerifierError):
    """A fair draw cannot be made or checked; the message names the field or input at fault."""
