"""State passed between the requests of one test case.

Each test case (prerequisites included) starts with two entries, the original access token and WOPISrc.
After a request passes its checks, every <State> it declares is taken from its response, from a header
(SourceType="Header") or from the JSON body by a Newtonsoft path (`Url`, `AncestorsWithRootFirst[-1:].Url`),
and stored under its name; a value that cannot be found is stored as None. Later requests use state as their
URL (OverrideUrl="$State:Name"), as a header value (CoauthTableVersionStateKey, SequenceNumberStateKey) or
as the value a check expects (ExpectedStateKey).
"""

from __future__ import annotations

from .definitions import StateEntry
from .jsonvalues import CastError, JsonReadError, PathError, as_string, parse_object, select_token
from .transport import Response

STATE_PREFIX = "$State:"
ORIGINAL_ACCESS_TOKEN = "OriginalAccessToken"
ORIGINAL_WOPI_SRC = "OriginalWopiSrc"


class StateError(LookupError):
    """A request names state that no earlier request saved."""


class State(dict):
    """Name -> value (None when the saved source was absent or empty)."""

    @classmethod
    def initial(cls, token: str, wopi_src: str) -> State:
        return cls({ORIGINAL_ACCESS_TOKEN: token, ORIGINAL_WOPI_SRC: wopi_src})

    def save(self, entries: tuple[StateEntry, ...], response: Response) -> None:
        for entry in entries:
            self[entry.name] = value_from(entry, response)

    def expected(self, key: str | None) -> str | None:
        """The value of `key` when it is saved and not empty: what ExpectedStateKey checks compare with."""
        if key is None:
            return None
        value = self.get(key)
        return value if value else None

    def override(self, text: str | None) -> str | None:
        """An OverrideUrl: "$State:Name" is the saved value (None if it was saved empty), anything else is
        taken literally; None or "" means no override."""
        if not text:
            return None
        if text.startswith(STATE_PREFIX) and text[len(STATE_PREFIX) :]:
            name = text[len(STATE_PREFIX) :]
            if name not in self:
                raise StateError(
                    "OverrideUrl specified in definition but not found in state dictionary. "
                    "Did it depend on a request that failed?"
                )
            return self[name] or None
        return text


def value_from(entry: StateEntry, response: Response) -> str | None:
    if entry.from_header:
        value = response.headers.get(entry.source) if entry.source is not None else None
        return value or None
    text = response.text
    if not text:
        return None
    try:
        return as_string(select_token(parse_object(text), entry.source or ""))
    except (JsonReadError, PathError, CastError, TypeError, ValueError):
        return None
