""".NET behaviours that Microsoft's validator inherits from its runtime and that a faithful rerun must copy.

The validator's semantics are partly those of the .NET classes it calls: `Encoding.UTF7` (which, unlike
Python's codec, base64-encodes `_`, `!`, `*` and the other "optional direct" characters and always closes a
base64 run with `-`), `HttpUtility.UrlEncode`/`UrlDecode`, `Boolean.Parse`, `Int32.Parse`, `XmlConvert`, the
string forms `Convert.ToString` gives JSON scalars ("True", not "true"), the relaxed JSON `JToken.Parse`
accepts (single quotes, bare property names), `Uri.TryCreate(..., UriKind.Absolute)` and `DateTime.TryParse`.
Each function here reproduces one of them closely enough for the test definitions; none does more.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..proof import ticks_from_datetime
from ..text import digits

# ----------------------------------------------------------------------------------------------- UTF-7

# UTF7Encoding without optional characters: only these go through as themselves.
_UTF7_DIRECT = frozenset("\t\n\r '(),-./0123456789:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def utf7(text: str) -> str:
    """`Encoding.UTF7.GetBytes(text)` as ASCII text.

    Differs from Python's "utf-7" codec, which writes `_`, `!`, `*`, `;` ... directly and omits the `-` that
    ends a base64 run before a character that cannot be base64: hosts must decode .NET's form.
    """
    out: list[str] = []
    bits = 0
    count = -1  # -1: not in a base64 run; otherwise bits waiting in `bits`
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        unit = data[i] | data[i + 1] << 8
        if unit < 0x80 and chr(unit) in _UTF7_DIRECT:
            if count >= 0:
                if count > 0:
                    out.append(_BASE64[(bits << (6 - count)) & 0x3F])
                out.append("-")
                count = -1
            out.append(chr(unit))
        elif count < 0 and unit == 0x2B:  # "+" outside a run
            out.append("+-")
        else:
            if count < 0:
                out.append("+")
                count = 0
            bits = (bits << 16 | unit) & 0xFFFFFFFF
            count += 16
            while count >= 6:
                count -= 6
                out.append(_BASE64[(bits >> count) & 0x3F])
    if count >= 0:
        if count > 0:
            out.append(_BASE64[(bits << (6 - count)) & 0x3F])
        out.append("-")
    return "".join(out)


def utf7_unescaped(text: str | None) -> str | None:
    """`Uri.UnescapeDataString(HttpUtility.UrlEncode(text, Encoding.UTF7))`: how the validator fills
    X-WOPI-SuggestedTarget and X-WOPI-RelativeTarget. The round trip through URL encoding leaves the
    UTF-7 text as it was except that a space becomes "+"."""
    if not text:
        return text
    return utf7(text).replace(" ", "+")


# ------------------------------------------------------------------------------------------- URLs

_URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!*()")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def url_key_value_encode(text: str | None) -> str | None:
    """The validator's UrlKeyValueEncode, used for the access token in a WOPI URL: every character but
    ASCII letters and digits becomes its UTF-8 bytes as %XX (upper case); a lone surrogate is dropped."""
    if not text:
        return text
    out = []
    for ch in text:
        if ch in _ALNUM:
            out.append(ch)
        elif "\ud800" <= ch <= "\udfff":
            continue
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
    return "".join(out)


def url_encode(text: str | None) -> str:
    """`HttpUtility.UrlEncode(text)`: UTF-8, space as "+", lower-case hex, `-_.!*()` left alone."""
    if text is None:
        return ""
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        ch = chr(byte)
        if ch in _URL_SAFE:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.append(f"%{byte:02x}")
    return "".join(out)


_HEX = frozenset("0123456789abcdefABCDEF")


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in _HEX for c in text)


def url_decode(text: str) -> str:
    """`HttpUtility.UrlDecode(text)`: "+" is a space, %XX bytes are UTF-8, %uXXXX a UTF-16 unit; a malformed
    escape stays as written."""
    out: list[str] = []
    pending = bytearray()

    def flush() -> None:
        if pending:
            out.append(pending.decode("utf-8", "replace"))
            pending.clear()

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and text[i + 1 : i + 2] in ("u", "U") and _is_hex(text[i + 2 : i + 6], 4):
            flush()
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        elif ch == "%" and _is_hex(text[i + 1 : i + 3], 2):
            pending.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            flush()
            out.append(" " if ch == "+" else ch)
            i += 1
    flush()
    return "".join(out)


def query_value(url: str | None, name: str) -> str | None:
    """The validator's GetQueryParameterValue: the first `?name=` or `&name=` (case-insensitive), decoded."""
    if url is None:
        return None
    lower = url.lower()
    start = -1
    for mark in ("?", "&"):
        start = lower.find(f"{mark}{name.lower()}=")
        if start != -1:
            break
    if start == -1:
        return None
    value_start = start + len(name) + 2
    ends = [i for i in (url.find("&", value_start), url.find("#", value_start)) if i != -1]
    value = url[value_start : min(ends)] if ends else url[value_start:]
    return url_decode(value)


