"""URLs as messages and logs show them: what may be a secret in them hidden."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SECRET = "***"  # in place of a secret, as the database URL's password is shown (SQLAlchemy's hide_password)


def shown_source(url: str) -> str:
    """A URL, or a discovery source, as messages and logs show it (doctor's lines among them): an http(s) URL with its
    credentials hidden, the password of its user (the user itself when it has none: a token may stand there),
    every query value and the fragment; a file path as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:  # ("http://[::1/..."): nothing of it can be told apart, so none of it is shown
        return "a URL that cannot be parsed"
    if parts.scheme.lower() not in ("http", "https"):
        return url
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at:
        name, colon, _ = user.partition(":")
        netloc = f"{name}:{SECRET}@{host}" if colon else f"{SECRET}@{host}"
    query = "&".join(
        f"{name}={SECRET}" if eq else SECRET
        for name, eq, _ in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, SECRET if parts.fragment else ""))
