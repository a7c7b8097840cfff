"""Builders for proof-key tests: discovery documents carrying our own keys, and signed requests."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from wopihost.proof import proof_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def int_b64(number: int) -> str:
    return b64(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def public_key_blob(key: rsa.RSAPublicKey) -> bytes:
    """A CryptoAPI PUBLICKEYBLOB, written out field by field (independent of the parser under test)."""
    numbers = key.public_numbers()
    bitlen = key.key_size
    return (
        bytes([0x06, 0x02, 0x00, 0x00])  # PUBLICKEYBLOB, version 2, reserved
        + (0xA400).to_bytes(4, "little")  # CALG_RSA_KEYX
        + b"RSA1"
        + bitlen.to_bytes(4, "little")
        + numbers.e.to_bytes(4, "little")
        + numbers.n.to_bytes(bitlen // 8, "little")
    )


def key_attrs(key: rsa.RSAPublicKey, prefix: str = "") -> str:
    numbers = key.public_numbers()
    return (
        f'{prefix}value="{b64(public_key_blob(key))}" {prefix}modulus="{int_b64(numbers.n)}" '
        f'{prefix}exponent="{int_b64(numbers.e)}"'
    )


def discovery_xml(current: rsa.RSAPublicKey, old: rsa.RSAPublicKey | None) -> bytes:
    old_attrs = key_attrs(old, "old") if old is not None else ""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<wopi-discovery>
  <net-zone name="external-https">
    <app name="WopiTest" favIconUrl="https://office.example/wv/resources/1033/FavIcon_Word.ico"
         checkLicense="false">
      <action name="view" ext="wopitest"
              urlsrc="https://office.example/wv/wordviewerframe.aspx?&lt;ui=UI_LLCC&amp;&gt;"/>
    </app>
  </net-zone>
  <proof-key {key_attrs(current)} {old_attrs}/>
</wopi-discovery>""".encode()


def sign(private_key: rsa.RSAPrivateKey, token: str, url: str, ticks: int) -> str:
    signature = private_key.sign(proof_bytes(token, url, ticks), padding.PKCS1v15(), hashes.SHA256())
    return b64(signature)
