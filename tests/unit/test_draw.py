"""Fair draws: published vectors (checked against a second, naive implementation),
uniformity, the rejection path of ``uniform``, and every way a manifest, an entrant
list or a result can be refused."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from beacon_verifier.draw import (
    DOMAIN,
    BeaconRef,
    DrawResult,
    DrawStream,
    Manifest,
    PulseRef,
    check_entrants,
    compare_results,
    draw,
    draw_seed,
    entrant_list_bytes,
    manifest_hash,
    parse_entrant_bytes,
    parse_manifest,
    parse_result,
    select_winners,
    uniform,
)
from beacon_verifier.errors import DrawError
from beacon_verifier.format import parse_pulse

VECTORS = Path(__file__).parents[1] / "vectors"
DRAW_VECTORS = sorted((VECTORS / "draw").glob("*.json"))
TWO_64 = 2**64

# Upper 0.1% points of the chi-square distribution (scipy.stats.chi2.ppf(0.999, df)).
CHI2_CRITICAL_0_001 = {5: 20.515, 59: 98.324}


def load_vector(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_obj(entrant_bytes: bytes, **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "version": 1,
        "beacon": "https://beacon.example",
        "chain": 1,
        "pulseTime": "2026-11-21T12:00:00.000Z",
        "entrants": hashlib.sha512(entrant_bytes).hexdigest(),
        "entrantCount": entrant_bytes.count(b"\n") + 1,
        "winners": 1,
        "label": "test draw",
    }
    obj.update(changes)
    return obj


# --- a second, deliberately naive implementation --------------------------------


def naive_draw(manifest: bytes, entrants_file: str, output_values: Sequence[bytes]) -> list[str]:
    """The algorithm as docs/draws.md states it, written without the module's helpers.

    The stream is built up front as one big integer and cut into u64s with shifts.
    """
    names = []
    for line in entrants_file.split("\n"):
        name = line.strip(" \t\r\v\f")
        if name:
            names.append(name)
    fields = json.loads(manifest)
    assert fields["entrants"] == hashlib.sha512("\n".join(names).encode()).hexdigest()
    k = fields["winners"]
    seed = hashlib.sha512(
        b"beacon-draw/v1" + hashlib.sha512(manifest).digest() + b"".join(output_values)
    ).digest()
    stream = b"".join(hashlib.sha512(seed + i.to_bytes(8, "big")).digest() for i in range(16))
    big = int.from_bytes(stream, "big")
    total = len(stream) // 8

    def value(t: int) -> int:
        return (big >> (64 * (total - 1 - t))) % TWO_64

    t = 0
    a = list(names)
    for i in range(k):
        m = len(a) - i
        limit = TWO_64 - TWO_64 % m
        while value(t) >= limit:
            t += 1
        j = i + value(t) % m
        t += 1
        a[i], a[j] = a[j], a[i]
    return a[:k]


# --- vectors ----------------------------------------------------------------------


def test_there_are_vectors() -> None:
    assert len(DRAW_VECTORS) >= 2


@pytest.mark.parametrize("path", DRAW_VECTORS, ids=lambda p: p.stem)
def test_vector_reproduces(path: Path) -> None:
    vec = load_vector(path)
    entrant_bytes = entrant_list_bytes(vec["entrantsFile"])
    assert entrant_bytes == "\n".join(vec["entrants"]).encode("utf-8")
    assert hashlib.sha512(entrant_bytes).hexdigest() == vec["entrantListSha512"]
    manifest = vec["manifest"].encode("utf-8")
    assert parse_manifest(manifest).to_bytes() == manifest
    assert manifest_hash(manifest).hex() == vec["manifestSha512"]
    output_values = [bytes.fromhex(v) for v in vec["outputValues"]]
    assert draw_seed(manifest, output_values).hex() == vec["seed"]
    assert draw(manifest, entrant_bytes, output_values) == vec["winners"]


@pytest.mark.parametrize("path", DRAW_VECTORS, ids=lambda p: p.stem)
def test_vector_agrees_with_the_naive_implementation(path: Path) -> None:
    vec = load_vector(path)
    output_values = [bytes.fromhex(v) for v in vec["outputValues"]]
    manifest = vec["manifest"].encode("utf-8")
    assert naive_draw(manifest, vec["entrantsFile"], output_values) == vec["winners"]


def test_nist_vector_uses_the_real_nist_pulse() -> None:
    vec = load_vector(VECTORS / "draw" / "nist-three-of-ten.json")
    pulse = parse_pulse((VECTORS / "nist" / "nist_c1_p54610.json").read_bytes())
    manifest = parse_manifest(vec["manifest"].encode())
    assert pulse.time_ms >= manifest.pulse_time_ms > pulse.time_ms - pulse.period
    assert vec["outputValues"] == [pulse.output_value.hex().upper()]


def test_naive_and_module_agree_on_random_draws() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 9, 40):
        text = "\n".join(f"entrant {i}" for i in range(n))
        entrant_bytes = entrant_list_bytes(text)
        for k in sorted({1, n, max(1, n // 2)}):
            manifest = canonical(manifest_obj(entrant_bytes, winners=k))
            values = [rng.randbytes(64)]
            assert draw(manifest, entrant_bytes, values) == naive_draw(manifest, text, values)


# --- uniformity -----------------------------------------------------------------------


def chi_square(counts: Counter[tuple[str, ...]], outcomes: int, trials: int) -> float:
    expected = trials / outcomes
    assert len(counts) <= outcomes
    observed = list(counts.values()) + [0] * (outcomes - len(counts))
    return sum((o - expected) ** 2 / expected for o in observed)


def simulate(
    n: int, k: int, trials: int, winners: Callable[[bytes, bytes, list[bytes]], list[str]]
) -> Counter[tuple[str, ...]]:
    rng = random.Random(20261121 + 1000 * n + k)
    entrant_bytes = entrant_list_bytes("\n".join(f"e{i}" for i in range(n)))
    manifest = canonical(manifest_obj(entrant_bytes, winners=k))
    return Counter(
        tuple(winners(manifest, entrant_bytes, [rng.randbytes(64)])) for _ in range(trials)
    )


def test_every_ordered_outcome_is_equally_likely() -> None:
    # 5 entrants, 3 winners: 5*4*3 = 60 ordered outcomes, 200 expected each.
    counts = simulate(5, 3, 12_000, draw)
    assert len(counts) == 60
    assert chi_square(counts, 60, 12_000) < CHI2_CRITICAL_0_001[59]
    first = Counter(outcome[0] for outcome in counts.elements())
    assert set(first) == {f"e{i}" for i in range(5)}


def test_full_permutations_are_equally_likely() -> None:
    counts = simulate(3, 3, 6_000, draw)
    assert len(counts) == 6
    assert chi_square(counts, 6, 6_000) < CHI2_CRITICAL_0_001[5]


def _biased_draw(manifest: bytes, entrant_bytes: bytes, output_values: list[bytes]) -> list[str]:
    """The classic wrong shuffle (swap with any position, not only later ones)."""
    a = check_entrants(parse_manifest(manifest), entrant_bytes)
    stream = DrawStream(draw_seed(manifest, output_values))
    for i in range(len(a)):
        j = uniform(stream, len(a))
        a[i], a[j] = a[j], a[i]
    return a


def test_the_uniformity_test_detects_a_biased_shuffle() -> None:
    counts = simulate(3, 3, 6_000, _biased_draw)
    assert chi_square(counts, 6, 6_000) > CHI2_CRITICAL_0_001[5]


# --- selection edge cases -------------------------------------------------------------


def test_k_equal_n_yields_a_permutation() -> None:
    entrants = [f"entrant {i}" for i in range(25)]
    seen = set()
    for s in range(20):
        winners = select_winners(hashlib.sha512(b"%d" % s).digest(), entrants, len(entrants))
        assert sorted(winners) == sorted(entrants)
        seen.add(tuple(winners))
    assert len(seen) == 20


def test_a_single_entrant_wins() -> None:
    entrant_bytes = entrant_list_bytes("  only one  \n")
    manifest = canonical(manifest_obj(entrant_bytes))
    assert draw(manifest, entrant_bytes, [bytes(64)]) == ["only one"]


def test_winners_are_distinct_and_are_entrants() -> None:
    entrants = [f"n{i}" for i in range(50)]
    winners = select_winners(hashlib.sha512(b"x").digest(), entrants, 10)
    assert len(set(winners)) == 10 and set(winners) <= set(entrants)
    # The first winners do not depend on how many are drawn after them.
    assert select_winners(hashlib.sha512(b"x").digest(), entrants, 3) == winners[:3]


@pytest.mark.parametrize("k", [0, 4, -1])
def test_select_refuses_k_out_of_range(k: int) -> None:
    with pytest.raises(DrawError, match="winners"):
        select_winners(bytes(64), ["a", "b", "c"], k)


# --- the stream and uniform -------------------------------------------------------------


def test_stream_is_sha512_counter_mode() -> None:
    seed = hashlib.sha512(b"seed").digest()
    stream = DrawStream(seed)
    values = [stream.next_u64() for _ in range(17)]
    for t, v in enumerate(values):
        block = hashlib.sha512(seed + (t // 8).to_bytes(8, "big")).digest()
        assert v == int.from_bytes(block[8 * (t % 8) : 8 * (t % 8) + 8], "big")


class ListStream:
    """A stream that yields given values, and counts what was read."""

    def __init__(self, values: Sequence[int]) -> None:
        self.values = list(values)
        self.read = 0

    def next_u64(self) -> int:
        self.read += 1
        return self.values[self.read - 1]


def test_uniform_rejects_values_at_or_above_the_limit() -> None:
    m = 3
    limit = TWO_64 - TWO_64 % m  # 2^64 - 1: only the top value is rejected
    stream = ListStream([limit, 7])
    assert uniform(stream, m) == 7 % m
    assert stream.read == 2
    stream = ListStream([limit - 1])
    assert uniform(stream, m) == (limit - 1) % m
    assert stream.read == 1


def test_uniform_rejection_on_the_real_stream() -> None:
    # For m = 2^63 + 1, limit = 2^63 + 1: about half of all values are rejected.
    m = 2**63 + 1
    limit = TWO_64 - TWO_64 % m
    assert limit == m
    for s in range(100):
        seed = hashlib.sha512(b"reject %d" % s).digest()
        probe = DrawStream(seed)
        first, second = probe.next_u64(), probe.next_u64()
        if first >= limit and second < limit:
            break
    else:
        pytest.fail("no seed found whose first value is rejected")
    assert uniform(DrawStream(seed), m) == second % m != first % m


def test_uniform_extremes() -> None:
    stream = ListStream([TWO_64 - 1, 5])
    assert uniform(stream, 1) == 0 and stream.read == 1  # m = 1 still reads one value
    assert uniform(ListStream([TWO_64 - 1]), TWO_64) == TWO_64 - 1  # nothing rejected
    for bad in (0, TWO_64 + 1):
        with pytest.raises(ValueError, match="m must be"):
            uniform(ListStream([0]), bad)


def test_seed_is_domain_separated_and_orders_beacons() -> None:
    manifest, a, b = b"{}", bytes(range(64)), bytes(64)
    expected = hashlib.sha512(DOMAIN + hashlib.sha512(manifest).digest() + a + b).digest()
    assert draw_seed(manifest, [a, b]) == expected
    assert draw_seed(manifest, [b, a]) != expected
    with pytest.raises(DrawError, match="at least one"):
        draw_seed(manifest, [])
    with pytest.raises(DrawError, match="outputValue 2"):
        draw_seed(manifest, [a, b"short"])


# --- entrant lists ------------------------------------------------------------------------


def test_entrant_list_normalisation() -> None:
    assert entrant_list_bytes("a\r\n  b c \n\n\t\nd\n") == b"a\nb c\nd"
    assert entrant_list_bytes("Zoë\n李雷") == "Zoë\n李雷".encode()
    # Only ASCII whitespace is stripped: a no-break space is part of the name.
    assert entrant_list_bytes("\u00a0x") == "\u00a0x".encode()


def test_duplicate_entrants_are_refused_naming_the_lines() -> None:
    with pytest.raises(DrawError, match=r"duplicate entrant 'bob' \(lines 2 and 4\)"):
        entrant_list_bytes("alice\nbob\ncarol\n  bob\n")


def test_empty_entrant_list_is_refused() -> None:
    with pytest.raises(DrawError, match="no entrants"):
        entrant_list_bytes(" \n\r\n\t")


def test_entrant_bytes_must_be_in_normal_form() -> None:
    assert parse_entrant_bytes(b"a\nb") == ["a", "b"]
    for bad in (b"a\nb\n", b"a\n\nb", b" a\nb", b"\xff"):
        with pytest.raises(DrawError, match="entrant list"):
            parse_entrant_bytes(bad)


def test_entrant_list_not_matching_the_manifest_is_refused() -> None:
    entrant_bytes = entrant_list_bytes("alice\nbob\ncarol")
    manifest = canonical(manifest_obj(entrant_bytes, winners=2))
    other = entrant_list_bytes("alice\nbob\nmallory")
    with pytest.raises(DrawError, match="does not match the manifest"):
        draw(manifest, other, [bytes(64)])


def test_entrant_count_must_agree() -> None:
    entrant_bytes = entrant_list_bytes("alice\nbob\ncarol")
    manifest = canonical(manifest_obj(entrant_bytes, entrantCount=4))
    with pytest.raises(DrawError, match=r"manifest\.entrantCount: 4, but the entrant list has 3"):
        draw(manifest, entrant_bytes, [bytes(64)])


def test_one_output_value_per_beacon() -> None:
    entrant_bytes = entrant_list_bytes("a\nb")
    also = [{"beacon": "https://other.example", "chain": 2}]
    manifest = canonical(manifest_obj(entrant_bytes, also=also))
    with pytest.raises(DrawError, match="names 2 beacon"):
        draw(manifest, entrant_bytes, [bytes(64)])
    assert draw(manifest, entrant_bytes, [bytes(64), bytes(64)])[0] in ("a", "b")


# --- manifests --------------------------------------------------------------------------------

ENTRANTS = entrant_list_bytes("alice\nbob\ncarol")


def test_manifest_round_trip_and_keys() -> None:
    m = Manifest(
        beacon="https://beacon.example",
        chain=2,
        pulse_time_ms=1_795_262_400_000,
        entrants=hashlib.sha512(ENTRANTS).digest(),
        entrant_count=3,
        winners=2,
        label="Zoë's draw",
    )
    data = m.to_bytes()
    assert set(json.loads(data)) == {
        "version",
        "beacon",
        "chain",
        "pulseTime",
        "entrants",
        "entrantCount",
        "winners",
        "label",
    }
    assert "Zoë".encode() in data  # UTF-8, not \\u escapes
    assert parse_manifest(data) == m
    with_also = Manifest(
        beacon=m.beacon,
        chain=m.chain,
        pulse_time_ms=m.pulse_time_ms,
        entrants=m.entrants,
        entrant_count=3,
        winners=2,
        label=m.label,
        also=(BeaconRef(beacon="https://beacon.nist.gov", chain=2),),
    )
    assert json.loads(with_also.to_bytes())["also"] == [
        {"beacon": "https://beacon.nist.gov", "chain": 2}
    ]
    assert parse_manifest(with_also.to_bytes()) == with_also


BAD_MANIFEST_CHANGES: list[tuple[dict[str, Any], str]] = [
    ({"extra": 1}, r"manifest\.extra: unknown key"),
    ({"version": 2}, r"manifest\.version: unsupported version 2"),
    ({"version": True}, r"manifest\.version"),
    ({"chain": "1"}, r"manifest\.chain: must be an integer, got str"),
    ({"chain": 0}, r"manifest\.chain: 0 is outside"),
    ({"entrantCount": 3.0}, r"manifest\.entrantCount: must be an integer"),
    ({"winners": 0}, r"manifest\.winners: 0 is outside 1\.\.3"),
    ({"winners": 4}, r"manifest\.winners: 4 is outside 1\.\.3"),
    ({"entrants": "AB" * 64}, r"manifest\.entrants: must be 128 lower-case hex"),
    ({"entrants": "ab"}, r"manifest\.entrants"),
    ({"pulseTime": "2026-11-21T12:00:00Z"}, r"manifest\.pulseTime"),
    ({"pulseTime": "2026-11-21T12:00:00.500Z"}, r"manifest\.pulseTime: .* whole second"),
    ({"pulseTime": 1795262400000}, r"manifest\.pulseTime"),
    ({"beacon": "ftp://beacon.example"}, r"manifest\.beacon: .* not a site root URL"),
    ({"beacon": "beacon.example"}, r"manifest\.beacon"),
    ({"beacon": "https://beacon.example/a b"}, r"manifest\.beacon: .* whitespace"),
    ({"label": 5}, r"manifest\.label: must be a string"),
    ({"label": "x" * 5000}, r"manifest\.label: longer than"),
    ({"also": []}, r"manifest\.also: must be omitted"),
    ({"also": {"beacon": "https://b.example"}}, r"manifest\.also: must be a list"),
    ({"also": [{"beacon": "https://b.example"}]}, r"manifest\.also\[0\]\.chain: missing"),
    ({"also": [{"beacon": "https://b.example", "chain": 1, "x": 0}]}, r"also\[0\]\.x: unknown"),
    ({"also": [{"beacon": "https://beacon.example", "chain": 1}]}, r"manifest\.also: .* twice"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_MANIFEST_CHANGES)
def test_bad_manifest_is_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DrawError, match=message):
        parse_manifest(canonical(manifest_obj(ENTRANTS, **changes)))


def test_missing_key_is_refused() -> None:
    obj = manifest_obj(ENTRANTS)
    del obj["label"]
    with pytest.raises(DrawError, match=r"manifest\.label: missing"):
        parse_manifest(canonical(obj))


def test_duplicate_key_is_refused() -> None:
    data = canonical(manifest_obj(ENTRANTS)).replace(b'"chain":1,', b'"chain":1,"chain":1,')
    with pytest.raises(DrawError, match=r"manifest\.chain: appears twice"):
        parse_manifest(data)


@pytest.mark.parametrize(
    "data",
    [
        json.dumps(manifest_obj(ENTRANTS), sort_keys=True, indent=1).encode(),
        json.dumps(manifest_obj(ENTRANTS), separators=(",", ":")).encode(),  # key order
        canonical(manifest_obj(ENTRANTS)) + b"\n",
        json.dumps(
            manifest_obj(ENTRANTS, label="Zoë"), sort_keys=True, separators=(",", ":")
        ).encode(),  # \u00eb instead of UTF-8
    ],
    ids=["indented", "unsorted", "trailing-newline", "escaped"],
)
def test_non_canonical_manifest_is_refused(data: bytes) -> None:
    assert json.loads(data)  # well-formed JSON, only not canonical
    with pytest.raises(DrawError, match="manifest: not in canonical form"):
        parse_manifest(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "manifest: not valid JSON"),
        (b"[1]", "manifest: must be a JSON object"),
        (b'{"chain":NaN}', "manifest: NaN is not allowed"),
        (b"\xff", "manifest: not UTF-8"),
    ],
)
def test_manifest_that_is_not_a_json_object_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(DrawError, match=message):
        parse_manifest(data)


# --- results ----------------------------------------------------------------------------------


def sample_result(winners: tuple[str, ...] = ("bob", "alice")) -> DrawResult:
    return DrawResult(
        manifest_hash=hashlib.sha512(b"m").digest(),
        pulses=(
            PulseRef(
                beacon="https://beacon.example",
                chain_index=1,
                pulse_index=42,
                time_stamp="2026-11-21T12:00:00.000Z",
                output_value=hashlib.sha512(b"o").digest(),
            ),
        ),
        winners=winners,
    )


def test_result_round_trip() -> None:
    result = sample_result()
    data = result.to_bytes()
    assert parse_result(data) == result
    upper = result.pulses[0].output_value.hex().upper().encode()
    assert upper in data  # outputValue is written in upper case, as in pulses
    assert parse_result(data.replace(upper, upper.lower())) == result  # and read in any case


def test_compare_results_names_every_difference() -> None:
    result = sample_result()
    assert compare_results(result, result) == []
    assert compare_results(result, sample_result(("bob", "carol"))) == [
        "winner 2: computed 'alice', the result file says 'carol'"
    ]
    assert len(compare_results(result, sample_result(("bob",)))) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o.update(extra=1), r"result\.extra: unknown key"),
        (lambda o: o.update(version=2), r"result\.version"),
        (lambda o: o.update(winners="bob"), r"result\.winners: must be a list"),
        (lambda o: o.update(winners=[]), r"result\.winners: must not be empty"),
        (lambda o: o.update(winners=[1]), r"result\.winners\[1\]: must be a string"),
        (lambda o: o.update(manifest="00"), r"result\.manifest"),
        (lambda o: o["pulses"][0].update(outputValue="00"), r"pulses\[0\]\.outputValue"),
        (lambda o: o["pulses"][0].update(pulseIndex=0), r"pulses\[0\]\.pulseIndex"),
        (lambda o: o["pulses"][0].pop("beacon"), r"pulses\[0\]\.beacon: missing"),
    ],
)
def test_bad_result_is_refused_naming_the_field(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    obj = json.loads(sample_result().to_bytes())
    change(obj)
    with pytest.raises(DrawError, match=message):
        parse_result(json.dumps(obj).encode())


def test_the_draws_spec_publishes_the_first_vector() -> None:
    readme = (Path(__file__).parents[2] / "docs" / "draws.md").read_text(encoding="utf-8")
    vec = load_vector(VECTORS / "draw" / "nist-three-of-ten.json")
    for value in (
        vec["manifest"],
        vec["manifestSha512"],
        vec["entrantListSha512"],
        vec["outputValues"][0],
        vec["seed"],
        "\n".join(vec["entrants"]),
        json.dumps(vec["entrantsFile"], ensure_ascii=False).replace('"', "'"),
    ):
        assert value in readme
    listed = ", ".join(f"{i}. {name}" for i, name in enumerate(vec["winners"], 1))
    assert f"Winners: {listed}." in readme
