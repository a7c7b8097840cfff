"""WOPI proof keys: checking that a request really comes from the WOPI client (docs/wopi.md §6.2-§6.4).

Pure functions and values: no Flask, no network, no clock of its own (the caller passes `now`).

A WOPI client signs, with RSASSA-PKCS1-v1_5 / SHA-256, the bytes made by `proof_bytes` from the
access token, the full request URL (upper-cased) and the X-WOPI-TimeStamp value (.NET ticks).
`verify` accepts a request when X-WOPI-Proof verifies with the current key, or X-WOPI-ProofOld with
the current key (the client rotated, we have not refetched discovery yet), or X-WOPI-Proof with the
old key (we refetched, the client machine still signs with its previous key); never ProofOld with the
old key alone. Its `Verdict` never raises for bad input and tells the caller when re-fetching
discovery may help.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

# cryptography is imported where a key is made or a signature checked, not here: a host without proof keys never
# needs it, and its native library costs each server ~7 MiB of memory (docs/benchmarks.md).

# .NET DateTime ticks: 100 ns intervals since 0001-01-01T00:00:00 UTC.
TICKS_PER_SECOND = 10_000_000
TICKS_PER_MICROSECOND = 10
_TICKS_EPOCH = datetime(1, 1, 1)
UNIX_EPOCH_TICKS = 621_355_968_000_000_000
MAX_TICKS = 3_155_378_975_999_999_999  # DateTime.MaxValue.Ticks (9999-12-31T23:59:59.9999999)

# How far X-WOPI-TimeStamp may lie from our clock (docs/wopi.md §6.4: reject when more than 20 minutes old).
PROOF_WINDOW = timedelta(minutes=20)

# Keys smaller than this are refused outright; Office's are 2048 bits.
MIN_KEY_BITS = 1024
MAX_KEY_BITS = 16384

_INT32_MAX = 2**31 - 1
_TIMESTAMP = re.compile(r"[0-9]{1,19}")

# CryptoAPI PUBLICKEYBLOB constants (wincrypt.h).
_PUBLICKEYBLOB = 0x06
_CUR_BLOB_VERSION = 0x02
_CALG_RSA_KEYX = 0x0000A400
_CALG_RSA_SIGN = 0x00002400
_RSA1_MAGIC = b"RSA1"
_BLOB_HEADER = struct.Struct("<BBHI4sII")  # type, version, reserved, aiKeyAlg, magic, bitlen, pubexp


# ---------------------------------------------------------------------------------------------- ticks


def ticks_from_datetime(moment: datetime) -> int:
    """.NET ticks of a moment. Naive datetimes are taken as UTC (as wopihost.clock returns them)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    delta = moment - _TICKS_EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * TICKS_PER_SECOND + delta.microseconds * TICKS_PER_MICROSECOND


