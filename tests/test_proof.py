"""Proof-key verification (wopihost.proof): Microsoft's published vectors, and requests we sign
ourselves with freshly generated keys published through a discovery document."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from wopihost.discovery import parse_discovery
from wopihost.errors import header_safe
from wopihost.proof import (
    PROOF_CURRENT,
    PROOF_OLD_CURRENT,
    PROOF_OLD_KEY,
    ProofKeyError,
    ProofKeys,
    Verdict,
    datetime_from_ticks,
    proof_bytes,
    raw_query_value,
    ticks_from_datetime,
    upper_invariant,
    verify,
)

from .helpers import FIXTURES_DIR
from .proof_helpers import b64, discovery_xml, int_b64, public_key_blob, sign

VECTORS = FIXTURES_DIR / "proof-keys" / "vectors.json"

NOW = datetime(2026, 3, 4, 5, 6, 7, 123456)
TICKS_PER_SECOND = 10_000_000
TWENTY_MINUTES = 20 * 60 * TICKS_PER_SECOND
INVALID = base64.b64encode(b"INVALID").decode()  # what the validator puts in a header it breaks on purpose

TOKEN = "tok3nABC123"
URL = f"https://wopi.example.com:8443/wopi/files/F1le-Id?access_token={TOKEN}&access_token_ttl=1767225600000"


def load_vectors() -> dict:
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="module")
def private_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("current", "old", "stranger")
    }


@pytest.fixture(scope="module")
def keys(private_keys) -> ProofKeys:
    """The current and old public keys, as a host reads them from the client's discovery."""
    discovery = parse_discovery(discovery_xml(private_keys["current"].public_key(), private_keys["old"].public_key()))
    assert discovery.proof_keys is not None
    return discovery.proof_keys


def now_ticks() -> int:
    return ticks_from_datetime(NOW)


def check(
    keys: ProofKeys,
    *,
    token: str = TOKEN,
    url: str = URL,
    timestamp=None,
    proof=None,
    proof_old=None,
    now=NOW,
    check_freshness: bool = True,
) -> Verdict:
    verdict = verify(
        keys,
        access_token_raw=token,
        url=url,
        timestamp_header=str(now_ticks()) if timestamp is None else timestamp,
        proof=proof,
        proof_old=proof_old,
        now=now,
        check_freshness=check_freshness,
    )
    assert isinstance(verdict, Verdict)
    assert verdict.reason and verdict.reason == header_safe(verdict.reason)
    return verdict


def signed(
    private_keys,
    proof_key: str | None = "current",
    old_key: str | None = "old",
    *,
    token: str = TOKEN,
    url: str = URL,
    ticks: int | None = None,
) -> dict:
    """Headers of a request signed like a WOPI client: X-WOPI-Proof with `proof_key`,
    X-WOPI-ProofOld with `old_key` (None: that header carries INVALID)."""
    ticks = now_ticks() if ticks is None else ticks
    return {
        "timestamp": str(ticks),
        "proof": sign(private_keys[proof_key], token, url, ticks) if proof_key else INVALID,
        "proof_old": sign(private_keys[old_key], token, url, ticks) if old_key else INVALID,
    }


# ---------------------------------------------------------------------------- Microsoft's vectors

EXPECTED_COMBINATION = {
    "test_proof_current_key": PROOF_CURRENT,
    "test_old_proof_current_key": PROOF_OLD_CURRENT,
    "test_proof_old_key": PROOF_OLD_KEY,
}


def vector_keys(source: str) -> ProofKeys:
    disc = load_vectors()["discovery"]
    if source == "modulus":
        return ProofKeys.from_modulus_exponent(
            disc["modulus"], disc["exponent"], disc["oldmodulus"], disc["oldexponent"]
        )
    return ProofKeys.from_blobs(disc["value"], disc["oldvalue"])


