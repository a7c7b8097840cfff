"""Client-supplied text: what the database cannot hold is refused up front, and what counts as a number.

PostgreSQL's text types cannot hold NUL, and a lone surrogate (what JSON's "\\ud800" and
UTF-7's "+2AA-" decode to) is not Unicode text at all: no driver can encode it. Either
would fail deep in a transaction; checked here, the client learns which value was wrong.
"""

from __future__ import annotations

import re

# What XML 1.0 cannot hold, and so neither an .xlsx nor a JUnit report: control characters but tab, line feed
# and carriage return; U+FFFE and U+FFFF; unpaired surrogates.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text ("contains ..."), or None if it can."""
    if "\x00" in value:
        return "contains a NUL character"
    if not is_unicode(value):
        return "is not valid Unicode (it contains an unpaired surrogate)"
    return None


def digits(value: str) -> bool:
    """Whether `value` is one or more ASCII digits, a whole number as int() reads it: str.isdigit alone also takes
    "²" and other digits of Unicode, which int() refuses (a 500) or reads as another number."""
    return value.isascii() and value.isdigit()


def is_unicode(value: str) -> bool:
    """Whether `value` is Unicode text: no unpaired surrogate, which nothing can encode, print or send."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