def replace_query_value(url: str, name: str, value: str | None) -> str:
    """The validator's AppendOrReplaceQueryParameter: replace the first `name=` value, else append it before
    any fragment; the value is `HttpUtility.UrlEncode`d."""
    key, encoded = url_encode(name), url_encode(value)
    lower = url.lower()
    start = -1
    for mark in ("?", "&"):
        start = lower.find(f"{mark}{key.lower()}=")
        if start != -1:
            break
    if start != -1:
        rest_at = [i for i in (url.find("&", start + len(key) + 2), url.find("#", start + len(key) + 2)) if i != -1]
        rest = url[min(rest_at) :] if rest_at else ""
        return f"{url[: start + 1]}{key}={encoded}{rest}"
    mark = "&" if "?" in url else "?"
    hash_at = url.find("#")
    if hash_at == -1:
        return f"{url}{mark}{key}={encoded}"
    return f"{url[:hash_at]}{mark}{key}={encoded}{url[hash_at:]}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def absolute_uri(url: str) -> str:
    """Roughly `new Uri(url).AbsoluteUri`: scheme and host lower-cased, a default port dropped, an empty path
    made "/"; ValueError where .NET's Uri throws for a port that is not one (dropped, the URL would go to the
    default port). Anything finer (escaping) is left to the HTTP library, and the URL that is finally sent is
    the one that is signed, whatever it is."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))


def append_path(url: str, suffix: str) -> str:
    """`UriBuilder.Path += suffix`: the suffix goes at the end of the path, before the query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, (parts.path or "/") + suffix, parts.query, parts.fragment))


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.DOTALL)
_HIERARCHICAL = {"http", "https", "ftp", "ws", "wss", "file", "net.tcp", "net.pipe", "gopher", "nntp", "news", "ldap"}


def is_absolute_uri(value: str) -> bool:
    """Roughly `Uri.TryCreate(value, UriKind.Absolute, out _)`: a scheme, and for the web schemes `//` and a
    host. Spaces and other characters .NET escapes by itself are accepted, control characters are not."""
    if not value or value != value.strip() or any(ord(ch) < 0x20 for ch in value):
        return False
    match = _SCHEME.match(value)
    if not match:
        return False
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in _HIERARCHICAL:
        if not rest.startswith("//"):
            return False
        authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
        host = authority.rsplit("@", 1)[-1]
        if host.startswith("["):
            return host.find("]") > 1
        host, _, port = host.partition(":")
        if port and not (digits(port) and int(port) <= 65535):
            return False
        return bool(host) or scheme == "file"
    return bool(rest)


# ------------------------------------------------------------------------------------ numbers, booleans

_INTEGER = re.compile(r"[+-]?[0-9]+")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)


class FormatError(ValueError):
    """.NET's FormatException: the text is not a number (or boolean) at all."""


class Overflow(ValueError):
    """.NET's OverflowException: a number outside the target type."""


def parse_integer(text: str | None, bounds: tuple[int, int] = INT32) -> int:
    """`Int32.Parse` (or Int64/UInt32 with other bounds): surrounding white space and a sign allowed."""
    if text is None:
        raise FormatError("no value")
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise FormatError(f"{text!r} is not an integer")
    value = int(stripped)
    if not bounds[0] <= value <= bounds[1]:
        raise Overflow(f"{text!r} is out of range")
    return value


def try_parse_integer(text: str | None, bounds: tuple[int, int] = INT32) -> int | None:
    try:
        return parse_integer(text, bounds)
    except ValueError:
        return None


def parse_bool(text: str | None) -> bool:
    """`Boolean.Parse`: "True" or "False" in any case, white space around allowed."""
    if text is None:
        raise FormatError("no value")
    value = text.strip(" \t\r\n\0").lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise FormatError(f"{text!r} is not a boolean")


