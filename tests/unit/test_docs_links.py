"""Every relative link of the documentation points at a file that exists, and every
anchor at a heading of that file (GitHub's slugs).

Run in CI with the rest of the suite: a link to a missing file or heading fails it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def documents() -> list[Path]:
    docs = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "verifier" / "README.md"]
    docs += [ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [d for d in docs if d.is_file()]


def links(text: str) -> list[str]:
    """The targets of the Markdown links in ``text``, outside code."""
    prose = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = _CODE.sub(lambda m: m.group(0)[1:-1], heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken(doc: Path) -> list[str]:
    problems = []
    for target in links(doc.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or target.startswith("//"):
            continue  # an absolute URL: not checked offline
        path = (doc.parent / unquote(parts.path)).resolve() if parts.path else doc
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if not path.exists():
            problems.append(f"{doc.relative_to(ROOT)}: {rel} (no such file)")
            continue
        if parts.fragment and path.suffix == ".md" and parts.fragment not in anchors(path):
            problems.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    return problems


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc: Path) -> None:
    assert broken(doc) == []


def test_the_link_check_finds_what_it_must(tmp_path: Path) -> None:
    text = "See [a](a.md#Title) and [b](missing.md), not `[c](code.md)` nor\n```\n[d](d.md)\n```\n"
    assert links(text) == ["a.md#Title", "missing.md"]
    assert slug("Active/standby failover") == "activestandby-failover"
    assert (
        slug("Draws v1: the algorithm (`beacon-draw/v1`)") == "draws-v1-the-algorithm-beacon-drawv1"
    )
    assert slug("`status/health.json`") == "statushealthjson"
    assert slug("base_url") == "base_url"


def test_the_readme_stays_short_and_keeps_its_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    run = (
        "python3 -m venv .venv && .venv/bin/pip install -e ./verifier -e . && .venv/bin/beacon run"
    )
    assert run in readme
    assert "\n./scripts/test\n" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