@pytest.mark.parametrize("source", ["modulus", "value"])
@pytest.mark.parametrize("case", load_vectors()["cases"], ids=lambda case: case["name"])
def test_microsoft_vectors(case, source):
    verdict = verify(
        vector_keys(source),
        access_token_raw=case["access_token"],
        url=case["url"],
        timestamp_header=str(case["timestamp"]),
        proof=case["proof"],
        proof_old=case["proof_old"],
        now=None,
        check_freshness=False,
    )
    assert verdict.ok is case["valid"], verdict.reason
    if case["valid"]:
        assert verdict.combination == EXPECTED_COMBINATION[case["name"].rstrip("0123456789")]
        assert verdict.token_form == "raw"  # Microsoft's samples sign the token as it is in the URL
        assert verdict.refresh_discovery is (verdict.combination != PROOF_CURRENT)
    else:
        assert verdict.signature_mismatch and verdict.refresh_discovery


def test_microsoft_vector_counts():
    cases = load_vectors()["cases"]
    assert sum(case["valid"] for case in cases) == 6 and len(cases) == 8


def test_microsoft_vectors_are_stale_with_the_freshness_check_on():
    case = load_vectors()["cases"][0]
    verdict = verify(
        vector_keys("modulus"),
        access_token_raw=case["access_token"],
        url=case["url"],
        timestamp_header=str(case["timestamp"]),
        proof=case["proof"],
        proof_old=case["proof_old"],
        now=NOW,
    )
    assert not verdict.ok and "20 minutes old" in verdict.reason
    assert not verdict.refresh_discovery


def test_microsoft_blob_and_modulus_give_the_same_keys():
    assert vector_keys("modulus").same_as(vector_keys("value"))
    keys = vector_keys("modulus")
    assert keys.current.key_size == 2048 and keys.current.public_numbers().e == 65537
    assert not ProofKeys(keys.current, None).same_as(keys)
    assert not ProofKeys(keys.old, keys.current).same_as(keys)


# ------------------------------------------------------------------------------------------ ticks


