"""The CSPP Plus binary frame format (docs/cspp-plus.md §2): a sans-I/O incremental decoder and a streaming
encoder.

A frame is a 16-byte big-endian header (FrameType uint32, ExtendedHeaderSize uint32, PayloadSize uint64),
then the extended header, then the payload:

======  ===========  ==============  ====================================================
type    name         ext. header     payload
======  ===========  ==============  ====================================================
1       EndFrame     0               0 bytes
2       MessageJSON  0               UTF-8 JSON
3       Chunk        16 (ChunkId)    the chunk bytes
4       ChunkRange   36              a range of a chunk; ext = ChunkId, Offset, Length, Flags
======  ===========  ==============  ====================================================

Decoding. ``FrameDecoder`` is fed byte pieces of any size, split anywhere, and returns events::

    decoder = FrameDecoder("body")            # or "session" for an upload-session stream
    for piece in pieces:
        for event in decoder.feed(piece):
            ...
    decoder.close()                           # end of input: raises if the stream is incomplete

A Chunk frame gives ``ChunkStart``, then zero or more ``ChunkData``, then ``ChunkEnd``; a ChunkRange frame
gives ``ChunkRangeStart`` and the same data and end events. So a consumer can open a temporary file and a
``ChunkHasher`` at the start, write and hash each piece, and check the ChunkId at the end.

``ChunkData.data`` is a ``memoryview`` slice of the object passed to ``feed()``: payload bytes are never
copied or buffered by the decoder. The view is valid as long as the caller does not change that object; a
consumer that keeps a piece beyond the next ``feed()`` while reusing its read buffer must copy it
(``bytes(event.data)``). Only headers split across pieces (at most 52 bytes) and the MessageJSON text are
buffered, the latter up to ``max_message_size``.

Every violation of the rules in docs/cspp-plus.md §2.3 raises ``FrameError``, whose ``reason`` is one line of
ASCII fit for ``X-WOPI-FailureReason``; so does a ChunkRange whose Length is not its PayloadSize or whose Flags is
neither 0 nor 1. No other exception escapes ``feed()`` or ``close()`` whatever the bytes are. The decoder
checks framing only: the MessageJSON may be any JSON value, and a body may hold both Chunk and ChunkRange
frames; which shapes an operation accepts is for its caller to check.

Encoding. ``message_frame`` and ``END_FRAME`` are small ``bytes``; ``chunk_frame`` and
``chunk_range_frame`` return generators of ``bytes`` pieces (the header, then the payload pieces) so that a
response can stream a large file; ``encode_body`` chains a whole request or response body.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, NoReturn

from .chunkid import Buffer, ChunkIdError, decode_chunk_id

Payload = Buffer | Iterable[Buffer]


class FrameType(IntEnum):
    END = 1
    MESSAGE_JSON = 2
    CHUNK = 3
    CHUNK_RANGE = 4


# Plain ints for the decoder's per-frame comparisons: an IntEnum attribute lookup costs ~10x a global.
_END, _MESSAGE, _CHUNK, _RANGE = (int(t) for t in FrameType)

_HEADER = struct.Struct(">IIQ")
_RANGE_EXT = struct.Struct(">16sQQI")
HEADER_SIZE = _HEADER.size
EXTENDED_HEADER_SIZES = {_END: 0, _MESSAGE: 0, _CHUNK: 16, _RANGE: _RANGE_EXT.size}
FLAG_END_OF_CHUNK = 1

END_FRAME = _HEADER.pack(FrameType.END, 0, 0)

DEFAULT_MAX_PAYLOAD_SIZE = 4 << 30
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20


class FrameError(ValueError):
    """A frame stream that breaks the format; ``reason`` is a short ASCII line for X-WOPI-FailureReason."""

    def __init__(self, reason: str) -> None:
        # Reasons may quote parser messages; keep the header-safety promise whatever they contain.
        self.reason = " ".join(reason.encode("ascii", "replace").decode("ascii").split())
        super().__init__(self.reason)


# Events. Small frozen records; ``feed()`` returns them in stream order.


@dataclass(frozen=True, slots=True)
class MessageJSON:
    value: Any


@dataclass(frozen=True, slots=True)
class ChunkStart:
    chunk_id: bytes  # 16 raw bytes, as in the extended header
    size: int  # payload size
    stream_offset: int = 0  # where the payload starts, counted from the first byte fed to the decoder


@dataclass(frozen=True, slots=True)
class ChunkRangeStart:
    chunk_id: bytes  # 16 raw bytes
    offset: int  # where the range starts inside the chunk
    length: int  # payload size (checked equal to the frame's PayloadSize)
    end_of_chunk: bool  # Flags == 1: the range includes the chunk's last byte


@dataclass(frozen=True, slots=True)
class ChunkData:
    data: memoryview  # a slice of the piece given to feed(); see the module docstring


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    pass


@dataclass(frozen=True, slots=True)
class EndFrame:
    pass


Event = MessageJSON | ChunkStart | ChunkRangeStart | ChunkData | ChunkEnd | EndFrame

_CHUNK_END_EVENT = ChunkEnd()
_END_FRAME_EVENT = EndFrame()


class FrameDecoder:
    """Incremental decoder of a frame stream.

    ``mode="body"``: a request or response body. MessageJSON first, then Chunk or ChunkRange frames, then
    EndFrame; bytes after the EndFrame are ignored (as the validator does). ``mode="session"``: an
    upload-session stream, Chunk frames only, no MessageJSON and no EndFrame.

    ``max_payload_size`` bounds a Chunk or ChunkRange payload and ``max_message_size`` the MessageJSON; both
    are checked when the header arrives, before any payload byte is taken.

    A session stream decoded in parts (an upload session's pieces arrive in separate requests) resumes at a frame
    boundary: ``offset`` is where the first byte fed lies in the stream and ``frames`` how many frames came
    before it, so that offsets and frame numbers, in events and errors alike, are the whole stream's.
    """

    def __init__(
        self,
        mode: Literal["body", "session"] = "body",
        *,
        max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        offset: int = 0,
        frames: int = 0,
    ) -> None:
        if mode not in ("body", "session"):
            raise ValueError(f"mode must be 'body' or 'session', not {mode!r}")
        if (offset or frames) and mode != "session":
            raise ValueError("only a session stream can be resumed")
        self._body = mode == "body"
        self._max_payload = max_payload_size
        self._max_message = max_message_size
        self._head = bytearray()  # a header split across pieces
        self._head_need = HEADER_SIZE  # bytes the header in _head needs, once its fixed part is known
        self._remaining = 0  # payload bytes still to come in the current frame
        self._message: bytearray | None = None  # MessageJSON text while it arrives
        self._frames = frames
        self._fed = offset
        self._complete = offset
        self._ended = False  # EndFrame seen
        self._closed = False
        self._error: FrameError | None = None

    @property
    def bytes_fed(self) -> int:
        """Where the next byte fed lies: the bytes passed to ``feed()``, plus ``offset``."""
        return self._fed

    @property
    def complete_frames(self) -> int:
        """How many frames are complete (``frames`` included)."""
        return self._frames

    @property
    def complete_offset(self) -> int:
        """Bytes from the start of the stream to the end of the last complete frame.

        In session mode this is where a resumed stream could continue if the tail were dropped.
        """
        return self._complete

    @property
    def ended(self) -> bool:
        """Body mode: the EndFrame has been decoded."""
        return self._ended

    def feed(self, data: Buffer) -> list[Event]:
        """Decode the next piece of the stream; returns the events it completes, in order."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("feed() after close()")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        base = self._fed
        self._fed += len(view)
        if self._remaining > len(view) > 0 and self._message is None:
            # The common case of a big chunk: the whole piece is payload and the frame goes on after it.
            self._remaining -= len(view)
            return [ChunkData(view)]
        events: list[Event] = []
        if self._ended:
            return events
        try:
            self._decode(view, base, events)
        except FrameError as error:
            self._error = error
            raise
        return events

    def close(self) -> None:
        """Signal the end of input; raises FrameError if the stream stops where the mode does not allow."""
        if self._error is not None:
            raise self._error
        self._closed = True
        if self._head or self._remaining:
            self._fail(f"the stream ends in the middle of a frame (at byte {self._fed})")
        if self._body and not self._ended:
            self._fail("the body is empty" if self._fed == 0 else "the body has no EndFrame")

    def _fail(self, reason: str) -> NoReturn:
        self._error = FrameError(reason)
        raise self._error

    def _decode(self, view: memoryview, base: int, events: list[Event]) -> None:
        pos = 0
        end = len(view)
        while pos < end and not self._ended:
            if self._remaining:
                take = min(self._remaining, end - pos)
                if self._message is None:
                    events.append(ChunkData(view[pos : pos + take]))
                else:
                    self._message += view[pos : pos + take]
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._end_payload(events)
            elif self._head:
                take = min(self._head_need - len(self._head), end - pos)
                self._head += view[pos : pos + take]
                pos += take
                if len(self._head) == self._head_need:
                    head_start = base + pos - len(self._head)
                    self._head_need = self._start_frame(self._head, 0, len(self._head), events, head_start)
                    if self._head_need == len(self._head):
                        self._head.clear()
            else:
                need = self._start_frame(view, pos, end - pos, events, base + pos)
                if need > end - pos:
                    self._head += view[pos:end]
                    self._head_need = need
                    pos = end
                else:
                    pos += need
            if not self._remaining and not self._head:
                self._complete = base + pos

    def _start_frame(self, buf: Buffer, start: int, avail: int, events: list[Event], stream_pos: int) -> int:
        """Parse the header at ``buf[start:start+avail]`` (stream offset ``stream_pos``); return its full length.

        When fewer bytes are available than that length, nothing is consumed; otherwise the frame starts.
        Everything the fixed 16 bytes decide is checked as soon as they are there, so a bad or oversized
        frame is refused before its extended header or payload is waited for.
        """
        if avail < HEADER_SIZE:
            return HEADER_SIZE
        ftype, ext_size, size = _HEADER.unpack_from(buf, start)
        self._check_header(ftype, ext_size, size)
        header_len = HEADER_SIZE + ext_size
        if avail < header_len:
            return header_len

        if ftype == _CHUNK:
            events.append(
                ChunkStart(bytes(buf[start + HEADER_SIZE : start + header_len]), size, stream_pos + header_len)
            )
        elif ftype == _RANGE:
            chunk_id, offset, length, flags = _RANGE_EXT.unpack_from(buf, start + HEADER_SIZE)
            if length != size:
                self._fail(f"frame {self._frames + 1}: ChunkRange Length {length} differs from PayloadSize {size}")
            if flags not in (0, FLAG_END_OF_CHUNK):
                self._fail(f"frame {self._frames + 1}: ChunkRange Flags {flags} is neither 0 nor 1")
            events.append(ChunkRangeStart(chunk_id, offset, length, flags == FLAG_END_OF_CHUNK))
        elif ftype == _MESSAGE:
            self._message = bytearray()  # grows as the text arrives, never to more than the checked size

        self._remaining = size
        if ftype == _END:
            self._frames += 1
            self._ended = True
            events.append(_END_FRAME_EVENT)
        elif not size:
            self._end_payload(events)
        return header_len

    def _check_header(self, ftype: int, ext_size: int, size: int) -> None:
        frame_no = self._frames + 1
        expected_ext = EXTENDED_HEADER_SIZES.get(ftype)
        if expected_ext is None:
            self._fail(f"frame {frame_no} has unknown FrameType {ftype}")
        if ext_size != expected_ext:
            self._fail(f"frame {frame_no} (type {ftype}) has ExtendedHeaderSize {ext_size}, expected {expected_ext}")
        if not self._body:
            if ftype != _CHUNK:
                self._fail(f"frame {frame_no} has type {ftype}; an upload session holds only Chunk frames")
        elif self._frames == 0 and ftype != _MESSAGE:
            self._fail(f"the first frame has type {ftype}, not MessageJSON")
        elif self._frames and ftype == _MESSAGE:
            self._fail(f"frame {frame_no} is a second MessageJSON")
        if ftype == _END:
            if size:
                self._fail(f"EndFrame has PayloadSize {size}, expected 0")
        elif ftype == _MESSAGE:
            if size > self._max_message:
                self._fail(f"MessageJSON of {size} bytes exceeds the limit of {self._max_message}")
        elif size > self._max_payload:
            self._fail(f"frame {frame_no} payload of {size} bytes exceeds the limit of {self._max_payload}")

    def _end_payload(self, events: list[Event]) -> None:
        self._frames += 1
        if self._message is None:
            events.append(_CHUNK_END_EVENT)
            return
        text, self._message = self._message, None
        events.append(MessageJSON(parse_json(text)))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes | bytearray) -> Any:
    """UTF-8 JSON (a leading byte order mark allowed), as a MessageJSON frame holds it; FrameError if it is not."""
    try:
        text = raw.decode("utf-8")  # explicitly: json.loads(bytes) would also accept UTF-16 and UTF-32
    except UnicodeDecodeError as error:
        raise FrameError(f"MessageJSON is not valid UTF-8 (byte {error.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise FrameError("MessageJSON is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, NaN/Infinity, an integer too long to convert
        detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise FrameError(f"MessageJSON is not valid JSON: {detail[:100]}") from None


def message_frame_size(body: Buffer) -> int | None:
    """How many bytes the MessageJSON frame that `body` starts with takes, header and payload; None unless `body`
    starts with a whole one. The framing is checked, not the JSON (parse_json does that)."""
    view = memoryview(body)
    if view.nbytes < HEADER_SIZE:
        return None
    ftype, ext_size, size = _HEADER.unpack_from(view)
    if ftype != _MESSAGE or ext_size or HEADER_SIZE + size > view.nbytes:
        return None
    return HEADER_SIZE + size


# Encoder


def message_frame(value: Any) -> bytes:
    """A MessageJSON frame: compact JSON, ASCII-escaped so any Python str (even a lone surrogate) encodes."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")
    return _HEADER.pack(FrameType.MESSAGE_JSON, 0, len(text)) + text


def chunk_frame(chunk_id: bytes | str, payload: Payload, size: int | None = None) -> Iterator[bytes]:
    """A Chunk frame as byte pieces: the 32-byte header, then the payload.

    ``payload`` is one bytes-like object, or an iterable of bytes-like pieces whose total ``size`` must be
    given up front (the header carries it). ``chunk_id`` is the raw 16 bytes or the Base64 string.
    """
    return _frame(FrameType.CHUNK, _raw_chunk_id(chunk_id), payload, size, None)


def chunk_range_frame(
    chunk_id: bytes | str,
    offset: int,
    payload: Payload,
    *,
    end_of_chunk: bool,
    size: int | None = None,
) -> Iterator[bytes]:
    """A ChunkRange frame for the range of ``chunk_id`` starting at ``offset``; see ``chunk_frame``."""
    if not 0 <= offset < 1 << 64:
        raise ValueError(f"offset {offset} out of range")
    raw = _raw_chunk_id(chunk_id)
    return _frame(FrameType.CHUNK_RANGE, raw, payload, size, (offset, int(end_of_chunk)))


def encode_body(message: Any, frames: Iterable[Iterable[bytes]] = ()) -> Iterator[bytes]:
    """A whole body: MessageJSON, the given frames' pieces, EndFrame."""
    yield message_frame(message)
    for frame in frames:
        yield from frame
    yield END_FRAME


def _raw_chunk_id(chunk_id: bytes | str) -> bytes:
    if isinstance(chunk_id, str):
        return decode_chunk_id(chunk_id)
    if len(chunk_id) != 16:
        raise ChunkIdError(f"a raw ChunkId is 16 bytes, not {len(chunk_id)}")
    return bytes(chunk_id)


def _frame(
    ftype: FrameType,
    raw_id: bytes,
    payload: Payload,
    size: int | None,
    range_info: tuple[int, int] | None,
) -> Iterator[bytes]:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        single = memoryview(payload).cast("B")
        if size is not None and size != single.nbytes:
            raise ValueError(f"size {size} differs from the payload's {single.nbytes} bytes")
        size = single.nbytes
        pieces: Iterable[Buffer] = (payload,)
    elif size is None:
        raise ValueError("size is required when the payload is an iterable of pieces")
    else:
        pieces = payload
    if not 0 <= size < 1 << 64:
        raise ValueError(f"payload size {size} out of range")
    ext = raw_id if range_info is None else _RANGE_EXT.pack(raw_id, range_info[0], size, range_info[1])
    return _pieces(_HEADER.pack(ftype, len(ext), size) + ext, pieces, size)


def _pieces(header: bytes, pieces: Iterable[Buffer], size: int) -> Iterator[bytes]:
    # WSGI servers want bytes: bytes pieces pass through untouched, other buffers are copied once.
    yield header
    sent = 0
    for piece in pieces:
        if not isinstance(piece, bytes):
            piece = bytes(piece)
        sent += len(piece)
        if sent > size:
            raise ValueError(f"payload pieces exceed the declared size {size}")
        if piece:
            yield piece
    if sent != size:
        raise ValueError(f"payload pieces total {sent} bytes, the header declared {size}")
