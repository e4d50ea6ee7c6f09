"""The drand chain a verifier pins (``--drand-info``): read from a drand ``/info`` file.

The checks themselves are ``external`` (pure), called by the core (``core``).
"""

from __future__ import annotations

import json

from beacon_verifier.errors import FetchError, VerifierError
from beacon_verifier.external import QUICKNET, DrandChain

#: A drand /info document is a few hundred bytes.
MAX_INFO_BYTES = 64 * 1024


def load_pinned(path: str | None) -> DrandChain:
    """The drand chain to check against: a drand ``/info`` JSON file, or quicknet."""
    if path is None:
        return QUICKNET
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(MAX_INFO_BYTES))
        return DrandChain.from_info(doc)
    except OSError as exc:
        raise FetchError(f"--drand-info {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise VerifierError(f"--drand-info {path}: {exc}") from None