def test_ticks_of_known_moments():
    assert ticks_from_datetime(datetime(1, 1, 1)) == 0
    assert ticks_from_datetime(datetime(1970, 1, 1)) == 621_355_968_000_000_000
    assert ticks_from_datetime(datetime(1970, 1, 1, 0, 0, 1, 500)) == 621_355_968_000_000_000 + 10_005_000
    aware = datetime(2020, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert ticks_from_datetime(aware) == ticks_from_datetime(datetime(2020, 1, 1, 0, 0))


def test_ticks_agree_with_unix_time():
    ticks = load_vectors()["cases"][0]["timestamp"]
    unix = datetime.fromtimestamp((ticks - 621_355_968_000_000_000) // TICKS_PER_SECOND, UTC)
    moment = datetime_from_ticks(ticks)
    assert moment.replace(microsecond=0) == unix.replace(tzinfo=None)
    assert moment.year == 2015


def test_ticks_round_trip_to_the_microsecond():
    assert datetime_from_ticks(ticks_from_datetime(NOW)) == NOW
    assert datetime_from_ticks(ticks_from_datetime(NOW) + 9) == NOW  # sub-microsecond ticks truncate
    for bad in (-1, 3_155_378_976_000_000_000):
        with pytest.raises(ValueError):
            datetime_from_ticks(bad)


# ----------------------------------------------------------------------------------- signed bytes


def test_proof_bytes_layout():
    data = proof_bytes("ab", "https://h/wopi/files/x?access_token=ab", 1)
    url = b"HTTPS://H/WOPI/FILES/X?ACCESS_TOKEN=AB"
    assert data == (
        b"\x00\x00\x00\x02"
        + b"ab"
        + struct.pack(">i", len(url))
        + url
        + b"\x00\x00\x00\x08"
        + b"\x00\x00\x00\x00\x00\x00\x00\x01"
    )


def test_proof_bytes_token_is_utf8_and_not_upper_cased():
    data = proof_bytes("é", "u", 2**40)
    assert data[:6] == b"\x00\x00\x00\x02\xc3\xa9"
    assert data[-8:] == (2**40).to_bytes(8, "big")


def test_upper_invariant_is_one_to_one_like_dotnet():
    assert upper_invariant("https://h/a%2fb?x=y") == "HTTPS://H/A%2FB?X=Y"
    assert upper_invariant("straße") == "STRAßE"  # Python's upper() would give "STRASSE"
    assert upper_invariant("é") == "É"


# ---------------------------------------------------------------------------- our own signatures


def test_valid_with_current_key(keys, private_keys):
    verdict = check(keys, **signed(private_keys, "current", "old"))
    assert verdict.ok and bool(verdict)
    assert verdict.combination == PROOF_CURRENT
    assert not verdict.used_old_key and not verdict.used_proof_old and not verdict.refresh_discovery


def test_valid_via_old_key(keys, private_keys):
    """Host refreshed discovery; the client machine still signs X-WOPI-Proof with its old key."""
    verdict = check(keys, **signed(private_keys, "old", None))
    assert verdict.ok and verdict.used_old_key and verdict.refresh_discovery


def test_valid_via_proof_old_signed_with_current_key(keys, private_keys):
    """The client rotated (its old key is our current one); we have not refreshed discovery yet."""
    verdict = check(keys, **signed(private_keys, None, "current"))
    assert verdict.ok and verdict.used_proof_old and verdict.refresh_discovery


@pytest.mark.parametrize("proof_key", [None, "stranger"])
def test_proof_old_signed_with_old_key_alone_is_rejected(keys, private_keys, proof_key):
    verdict = check(keys, **signed(private_keys, proof_key, "old"))
    assert not verdict.ok and verdict.signature_mismatch


def test_old_key_signature_rejected_when_discovery_has_no_old_key(keys, private_keys):
    verdict = check(ProofKeys(keys.current, None), **signed(private_keys, "old", None))
    assert not verdict.ok


def test_signature_by_another_key_is_rejected(keys, private_keys):
    verdict = check(keys, **signed(private_keys, "stranger", "stranger"))
    assert not verdict.ok and verdict.reason == "proof signature does not match"
    assert verdict.refresh_discovery


def test_corrupted_signature_is_rejected(keys, private_keys):
    headers = signed(private_keys, "current", None)
    raw = bytearray(base64.b64decode(headers["proof"]))
    raw[100] ^= 0x01
    headers["proof"] = b64(bytes(raw))
    verdict = check(keys, **headers)
    assert not verdict.ok and verdict.signature_mismatch
    truncated = dict(headers, proof=b64(bytes(raw[:-1])))
    assert not check(keys, **truncated).ok


@pytest.mark.parametrize(
    "other_url",
    [
        URL.replace("https://", "http://"),  # TLS offload: client signed https
        URL.replace("wopi.example.com", "wopi.example.org"),  # other host
        URL.replace(":8443", ""),  # other port
        URL.replace(":8443", ":443"),
        URL.replace("/wopi/files/", "/app/wopi/files/"),  # path prefix added by a proxy
        URL.replace("F1le-Id", "F1le-Id/contents"),  # other endpoint
        URL.replace("&access_token_ttl=1767225600000", ""),  # query shortened
        URL + "&extra=1",  # query extended
        URL.replace("F1le-Id", "F1le%2DId"),  # percent-encoding changed
    ],
    ids=["http", "host", "no-port", "port-443", "prefix", "path", "query-short", "query-long", "encoding"],
)
def test_wrong_url_is_rejected(keys, private_keys, other_url):
    headers = signed(private_keys, "current", "old")  # signed for URL
    verdict = check(keys, url=other_url, **headers)
    assert not verdict.ok and verdict.signature_mismatch


def test_url_is_compared_case_insensitively(keys, private_keys):
    headers = signed(private_keys, "current", "old")
    for variant in (URL.upper(), URL.lower(), URL.replace("wopi.example.com", "WOPI.Example.COM")):
        assert check(keys, url=variant, **headers).ok


def test_token_mismatch_is_rejected(keys, private_keys):
    headers = signed(private_keys, "current", "old")
    assert not check(keys, token="tok3nABC124", **headers).ok
    assert not check(keys, token=TOKEN.lower(), **headers).ok  # the token is not upper-cased


# ------------------------------------------------------------------------------------- freshness


@pytest.mark.parametrize(
    "age_ticks, ok",
    [
        (0, True),
        (TWENTY_MINUTES - TICKS_PER_SECOND, True),  # just under 20 minutes
        (TWENTY_MINUTES, True),  # exactly 20 minutes: not *more* than 20
        (TWENTY_MINUTES + 1, False),
        (TWENTY_MINUTES + 60 * TICKS_PER_SECOND, False),
        (-5 * 60 * TICKS_PER_SECOND, True),  # a client clock a little ahead
        (-TWENTY_MINUTES - 1, False),  # far in the future: would lengthen replay
    ],
)
def test_timestamp_window(keys, private_keys, age_ticks, ok):
    headers = signed(private_keys, "current", "old", ticks=now_ticks() - age_ticks)
    verdict = check(keys, **headers)
    assert verdict.ok is ok, verdict.reason
    if not ok:
        assert "X-WOPI-TimeStamp" in verdict.reason and not verdict.refresh_discovery
        assert check(keys, check_freshness=False, **headers).ok  # the signature itself was fine


def test_stale_and_badly_signed_is_rejected_as_stale(keys, private_keys):
    headers = signed(private_keys, "stranger", None, ticks=now_ticks() - 2 * TWENTY_MINUTES)
    verdict = check(keys, **headers)
    assert not verdict.ok and "old" in verdict.reason


def test_aware_now_is_accepted(keys, private_keys):
    headers = signed(private_keys, "current", "old")
    aware = NOW.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-5)))
    assert check(keys, now=aware, **headers).ok
    assert not check(keys, now=aware + timedelta(minutes=21), **headers).ok


