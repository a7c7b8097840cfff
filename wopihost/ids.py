"""Opaque identifiers."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(length: int = 22) -> str:
    """A random alphanumeric id (22 characters ~ 131 bits).

    Alphanumeric only: ids travel in URLs that WOPI clients sign, and the client and
    the host must agree on the URL byte for byte whatever either of them escapes.
    """
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))

