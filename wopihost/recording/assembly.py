"""Assembly: the spool of a recording into HTTP Archive files, one per client session (docs/testing.md).

It runs in gunicorn's master once the workers have stopped (on_exit), and when a server starts on a directory
whose spool a killed server left behind. It takes the spool files no live worker holds (spool.py), orders
every exchange in them by the time it started, whichever worker served it, and

* groups them by session: the credential a request carried (its access_token, else its Bearer token), or for
  a request with neither, the session whose earlier response handed out the credential in its path (a Graph
  upload URL, a FileUrl or downloadUrl ticket, a share id); one whose credential no recorded response handed
  out is a session of its own, named by that credential;
* numbers the secrets: each digest placeholder becomes `{{kind:N}}`, N counting from 1 per kind in order of
  first appearance across the whole recording, so that one secret has one placeholder in every file; a value
  found as more than one kind (a WOPI access token also in the Bearer header, or in a body only by its shape)
  is of the first kind in har.KINDS it was found as;
* writes each session to `<UTC time of its first request>-<n>.har` (a temporary file, then a rename), n in
  order of the sessions' first requests, and then deletes the spool.

Memory holds one exchange at a time and a few facts about each of the others, however large the recording.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .. import __version__
from ..cspp.frames import FrameError, message_frame, parse_json
from ..har import HAR_VERSION, KINDS, placeholder
from .redaction import SPOOLED
from .spool import SPOOL, SpoolFile, spool_files

log = logging.getLogger("wopihost.recording")
_MODE = 0o600


@dataclass(slots=True)
class _Line:
    """What assembly keeps of one exchange while it orders them: where it is, and what it needs to group it."""

    t: float
    worker: int
    source: SpoolFile
    offset: int
    length: int
    face: str
    session: str | None
    uses: list[str]
    hands: list[str]
    max_body: int
    secrets: list[str]  # the digest placeholders in it, in the order they appear


def assemble(directory: Path) -> list[Path]:
    """Turn the spool in `directory` into HAR files; the files written, in order."""
    taken = [source for source in map(SpoolFile.take, spool_files(directory)) if source is not None]
    if not taken:
        return []
    try:
        lines, numbers = _read(taken)
        sessions = _sessions(lines)
        written = []
        for n, (key, members) in enumerate(sessions.items(), 1):
            name = f"{datetime.fromtimestamp(members[0].t, UTC):%Y%m%dT%H%M%SZ}-{n}.har"
            written.append(_write(directory / name, key, members, numbers))
        for source in taken:
            source.delete()
    finally:
        for source in taken:
            source.close()
    try:
        (directory / SPOOL).rmdir()
    except OSError:  # a live worker's file is still in it, or something else is
        pass
    return written


def _read(taken: list[SpoolFile]) -> tuple[list[_Line], dict[str, str]]:
    """Every exchange of the spool in the order they started, and the number of each secret in that order."""
    lines = []
    for source in taken:
        for offset, raw, value in source.lines():
            try:
                entry = value["entry"]
                line = _Line(
                    float(value["t"]),
                    int(entry["_wopihost"]["worker"]),
                    source,
                    offset,
                    len(raw),
                    str(value["face"]),
                    value["session"],
                    list(value["uses"]),
                    list(value["hands"]),
                    int(value["max_body"]),
                    [m.group(0) for m in SPOOLED.finditer(raw.decode("utf-8", "surrogatepass"))],
                )
                _har_entry(value, line.t)  # what writing it needs is there (a spool of another version's may lack it)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("recording: skipped a line that is not an exchange at byte %d of %s", offset, source.path)
                continue
            if line.session is None and not line.uses:
                continue
            lines.append(line)
    lines.sort(key=lambda line: (line.t, line.worker, line.offset))
    kinds: dict[str, str] = {}  # digest -> the kind its value was found as that comes first in KINDS
    for line in lines:
        for spooled in line.secrets:
            kind, digest = _parts(spooled)
            if kind in KINDS and (digest not in kinds or KINDS.index(kind) < KINDS.index(kinds[digest])):
                kinds[digest] = kind
    numbers: dict[str, str] = {}
    by_digest: dict[str, str] = {}
    counts = dict.fromkeys(KINDS, 0)
    for line in lines:
        for spooled in line.secrets:
            digest = _parts(spooled)[1]
            if spooled not in numbers and digest in kinds:
                if digest not in by_digest:
                    kind = kinds[digest]
                    counts[kind] += 1
                    by_digest[digest] = placeholder(kind, counts[kind])
                numbers[spooled] = by_digest[digest]
    for line in lines:  # a session is its credential's value, whatever kind each request carried it as
        line.session = numbers.get(line.session, line.session) if line.session is not None else None
        line.uses = [numbers.get(used, used) for used in line.uses]
        line.hands = [numbers.get(handed, handed) for handed in line.hands]
    return lines, numbers


def _parts(spooled: str) -> tuple[str, str]:
    """The kind and the digest of a spooled placeholder."""
    kind, _, digest = spooled[2:-2].partition(":#")
    return kind, digest


def _sessions(lines: list[_Line]) -> dict[str, list[_Line]]:
    """The exchanges of each session, keyed by the session's credential, in order of their first exchange."""
    sessions: dict[str, list[_Line]] = {}
    owner: dict[str, str] = {}  # a credential handed out (or used without being handed out) -> its session
    for line in lines:
        key = line.session or next((owner[used] for used in line.uses if used in owner), None) or line.uses[0]
        for credential in (*line.uses, *line.hands):
            owner.setdefault(credential, key)
        sessions.setdefault(key, []).append(line)
    return sessions


