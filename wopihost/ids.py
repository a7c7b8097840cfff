"""Opaque identifiers."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def is_id(text: str, length: int = 22) -> bool:
    """Whether `text` is an id as new_id makes them."""
    return len(text) == length and all(ch in _ALPHABET for ch in text)


def new_id(length: int = 22) -> str:
    """A random alphanumeric id (22 characters ~ 131 bits).

    Alphanumeric only: ids travel in URLs that WOPI clients sign, and the client and
    the host must agree on the URL byte for byte whatever either of them escapes.
    """
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
