"""Proof keys: sign every request as Office does, with keys the host under test trusts.

On first use a directory gets two 2048-bit RSA key pairs, "current" and "old", and a discovery.xml that
publishes both (`value`/`oldvalue` as CryptoAPI PUBLICKEYBLOBs, and `modulus`/`exponent` beside them); later
runs reuse them, so a host configured once (`WOPIHOST_DISCOVERY_URL=<dir>/discovery.xml`) keeps trusting the
validator. Two keys are needed because the ProofKeys tests sign with the old key, or put the current key's
signature in X-WOPI-ProofOld, and expect the host to accept or refuse accordingly.

X-WOPI-Proof is the current key's signature and X-WOPI-ProofOld the old key's, both over the same bytes
(`wopihost.proof.proof_bytes`: the access token, the exact URL sent, upper-cased, and X-WOPI-TimeStamp in
.NET ticks). A ProofKey mutator then spoils or swaps them, as the validator's ProofKeyMutator does.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..proof import proof_bytes, ticks_from_datetime
from .definitions import ProofKeyMutator

KEY_BITS = 2048
CURRENT_KEY = "proof-key.pem"
OLD_KEY = "proof-key-old.pem"
DISCOVERY = "discovery.xml"

# What the validator puts in a proof header it means to be wrong: base64 of "INVALID".
INVALID_PROOF = base64.b64encode(b"INVALID").decode("ascii")


def default_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wopihost" / "validator-proof-keys"


class ProofSigner:
    def __init__(self, current: rsa.RSAPrivateKey, old: rsa.RSAPrivateKey, directory: Path | None = None):
        self.current, self.old, self.directory = current, old, directory

    @classmethod
    def load_or_create(cls, directory: str | Path | None = None) -> ProofSigner:
        """The keys in `directory` (the default cache directory if None), made there first if missing.
        discovery.xml is rewritten from the keys whenever it is missing."""
        path = Path(directory) if directory is not None else default_directory()
        path.mkdir(parents=True, exist_ok=True)
        keys = [_load_or_create_key(path / name) for name in (CURRENT_KEY, OLD_KEY)]
        signer = cls(keys[0], keys[1], path)
        if not (path / DISCOVERY).is_file():
            _write_atomically(path / DISCOVERY, signer.discovery_xml(), 0o644)
        return signer

    @property
    def discovery_path(self) -> Path | None:
        return self.directory / DISCOVERY if self.directory is not None else None

    def discovery_xml(self) -> bytes:
        """A WOPI discovery document with the two public keys and the WopiTest app for `.wopitest`."""
        current, old = _key_attributes(self.current.public_key(), ""), _key_attributes(self.old.public_key(), "old")
        return f"""<?xml version="1.0" encoding="utf-8"?>
<wopi-discovery>
  <net-zone name="external-http">
    <app name="WopiTest" checkLicense="false">
      <action name="view" ext="wopitest" urlsrc="https://validator.invalid/wopitest/view?&lt;ui=UI_LLCC&amp;&gt;"/>
      <action name="edit" ext="wopitest" urlsrc="https://validator.invalid/wopitest/edit?&lt;ui=UI_LLCC&amp;&gt;"/>
    </app>
  </net-zone>
  <proof-key {current} {old}/>
</wopi-discovery>
""".encode()

    def headers(
        self, token: str, url: str, mutator: ProofKeyMutator | None = None, now: datetime | None = None
    ) -> dict[str, str]:
        """X-WOPI-Proof, X-WOPI-ProofOld and X-WOPI-TimeStamp for a request to `url` with `token`."""
        ticks = ticks_from_datetime(now or datetime.now(UTC))
        if mutator is not None and mutator.timestamp is not None:
            ticks = mutator.timestamp
        data = proof_bytes(token, url, ticks)
        proof, proof_old = _sign(self.current, data), _sign(self.old, data)
        if mutator is not None:
            if mutator.key_relation == "Synced":
                proof = INVALID_PROOF if mutator.mutate_current else proof
                proof_old = INVALID_PROOF if mutator.mutate_old else proof_old
            elif mutator.key_relation == "Behind":  # the client machine has not got the new key yet
                proof, proof_old = proof_old, INVALID_PROOF
            elif mutator.key_relation == "Ahead":  # the client rotated, the host has not re-read discovery
                proof, proof_old = INVALID_PROOF, proof
        return {"X-WOPI-Proof": proof, "X-WOPI-ProofOld": proof_old, "X-WOPI-TimeStamp": str(ticks)}


def _sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if not path.is_file():
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if _write_atomically(path, pem, 0o600, replace=False):
            return key
        # another run made it meanwhile (both started on an empty directory): theirs is the one, or each would
        # sign with a key of its own and discovery.xml publish only one of them
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return loaded


def _write_atomically(path: Path, data: bytes, mode: int, replace: bool = True) -> bool:
    """`data` at `path`, whole or not at all; with `replace=False` only if nothing is there yet (False if
    something is)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # (fails if the path exists, where os.replace would overwrite it)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _public_key_blob(key: rsa.RSAPublicKey) -> bytes:
    """CryptoAPI PUBLICKEYBLOB, how discovery's `value` carries a key: a little-endian header (PUBLICKEYBLOB,
    version 2, CALG_RSA_KEYX, "RSA1", bit length, exponent) and the modulus, little-endian."""
    numbers = key.public_numbers()
    return (
        bytes([0x06, 0x02, 0, 0])
        + (0xA400).to_bytes(4, "little")
        + b"RSA1"
        + key.key_size.to_bytes(4, "little")
        + numbers.e.to_bytes(4, "little")
        + numbers.n.to_bytes(key.key_size // 8, "little")
    )


def _key_attributes(key: rsa.RSAPublicKey, prefix: str) -> str:
    numbers = key.public_numbers()
    modulus = _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
    exponent = _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))
    return (
        f"{prefix}value={quoteattr(_b64(_public_key_blob(key)))} {prefix}modulus={quoteattr(modulus)} "
        f"{prefix}exponent={quoteattr(exponent)}"
    )
