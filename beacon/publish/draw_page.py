"""The "use it for a fair draw" page, with a worked example computed when it is rendered.

The example's manifest, hashes, seed and winners come from ``beacon_verifier.draw``,
the code ``beacon-verify draw`` runs, so the page cannot drift from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from beacon_verifier.draw import (
    Manifest,
    draw,
    draw_seed,
    entrant_list_bytes,
    manifest_hash,
    parse_entrant_bytes,
)
from beacon_verifier.errors import DrawError

from beacon.publish.site import DRAW_KEY, SiteInfo, render_template

__all__ = ["EXAMPLE_DRAW", "DrawExample", "render_draw_page"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DrawExample:
    """The inputs of the fair-draw page's worked example.

    ``entrants`` is the text of an entrant file (one per line); ``output_value``
    stands for the outputValue of the pulse at ``pulse_time_ms``. The page
    computes everything else (hashes, manifest, seed, winners) with
    ``beacon_verifier.draw`` when it is rendered. Raises ``ValueError`` for
    fewer than one winner or an outputValue that is not 64 bytes.
    """

    label: str
    entrants: str
    winners: int
    pulse_time_ms: int
    output_value: bytes
    output_value_origin: str

    def __post_init__(self) -> None:
        if self.winners < 1:
            raise ValueError(f"a draw needs at least one winner, got {self.winners}")
        if len(self.output_value) != hashlib.sha512().digest_size:
            raise ValueError("an outputValue is 64 bytes")


_EXAMPLE_VALUE_TEXT = "an example outputValue"

#: The worked example on the fair-draw page. Its outputValue is made up (and
#: says how), so that the page can be written before any pulse exists.
EXAMPLE_DRAW = DrawExample(
    label="Example: three winners among ten entrants",
    entrants="\n".join(
        (
            "Ada Lovelace",
            "Alan Turing",
            "Grace Hopper",
            "Katherine Johnson",
            "Claude Shannon",
            "Emmy Noether",
            "John von Neumann",
            "Dorothy Vaughan",
            "Hedy Lamarr",
            "Edsger Dijkstra",
        )
    ),
    winners=3,
    pulse_time_ms=1_798_804_800_000,  # 2027-01-01T12:00:00.000Z
    output_value=hashlib.sha512(_EXAMPLE_VALUE_TEXT.encode()).digest(),
    output_value_origin=f'made up for this example: SHA-512 of the text "{_EXAMPLE_VALUE_TEXT}"',
)
#: The beacon the example's manifest names when the site's own URL is not one a
#: manifest accepts (a draw needs a site root it can fetch).
_EXAMPLE_BEACON = "https://beacon.example.org"


def _example_manifest(site: SiteInfo, example: DrawExample, entrant_bytes: bytes) -> Manifest:
    fields: dict[str, Any] = {
        "chain": 1,
        "pulse_time_ms": example.pulse_time_ms,
        "entrants": hashlib.sha512(entrant_bytes).digest(),
        "entrant_count": len(parse_entrant_bytes(entrant_bytes)),
        "winners": example.winners,
        "label": example.label,
    }
    try:
        return Manifest(beacon=site.site_url, **fields)
    except DrawError:
        return Manifest(beacon=_EXAMPLE_BEACON, **fields)


def render_draw_page(site: SiteInfo, example: DrawExample = EXAMPLE_DRAW) -> tuple[str, bytes]:
    """The "use it for a fair draw" page (mutable), with a worked example.

    The example's manifest, hashes, seed and winners are computed here with
    ``beacon_verifier.draw``, the code ``beacon-verify draw`` runs, so the page
    cannot drift from it. Raises ``DrawError`` when the example's entrants or
    winners do not make a draw.
    """
    entrant_bytes = entrant_list_bytes(example.entrants)
    manifest = _example_manifest(site, example, entrant_bytes)
    manifest_bytes = manifest.to_bytes()
    values = [example.output_value]
    return render_template(
        "draw.html",
        DRAW_KEY,
        site=site,
        example=example,
        entrants=parse_entrant_bytes(entrant_bytes),
        entrants_sha512=manifest.entrants.hex(),
        manifest=manifest,
        manifest_text=manifest_bytes.decode("utf-8"),
        manifest_sha512=manifest_hash(manifest_bytes).hex(),
        output_value=example.output_value.hex().upper(),
        seed=draw_seed(manifest_bytes, values).hex(),
        winners=draw(manifest_bytes, entrant_bytes, values),
    )