# ----------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "proof, reason", [(None, "missing X-WOPI-Proof"), ("", "missing X-WOPI-Proof"), ("   ", "missing X-WOPI-Proof")]
)
def test_missing_proof_is_rejected(keys, private_keys, proof, reason):
    headers = signed(private_keys, "current", "current")  # even with a good ProofOld
    headers["proof"] = proof
    verdict = check(keys, **headers)
    assert not verdict.ok and verdict.reason == reason


@pytest.mark.parametrize("timestamp", [None, "", "  "])
def test_missing_timestamp_is_rejected(keys, private_keys, timestamp):
    headers = signed(private_keys, "current", "old")
    headers["timestamp"] = timestamp
    verdict = verify(
        keys,
        access_token_raw=TOKEN,
        url=URL,
        timestamp_header=timestamp,
        proof=headers["proof"],
        proof_old=headers["proof_old"],
        now=NOW,
    )
    assert not verdict.ok and verdict.reason == "missing X-WOPI-TimeStamp"


@pytest.mark.parametrize(
    "timestamp",
    [
        "abc",
        "12.5",
        "-5",
        "+639000000000000000",
        "1_000",
        "0x10",
        "６３９",  # full-width digits
        "1e18",
        str(2**63),
        str(3_155_378_976_000_000_000),
        "99999999999999999999999",
    ],
)
def test_malformed_timestamp_is_rejected(keys, private_keys, timestamp):
    headers = signed(private_keys, "current", "old")
    headers["timestamp"] = timestamp
    for freshness in (True, False):
        verdict = check(keys, check_freshness=freshness, **headers)
        assert not verdict.ok and "X-WOPI-TimeStamp" in verdict.reason


def test_timestamp_with_surrounding_spaces_is_accepted(keys, private_keys):
    headers = signed(private_keys, "current", "old")
    headers["timestamp"] = f" {headers['timestamp']} "
    assert check(keys, **headers).ok


@pytest.mark.parametrize("garbage", ["!!!not base64!!!", "abc", "ä", "QUJD\x00", "====", INVALID])
def test_garbage_proof_is_rejected_without_exception(keys, private_keys, garbage):
    verdict = check(keys, timestamp=str(now_ticks()), proof=garbage, proof_old=garbage)
    assert not verdict.ok
    if garbage != INVALID:  # INVALID is valid base64, just not a signature
        assert verdict.reason == "X-WOPI-Proof is not valid base64" and not verdict.refresh_discovery
    assert not check(keys, timestamp=str(now_ticks()), proof=garbage, proof_old=None).ok


def test_garbage_proof_old_does_not_spoil_a_good_proof(keys, private_keys):
    headers = signed(private_keys, "current", None)
    for proof_old in (None, "", "***", INVALID):
        assert check(keys, **dict(headers, proof_old=proof_old)).ok


def test_base64_with_line_breaks_is_accepted(keys, private_keys):
    headers = signed(private_keys, "current", "old")
    proof = headers["proof"]
    headers["proof"] = proof[:76] + "\r\n" + proof[76:]
    assert check(keys, **headers).ok


