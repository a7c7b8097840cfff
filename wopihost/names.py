"""File names: header decoding (UTF-7, or UTF-8), validation, sanitising, de-duplication.

Names never become paths (content lives in the blob store under random ids); the
rules below exist so that a name is valid on every client Office runs on, and so
that nothing path-like (`..`, `/`, `\\`) is ever accepted where a name is expected.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .text import text_problem

MAX_BASE_LENGTH = 250  # CheckFileInfo FileNameMaxLength: the name without its extension
MAX_EXTENSION_LENGTH = 32
FORBIDDEN = set('<>:"/\\|?*')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_NUMBERED = re.compile(r"^(.*) \((\d+)\)$")


class InvalidName(ValueError):
    """The name cannot be used; str(exc) says why (it goes into a response header)."""


def decode_name(value: str, header: str) -> str:
    """A name from a WOPI header, `value` as the WSGI server hands it over (its bytes read as Latin-1): UTF-7, as
    WOPI sends names (RFC 2152), or raw UTF-8, as some clients send them instead. UTF-7 is ASCII, so bytes that
    are not can only be the other: read as UTF-8 when they are that, else (Latin-1 text, say) not valid UTF-7."""
    if not value.isascii():
        try:
            return value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return decode_utf7(value, header)


def decode_utf7(value: str, header: str) -> str:
    """Decode a UTF-7 header value (RFC 2152), as WOPI sends file names."""
    try:
        return value.encode("ascii").decode("utf-7")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise InvalidName(f"{header} is not valid UTF-7") from None


def encode_utf7(name: str) -> str:
    return name.encode("utf-7").decode("ascii")


def split_extension(name: str) -> tuple[str, str]:
    """'a.b.docx' -> ('a.b', '.docx'); a name without a dot has no extension."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


@dataclass(frozen=True)
class Named:
    """What check()'s reasons call the name they refuse: a file's, or a folder's in its face's own words ("the
    container name"). A folder's last dot starts no extension, though what follows it is held to the same length."""

    noun: str = "the name"
    folder: bool = False


FILE_NAME = Named()


def check(name: str, named: Named = FILE_NAME) -> str:
    """Return the name (NFC-normalised) if it is a valid name; raise InvalidName otherwise, saying why in the
    words of `named`."""
    name, noun = unicodedata.normalize("NFC", name), named.noun
    if not name:
        raise InvalidName(f"{noun} is empty")
    problem = text_problem(name)  # NUL, unpaired surrogates
    if problem is not None:
        raise InvalidName(f"{noun} {problem}")
    if any(_control(ch) for ch in name):
        raise InvalidName(f"{noun} contains control characters")
    bad = sorted(FORBIDDEN.intersection(name))
    if bad:
        raise InvalidName(f"{noun} contains characters that are not allowed: {' '.join(bad)}")
    if name.strip(". ") == "":
        raise InvalidName(f"{noun} consists only of dots and spaces")
    if name.startswith("."):
        raise InvalidName(f"{noun} starts with a dot")
    if name != name.strip() or name.endswith("."):
        raise InvalidName(f"{noun} starts or ends with a space, or ends with a dot")
    base, ext = split_extension(name)
    if base.split(".")[0].upper() in _RESERVED:
        raise InvalidName(f"{base.split('.')[0]} is a reserved device name")
    if len(base) > MAX_BASE_LENGTH:
        part = ("before its last dot" if ext else "") if named.folder else "without its extension"
        raise InvalidName(f"{noun} is longer than {MAX_BASE_LENGTH} characters {part}".rstrip())
    if len(ext) > MAX_EXTENSION_LENGTH:
        part = f"the part of {noun} after its last dot" if named.folder else "the extension"
        raise InvalidName(f"{part} is longer than {MAX_EXTENSION_LENGTH} characters")
    return name


def sanitize(name: str, fallback: str = "Untitled") -> str:
    """Turn any string into a valid name, for the modes where WOPI says never to refuse one."""
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if ch in FORBIDDEN or _control(ch) or "\ud800" <= ch <= "\udfff" else ch for ch in name)
    base, ext = split_extension(_trimmed(name))
    ext = ext[:MAX_EXTENSION_LENGTH].rstrip()  # cut short, it may end with a space
    if ext == ".":  # nothing but spaces as far as an extension may go: the name is what comes before it
        return sanitize(base, fallback)
    base = _trimmed(base) or fallback
    if base.split(".")[0].upper() in _RESERVED:
        base = "_" + base
    return check((_trimmed(base[:MAX_BASE_LENGTH]) or fallback) + ext)  # cut after the "_", which lengthens it


def _trimmed(text: str) -> str:
    """`text` without what `check` refuses at either end of a name: whitespace (any that str.strip removes, a
    no-break space too) and dots, in any mix."""
    while (trimmed := text.strip().strip(".")) != text:
        text = trimmed
    return text


def _control(ch: str) -> bool:
    return ord(ch) < 32 or 127 <= ord(ch) < 160


def numbered(name: str, n: int) -> str:
    """'Report.docx', 2 -> 'Report (2).docx'; an existing ' (k)' suffix is replaced, not stacked.
    How WOPI hosts (and Windows) tell copies apart."""
    return _numbered(*split_extension(name), n)


def numbered_folder(name: str, n: int) -> str:
    """'v1.2', 2 -> 'v1.2 (2)': a folder's name has no extension to keep at the end."""
    match = _NUMBERED.match(name)
    return _folder_suffixed(match.group(1) if match else name, f" ({n})")


def _numbered(base: str, ext: str, n: int) -> str:
    match = _NUMBERED.match(base)
    if match:
        base = match.group(1)
    return _suffixed(base, f" ({n})", ext)


def counted(name: str, n: int) -> str:
    """'Report.docx', 2 -> 'Report 1.docx': OneDrive's free names for conflictBehavior "rename", which
    count from 1 for the first copy."""
    base, ext = split_extension(name)
    return _suffixed(base, f" {n - 1}", ext)


def counted_folder(name: str, n: int) -> str:
    """'v1.2', 2 -> 'v1.2 1': OneDrive appends the number to a folder's whole name."""
    return _folder_suffixed(name, f" {n - 1}")


def _folder_suffixed(name: str, suffix: str) -> str:
    """`name` + `suffix`, cut short first where `check` would refuse it: at MAX_BASE_LENGTH, and where what
    follows the name's last dot, which check() takes for an extension, would pass MAX_EXTENSION_LENGTH."""
    name = name[: MAX_BASE_LENGTH - len(suffix)]
    dot = name.rfind(".")
    if dot > 0:
        name = name[: dot + MAX_EXTENSION_LENGTH - len(suffix)]
    return name + suffix


def _suffixed(base: str, suffix: str, ext: str) -> str:
    return base[: MAX_BASE_LENGTH - len(suffix)] + suffix + ext