def xml_bool(text: str) -> bool:
    """`(bool)XAttribute`, i.e. XmlConvert.ToBoolean: "true", "false", "1" or "0", case-sensitive."""
    value = text.strip(" \t\r\n")
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise FormatError(f"{text!r} is not an XML boolean")


def bool_text(value: bool) -> str:
    """`bool.ToString()`: how the validator writes boolean headers."""
    return "True" if value else "False"


def double_text(value: float) -> str:
    """`double.ToString(CultureInfo.InvariantCulture)` (shortest round trip, .NET's exponent style)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}E{sign}{exponent.lstrip('+-').zfill(2)}"
    return text[:-2] if text.endswith(".0") else text


def scalar_text(value: Any) -> str | None:
    """`Convert.ToString(value, InvariantCulture)` for a JSON scalar, as Newtonsoft's `Value<string>()` gives it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return bool_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return double_text(value)
    raise TypeError(f"cannot convert {type(value).__name__} to a string")


# ---------------------------------------------------------------------------------------- dates


def parse_datetime(text: str | None) -> datetime | None:
    """Roughly `DateTime.TryParse`: ISO 8601 (with or without zone), RFC 1123, or None."""
    if not text or not text.strip():
        return None
    value = text.strip()
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        pass
    for pattern in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d", "%d %B %Y", "%B %d, %Y"):
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    return None


def datetime_ticks(text: str | None) -> int | None:
    """The .NET ticks of a date the validator parses with DateTime.TryParse (the proof-key mutator's
    Timestamp). A zone, if given, is converted to UTC (.NET converts to the machine's local time; the
    test that uses this only needs a time long past)."""
    moment = parse_datetime(text)
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return ticks_from_datetime(moment)


# -------------------------------------------------------------------------------- relaxed JSON


class RelaxedJsonError(ValueError):
    pass


def relaxed_json(text: str) -> Any:
    """`JToken.Parse`: JSON plus single-quoted strings and bare property names, as the test definitions
    write expected bodies (`[{CoauthLockId:'Client1', ...}]`)."""
    parser = _Relaxed(text)
    value = parser.value()
    parser.space()
    if parser.pos != len(text):
        raise RelaxedJsonError(f"unexpected text at {parser.pos}: {text[parser.pos : parser.pos + 20]!r}")
    return value


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BARE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


class _Relaxed:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def fail(self, what: str) -> RelaxedJsonError:
        return RelaxedJsonError(f"{what} at {self.pos} in {self.text[:60]!r}")

    def value(self) -> Any:
        self.space()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end")
        ch = self.text[self.pos]
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.array()
        if ch in "\"'":
            return self.string()
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = match.group()
            return float(number) if any(c in number for c in ".eE") else int(number)
        match = _BARE.match(self.text, self.pos)
        if match and match.group() in ("true", "false", "null"):
            self.pos = match.end()
            return {"true": True, "false": False, "null": None}[match.group()]
        raise self.fail("unexpected character")

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == quote:
                return "".join(out)
            if ch == "\\":
                if self.pos >= len(self.text):
                    break
                esc = self.text[self.pos]
                self.pos += 1
                if esc == "u":
                    out.append(chr(int(self.text[self.pos : self.pos + 4], 16)))
                    self.pos += 4
                elif esc in _ESCAPES:
                    out.append(_ESCAPES[esc])
                else:
                    raise self.fail("bad escape")
            else:
                out.append(ch)
        raise self.fail("unterminated string")

    def key(self) -> str:
        self.space()
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            return self.string()
        match = _BARE.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a property name")
        self.pos = match.end()
        return match.group()

    def expect(self, ch: str) -> None:
        self.space()
        if self.pos >= len(self.text) or self.text[self.pos] != ch:
            raise self.fail(f"expected {ch!r}")
        self.pos += 1

    def peek(self, ch: str) -> bool:
        self.space()
        return self.pos < len(self.text) and self.text[self.pos] == ch

    def obj(self) -> dict:
        self.expect("{")
        result: dict = {}
        if self.peek("}"):
            self.pos += 1
            return result
        while True:
            name = self.key()
            self.expect(":")
            result[name] = self.value()
            if self.peek(","):
                self.pos += 1
                continue
            self.expect("}")
            return result

    def array(self) -> list:
        self.expect("[")
        result: list = []
        if self.peek("]"):
            self.pos += 1
            return result
        while True:
            result.append(self.value())
            if self.peek(","):
                self.pos += 1
                continue
            self.expect("]")
            return result