def _write(path: Path, session: str, members: list[_Line], numbers: dict[str, str]) -> Path:
    first = members[0]
    head = {
        "log": {
            "version": HAR_VERSION,
            "creator": {"name": "wopihost", "version": __version__},
            "comment": f"One client session recorded by wopihost serve --record: every request made with "
            f"{session}. Secrets are placeholders {{{{kind:N}}}}, the same in every file of the recording.",
            "_wopihost": {"session": session, "face": first.face, "max_body": first.max_body},
            "pages": [],
            "entries": [],
        }
    }
    opening = json.dumps(head, ensure_ascii=False, indent=1)
    closing = "[]\n }\n}"
    assert opening.endswith(closing)  # "entries" is the last field
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as out:
            out.write(opening[: -len(closing)] + "[\n")
            for i, line in enumerate(members):
                if i:
                    out.write(",\n")
                out.write(json.dumps(_entry(line, numbers), ensure_ascii=False))
            out.write("\n ]\n }\n}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _entry(line: _Line, numbers: dict[str, str]) -> dict:
    """One exchange as HAR wants it: its secrets numbered, its start as a date, the query string apart, the
    MessageJSON of a framed body put back in front of its other frames."""
    text = line.source.read(line.offset, line.length).decode("utf-8", "surrogatepass")
    return _har_entry(json.loads(SPOOLED.sub(lambda m: numbers.get(m.group(0), m.group(0)), text)), line.t)


def _har_entry(value: dict, t: float) -> dict:
    """The HAR entry of a spool line's object, started at `t`; KeyError, TypeError ... if it is not one."""
    entry, request, response = value["entry"], value["entry"]["request"], value["entry"]["response"]
    started = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    har_request = {
        "method": request["method"],
        "url": request["url"],
        "httpVersion": request["httpVersion"],
        "headers": request["headers"],
        "queryString": [
            {"name": name, "value": value}
            for name, value in parse_qsl(urlsplit(request["url"]).query, keep_blank_values=True)
        ],
        "cookies": request["cookies"],
        "headersSize": request["headersSize"],
        "bodySize": request["bodySize"],
    }
    if "postData" in request:
        har_request["postData"] = _joined(request["postData"], "_encoding", request["bodySize"])
    response["content"] = _joined(response["content"], "encoding", response["content"]["size"])
    return {
        "startedDateTime": started,
        "time": entry["time"],
        "request": har_request,
        "response": response,
        "cache": entry["cache"],
        "timings": entry["timings"],
        "_wopihost": entry["_wopihost"],
    }


def _joined(body: dict, encoding: str, size: int) -> dict:
    """A body whose MessageJSON was spooled apart (recorder.py), whole again: the MessageJSON frame re-encoded
    with its numbered placeholders, the frames after it as received, in base64."""
    if "_message" not in body:
        return body
    message, rest = body.pop("_message"), base64.b64decode(body.pop("_rest"))
    joined = {key: body.pop(key) for key in ("size", "mimeType") if key in body}
    try:
        frame = message_frame(parse_json(message.encode("utf-8")))
    except FrameError:  # cannot happen to a MessageJSON the recorder could read; if it did, no text is written
        joined["_size"] = size
    else:
        joined["text"] = base64.b64encode(frame + rest).decode("ascii")
        joined[encoding] = "base64"
    joined.update(body)
    return joined