@pytest.mark.parametrize("token, url", [(None, URL), ("", URL), (TOKEN, ""), (TOKEN, None)])
def test_missing_token_or_url_is_rejected(keys, private_keys, token, url):
    headers = signed(private_keys, "current", "old")
    verdict = verify(
        keys,
        access_token_raw=token,
        url=url,
        timestamp_header=headers["timestamp"],
        proof=headers["proof"],
        proof_old=headers["proof_old"],
        now=NOW,
    )
    assert not verdict.ok and verdict.reason


def test_no_keys_is_a_rejection(private_keys):
    headers = signed(private_keys, "current", "old")
    verdict = verify(
        None,
        access_token_raw=TOKEN,
        url=URL,
        timestamp_header=headers["timestamp"],
        proof=headers["proof"],
        proof_old=headers["proof_old"],
        now=NOW,
    )
    assert not verdict.ok and "keys" in verdict.reason


def test_unencodable_url_is_rejected_without_exception(keys, private_keys):
    headers = signed(private_keys, "current", "old")
    verdict = check(keys, url=URL + "\ud800", **headers)
    assert not verdict.ok and verdict.reason == header_safe(verdict.reason)


def test_non_ascii_url_round_trips(keys, private_keys):
    url = "https://wopi.example.com/wopi/files/straße?access_token=" + TOKEN
    assert check(keys, url=url, **signed(private_keys, "current", "old", url=url)).ok


# ------------------------------------------------------------------------- raw vs decoded token

DECODED_TOKEN = "a/b+c=d-e_f.g~h"
RAW_TOKEN = quote(DECODED_TOKEN, safe="")  # how the .NET validator puts it in the URL
TOKEN_URL = f"https://wopi.example.com/wopi/files/abc?access_token={RAW_TOKEN}&access_token_ttl=0"


def test_token_signed_decoded_verifies_against_the_raw_value(keys, private_keys):
    assert RAW_TOKEN != DECODED_TOKEN
    headers = signed(private_keys, "current", "old", token=DECODED_TOKEN, url=TOKEN_URL)
    verdict = check(keys, token=RAW_TOKEN, url=TOKEN_URL, **headers)
    assert verdict.ok and verdict.token_form == "decoded"


def test_token_signed_raw_verifies(keys, private_keys):
    headers = signed(private_keys, "current", "old", token=RAW_TOKEN, url=TOKEN_URL)
    verdict = check(keys, token=RAW_TOKEN, url=TOKEN_URL, **headers)
    assert verdict.ok and verdict.token_form == "raw"


def test_plus_in_raw_token_may_mean_space(keys, private_keys):
    url = "https://wopi.example.com/wopi/files/abc?access_token=a+b"
    headers = signed(private_keys, "current", "old", token="a b", url=url)
    assert check(keys, token="a+b", url=url, **headers).ok


def test_plus_in_raw_token_may_mean_plus(keys, private_keys):
    url = "https://wopi.example.com/wopi/files/abc?access_token=a+b%2Fc"
    headers = signed(private_keys, "current", "old", token="a+b/c", url=url)
    assert check(keys, token="a+b%2Fc", url=url, **headers).ok


def test_raw_query_value_keeps_percent_encoding():
    assert raw_query_value(TOKEN_URL) == RAW_TOKEN
    assert raw_query_value(TOKEN_URL, "access_token_ttl") == "0"
    assert raw_query_value("access_token=a%2Fb&x=1") == "a%2Fb"
    assert raw_query_value("https://h/wopi/files/x?my_access_token=1&access_token=2#access_token=3") == "2"
    assert raw_query_value("https://h/wopi/files/x?access_token") is None
    assert raw_query_value("https://h/wopi/files/access_token=1") is None
    assert raw_query_value("https://h/x?access_token=&y=1") == ""


def test_token_decoded_twice_is_not_accepted(keys, private_keys):
    double = quote(RAW_TOKEN, safe="")
    url = TOKEN_URL.replace(RAW_TOKEN, double)
    headers = signed(private_keys, "current", "old", token=DECODED_TOKEN, url=url)
    assert not check(keys, token=double, url=url, **headers).ok


# ----------------------------------------------------------------------------------- key parsing


