"""If-Match and If-None-Match read as RFC 9110 §13.1 writes them: `*`, or a list of entity tags.

Our tags hold a comma inside their quotes ("{id},1"), so a list is split by its quotes, never at
its commas. A header that is neither is answered as Graph answers it: 400 with the inner code
`malformedEntityTag`, rather than the 412 of a well-formed tag that does not match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from flask import request

from .errors import GraphError

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text; WSGI gives a header's bytes
# one character each
_TAG = r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")'
# a list may hold empty elements (RFC 9110 §5.6.1.2: a recipient ignores them)
_LIST = re.compile(rf"[ \t,]*(?:W/)?\"[\x21\x23-\x7e\x80-\xff]*\"(?:[ \t]*,[ \t,]*{_TAG})*[ \t,]*")


@dataclass(frozen=True)
class Condition:
    """One If-Match or If-None-Match header: `*`, or its strong tags and the (quoted) tags of its weak ones."""

    any: bool
    strong: frozenset[str] = frozenset()
    weak: frozenset[str] = frozenset()

    def holds_for(self, tags: Iterable[str], weak: bool = False) -> bool:
        """Whether any of an item's (quoted, strong) tags is in the list: by the strong comparison, which no
        weak tag passes (If-Match), or, with `weak`, the weak one (If-None-Match), RFC 9110 §8.8.3.2."""
        return self.any or any(tag in self.strong or (weak and tag in self.weak) for tag in tags)


def condition(header: str) -> Condition | None:
    """The request's `header` (If-Match or If-None-Match), None if it has none; 400 if it is malformed."""
    value = request.headers.get(header)
    if value is None:
        return None
    if value.strip(" \t") == "*":
        return Condition(any=True)
    if _LIST.fullmatch(value) is None:
        raise GraphError(
            400,
            "invalidRequest",
            f'{header} is malformed: it is * or a list of entity tags, each a quoted string ("..." or W/"...")',
            "malformedEntityTag",
        )
    tags = re.findall(_TAG, value)
    return Condition(
        any=False,
        strong=frozenset(tag for weak, tag in tags if not weak),
        weak=frozenset(tag for weak, tag in tags if weak),
    )


def conditions() -> tuple[Condition | None, Condition | None]:
    """The request's If-Match and If-None-Match (either None if absent); 400 if either is malformed."""
    return condition("If-Match"), condition("If-None-Match")