def datetime_from_ticks(ticks: int) -> datetime:
    """The naive UTC datetime of .NET ticks, truncated to microseconds; ValueError if out of range."""
    if not 0 <= ticks <= MAX_TICKS:
        raise ValueError(f"ticks out of range: {ticks}")
    return _TICKS_EPOCH + timedelta(microseconds=ticks // TICKS_PER_MICROSECOND)


# ---------------------------------------------------------------------------------- signed bytes


def upper_invariant(text: str) -> str:
    """Upper-case like .NET's String.ToUpperInvariant: one character to one character.

    Python's str.upper() applies the full Unicode mappings, some of which change the length
    ("ß" -> "SS"); .NET keeps such characters. ASCII, and hence every percent-encoded URL, is the
    same either way.
    """
    if text.isascii():
        return text.upper()
    out = []
    for ch in text:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def proof_bytes(token: str, url: str, ticks: int) -> bytes:
    """The bytes a WOPI client signs (docs/wopi.md §6.2): big-endian int32 length + UTF-8 token, int32 length +
    UTF-8 upper-cased URL, int32 8 + big-endian int64 timestamp."""
    token_bytes = token.encode("utf-8")
    url_bytes = upper_invariant(url).encode("utf-8")
    stamp = struct.pack(">q", ticks)
    return b"".join(struct.pack(">i", len(part)) + part for part in (token_bytes, url_bytes, stamp))


# ------------------------------------------------------------------------------------------- keys


class ProofKeyError(ValueError):
    """A public key in discovery (modulus/exponent or CryptoAPI blob) is malformed or unusable."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ProofKeyError(f"{what} is not valid base64") from None
    if not data:
        raise ProofKeyError(f"{what} is empty")
    return data


def _rsa_public_key(modulus: int, exponent: int, what: str) -> rsa.RSAPublicKey:
    bits = modulus.bit_length()
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ProofKeyError(f"{what}: a {bits}-bit RSA modulus is not acceptable")
    if exponent < 3 or exponent % 2 == 0 or modulus % 2 == 0:
        raise ProofKeyError(f"{what}: not a valid RSA public key")
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as exc:
        raise ProofKeyError(f"{what}: not a valid RSA public key ({exc})") from None


def public_key_from_modulus_exponent(modulus_b64: str, exponent_b64: str, what: str = "proof key") -> rsa.RSAPublicKey:
    """An RSA public key from discovery's `modulus`/`exponent` (base64 big-endian unsigned integers)."""
    modulus = int.from_bytes(_b64decode(modulus_b64, f"{what} modulus"), "big")
    exponent = int.from_bytes(_b64decode(exponent_b64, f"{what} exponent"), "big")
    return _rsa_public_key(modulus, exponent, what)


def public_key_from_blob(value_b64: str, what: str = "proof key") -> rsa.RSAPublicKey:
    """An RSA public key from discovery's `value`: base64 of a CryptoAPI PUBLICKEYBLOB (docs/wopi.md §6.3).

    Layout, little-endian: bType 0x06, bVersion 0x02, 2 reserved bytes, aiKeyAlg (CALG_RSA_KEYX,
    or CALG_RSA_SIGN), magic "RSA1", bitlen, pubexp, then bitlen/8 bytes of modulus, little-endian.
    """
    blob = _b64decode(value_b64, f"{what} value")
    if len(blob) < _BLOB_HEADER.size:
        raise ProofKeyError(f"{what} value: {len(blob)} bytes is too short for a PUBLICKEYBLOB")
    btype, version, _reserved, alg, magic, bitlen, pubexp = _BLOB_HEADER.unpack_from(blob)
    if btype != _PUBLICKEYBLOB:
        raise ProofKeyError(f"{what} value: blob type 0x{btype:02x} is not PUBLICKEYBLOB (0x06)")
    if version != _CUR_BLOB_VERSION:
        raise ProofKeyError(f"{what} value: blob version {version} is not 2")
    if alg not in (_CALG_RSA_KEYX, _CALG_RSA_SIGN):
        raise ProofKeyError(f"{what} value: key algorithm 0x{alg:08x} is not RSA")
    if magic != _RSA1_MAGIC:
        raise ProofKeyError(f"{what} value: magic {magic!r} is not RSA1")
    if bitlen % 8 or not MIN_KEY_BITS <= bitlen <= MAX_KEY_BITS:
        raise ProofKeyError(f"{what} value: bit length {bitlen} is not acceptable")
    body = blob[_BLOB_HEADER.size :]
    if len(body) != bitlen // 8:
        raise ProofKeyError(f"{what} value: modulus has {len(body)} bytes, bit length says {bitlen // 8}")
    return _rsa_public_key(int.from_bytes(body, "little"), pubexp, what)


def same_public_key(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    return a.public_numbers() == b.public_numbers()


@dataclass(frozen=True)
class ProofKeys:
    """The WOPI client's current public key and, optionally, its previous one."""

    current: rsa.RSAPublicKey
    old: rsa.RSAPublicKey | None = None

    @classmethod
    def from_modulus_exponent(
        cls, modulus: str, exponent: str, old_modulus: str | None = None, old_exponent: str | None = None
    ) -> ProofKeys:
        """From discovery's modulus/exponent (and oldmodulus/oldexponent; empty or None = no old key)."""
        current = public_key_from_modulus_exponent(modulus, exponent, "proof key")
        old = None
        if old_modulus or old_exponent:
            if not (old_modulus and old_exponent):
                raise ProofKeyError("old proof key: oldmodulus and oldexponent must come together")
            old = public_key_from_modulus_exponent(old_modulus, old_exponent, "old proof key")
        return cls(current, old)

    @classmethod
    def from_blobs(cls, value: str, old_value: str | None = None) -> ProofKeys:
        """From discovery's `value` (and `oldvalue`; empty or None = no old key) PUBLICKEYBLOBs."""
        current = public_key_from_blob(value, "proof key")
        old = public_key_from_blob(old_value, "old proof key") if old_value else None
        return cls(current, old)

    def same_as(self, other: ProofKeys) -> bool:
        if not same_public_key(self.current, other.current):
            return False
        if self.old is None or other.old is None:
            return self.old is None and other.old is None
        return same_public_key(self.old, other.old)


# --------------------------------------------------------------------------------------- verifying

PROOF_CURRENT = "proof/current"  # X-WOPI-Proof, current key: the normal case
PROOF_OLD_CURRENT = "proofold/current"  # X-WOPI-ProofOld, current key: the client rotated before us
PROOF_OLD_KEY = "proof/old"  # X-WOPI-Proof, old key: a client machine not rotated yet


@dataclass(frozen=True)
class Verdict:
    """The outcome of `verify`. `reason` is short printable ASCII, fit for an HTTP header or a log.

    `combination` names which check passed (one of the PROOF_* constants); `token_form` whether the
    token was taken as received ("raw") or percent-decoded ("decoded"). `refresh_discovery` is true
    when the caller should re-fetch discovery: success only via the old key or ProofOld (keys are
    rotating), or a signature mismatch (we may hold outdated keys; re-verify once after refetching).
    """

    ok: bool
    reason: str
    combination: str | None = None
    token_form: str | None = None
    signature_mismatch: bool = False

    def __bool__(self) -> bool:
        return self.ok

    @property
    def used_old_key(self) -> bool:
        return self.combination == PROOF_OLD_KEY

    @property
    def used_proof_old(self) -> bool:
        return self.combination == PROOF_OLD_CURRENT

    @property
    def refresh_discovery(self) -> bool:
        return self.used_old_key or self.used_proof_old or self.signature_mismatch


def _reject(reason: str, signature_mismatch: bool = False) -> Verdict:
    return Verdict(False, reason, signature_mismatch=signature_mismatch)


def _signature(header: str | None) -> tuple[bytes | None, str | None]:
    """(signature bytes, None), or (None, problem) for a missing or non-base64 header."""
    if header is None or not header.strip():
        return None, "missing"
    try:
        sig = base64.b64decode("".join(header.split()), validate=True)
    except (binascii.Error, ValueError):
        return None, "not base64"
    if not sig:
        return None, "missing"
    return sig, None


def parse_timestamp(header: str | None) -> int | None:
    """X-WOPI-TimeStamp as ticks: decimal digits only, within .NET's DateTime range; None otherwise."""
    if header is None:
        return None
    text = header.strip()
    if not _TIMESTAMP.fullmatch(text):
        return None
    ticks = int(text)
    return ticks if ticks <= MAX_TICKS else None


def token_candidates(access_token_raw: str) -> list[tuple[str, str]]:
    """The token forms a client may have signed: as it appears in the URL, then percent-decoded.

    Microsoft's published vectors sign the raw query-string value; the .NET validator signs the
    decoded token and percent-encodes it in the URL (docs/wopi.md §6.2). "+" is tried both ways.
    """
    forms = [("raw", access_token_raw)]
    for decoded in (unquote(access_token_raw), unquote_plus(access_token_raw)):
        if all(decoded != seen for _, seen in forms):
            forms.append(("decoded", decoded))
    return forms


def raw_query_value(url_or_query: str, name: str = "access_token") -> str | None:
    """The first `name=` value of a URL's query string exactly as written (not percent-decoded),
    or None. For `access_token_raw`: frameworks decode query parameters, proofs need the raw text."""
    query = url_or_query.split("#", 1)[0]
    if "?" in query:
        query = query.split("?", 1)[1]
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if sep and key == name:
            return value
    return None


def _minutes(window: timedelta) -> str:
    return f"{window.total_seconds() / 60:g}"


def _verifies(key: rsa.RSAPublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def verify(
    keys: ProofKeys | None,
    *,
    access_token_raw: str | None,
    url: str,
    timestamp_header: str | None,
    proof: str | None,
    proof_old: str | None,
    now: datetime | None = None,
    check_freshness: bool = True,
    window: timedelta = PROOF_WINDOW,
) -> Verdict:
    """Check the proof headers of one WOPI request (docs/wopi.md §6.4). Never raises for bad input.

    `access_token_raw` is the access_token query value exactly as it appears in `url` (still
    percent-encoded); `url` is the full URL the client called (external scheme, host, port, path and
    the whole query string, as received). `timestamp_header`, `proof`, `proof_old` are the raw
    X-WOPI-TimeStamp, X-WOPI-Proof and X-WOPI-ProofOld header values, None when absent.
    `now` is the current UTC time (naive UTC or aware); with `check_freshness` a timestamp more
    than `window` away from `now`, in either direction, is rejected.
    """
    if keys is None:
        return _reject("no proof keys from discovery")
    if not access_token_raw:
        return _reject("no access token to verify the proof against")
    if not url:
        return _reject("no request URL to verify the proof against")
    if proof is None or not proof.strip():
        return _reject("missing X-WOPI-Proof")
    if timestamp_header is None or not timestamp_header.strip():
        return _reject("missing X-WOPI-TimeStamp")
    ticks = parse_timestamp(timestamp_header)
    if ticks is None:
        return _reject("X-WOPI-TimeStamp is not a valid .NET ticks value")
    if check_freshness:
        if now is None:
            now = datetime.now(UTC)
        age = ticks_from_datetime(now) - ticks
        limit = int(window.total_seconds() * TICKS_PER_SECOND)
        if age > limit:
            return _reject(f"X-WOPI-TimeStamp is more than {_minutes(window)} minutes old")
        if -age > limit:
            return _reject("X-WOPI-TimeStamp is too far in the future")

    proof_sig, proof_problem = _signature(proof)
    old_sig, _ = _signature(proof_old)  # a missing or malformed ProofOld just cannot match
    checks: list[tuple[str, rsa.RSAPublicKey, bytes]] = []
    if proof_sig is not None:
        checks.append((PROOF_CURRENT, keys.current, proof_sig))
    if old_sig is not None:
        checks.append((PROOF_OLD_CURRENT, keys.current, old_sig))
    if proof_sig is not None and keys.old is not None:
        checks.append((PROOF_OLD_KEY, keys.old, proof_sig))
    # ProofOld with the old key is deliberately not a check (validator: OldValidSignedWithOldKey).

    try:
        forms = [(form, proof_bytes(token, url, ticks)) for form, token in token_candidates(access_token_raw)]
    except (UnicodeError, struct.error):
        return _reject("the access token or URL cannot be encoded")
    if any(len(data) > _INT32_MAX for _, data in forms):
        return _reject("the access token or URL is too long")
    for combination, key, signature in checks:
        for form, data in forms:
            if _verifies(key, signature, data):
                return Verdict(True, f"proof verified ({combination}, {form} token)", combination, form)
    if proof_problem == "not base64" and old_sig is None:
        return _reject("X-WOPI-Proof is not valid base64")
    return _reject("proof signature does not match", signature_mismatch=True)