def test_blob_and_modulus_constructors_agree(private_keys):
    public = private_keys["current"].public_key()
    old = private_keys["old"].public_key()
    numbers = public.public_numbers()
    from_numbers = ProofKeys.from_modulus_exponent(
        int_b64(numbers.n), int_b64(numbers.e), int_b64(old.public_numbers().n), "AQAB"
    )
    from_blob = ProofKeys.from_blobs(b64(public_key_blob(public)), b64(public_key_blob(old)))
    assert from_numbers.same_as(from_blob)
    assert from_blob.current.public_numbers() == numbers
    assert ProofKeys.from_blobs(b64(public_key_blob(public)), "").old is None
    assert ProofKeys.from_modulus_exponent(int_b64(numbers.n), "AQAB", None, None).old is None


def _mutate(blob: bytes, offset: int, replacement: bytes) -> bytes:
    return blob[:offset] + replacement + blob[offset + len(replacement) :]


BLOB_MUTATIONS = {
    "type": lambda blob: _mutate(blob, 0, b"\x07"),  # PRIVATEKEYBLOB
    "version": lambda blob: _mutate(blob, 1, b"\x03"),
    "algorithm": lambda blob: _mutate(blob, 4, (0x6610).to_bytes(4, "little")),  # CALG_AES_256
    "magic": lambda blob: _mutate(blob, 8, b"RSA2"),
    "bitlen": lambda blob: _mutate(blob, 12, (4096).to_bytes(4, "little")),
    "bitlen-odd": lambda blob: _mutate(blob, 12, (2047).to_bytes(4, "little")),
    "small-key": lambda blob: _mutate(blob, 12, (512).to_bytes(4, "little"))[: 20 + 64],
    "even-exponent": lambda blob: _mutate(blob, 16, (65536).to_bytes(4, "little")),
    "truncated": lambda blob: blob[:-1],
    "trailing": lambda blob: blob + b"\x00",
    "header-only": lambda blob: blob[:20],
    "tiny": lambda blob: blob[:7],
}


@pytest.mark.parametrize("mutation", sorted(BLOB_MUTATIONS))
def test_malformed_blob_raises_proof_key_error(private_keys, mutation):
    blob = public_key_blob(private_keys["current"].public_key())
    ProofKeys.from_blobs(b64(blob))  # the unmutated blob is fine
    with pytest.raises(ProofKeyError) as info:
        ProofKeys.from_blobs(b64(BLOB_MUTATIONS[mutation](blob)))
    assert isinstance(info.value, ValueError) and str(info.value)


@pytest.mark.parametrize("value", ["", "not base64!", "QUJD"])
def test_blob_that_is_not_base64_or_too_short(value):
    with pytest.raises(ProofKeyError):
        ProofKeys.from_blobs(value)


@pytest.mark.parametrize(
    "modulus, exponent",
    [
        ("", "AQAB"),
        ("@@@", "AQAB"),
        ("AQAB", "AQAB"),  # a 17-bit modulus
        (None, "AQAB"),
        (int_b64((1 << 2047) + 2), "AQAB"),  # even modulus
    ],
)
def test_malformed_modulus_exponent(modulus, exponent):
    with pytest.raises(ProofKeyError):
        ProofKeys.from_modulus_exponent(modulus or "", exponent)


def test_old_modulus_without_exponent(private_keys):
    numbers = private_keys["current"].public_key().public_numbers()
    with pytest.raises(ProofKeyError):
        ProofKeys.from_modulus_exponent(int_b64(numbers.n), "AQAB", int_b64(numbers.n), None)


def test_a_host_without_proof_keys_never_loads_cryptography(tmp_path):
    """Its native library costs every server process ~7 MiB (docs/benchmarks.md): it is loaded when a proof key
    is read, not with the modules gunicorn's master imports before forking (wopihost/worker.py)."""
    check = (
        "import sys, wopihost.worker\n"
        "from wopihost.app import create_app\n"
        "from wopihost.proof import public_key_from_modulus_exponent\n"
        "create_app()\n"
        "before = 'cryptography' in sys.modules\n"
        "public_key_from_modulus_exponent(sys.argv[1], 'AQAB')\n"
        "print(before, 'cryptography' in sys.modules)\n"
    )
    modulus = base64.b64encode((2**2047 + 1).to_bytes(256, "big")).decode()
    env = {**os.environ, "WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_METRICS": "off"}
    env.pop("WOPIHOST_DISCOVERY_URL", None)
    result = subprocess.run([sys.executable, "-c", check, modulus], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False True", result.stderr
