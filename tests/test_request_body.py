"""Reading request bodies straight from gunicorn's socket (wopi/body.py), with gunicorn's own reader objects.

What matters besides the bytes: gunicorn's bookkeeping must stay exact, so that keep-alive, pipelined requests
and its discarding of unread bodies work as if its wsgi.input had been read.
"""

import io
import socket
import threading

import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader

from wopihost.body import GunicornSocketSource, RequestBody, StreamSource
from wopihost.errors import WopiError

NEXT_REQUEST = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def gunicorn_input(sock, read_ahead: bytes, length: int) -> tuple[dict, SocketUnreader, LengthReader]:
    """What gunicorn hands the app after parsing the head: `read_ahead` is what it received past the head."""
    unreader = SocketUnreader(sock)
    unreader.unread(read_ahead)
    reader = LengthReader(unreader, length)
    return {"wsgi.input": Body(reader), "gunicorn.socket": sock}, unreader, reader


def read_all(body: RequestBody, buffer_size: int = 1 << 16) -> bytes:
    out, view = bytearray(), memoryview(bytearray(buffer_size))
    while n := body.readinto(view):
        out += view[:n]
    return bytes(out)


def test_the_body_comes_whole_and_a_pipelined_request_stays_gunicorns(pair):
    server, client = pair
    body = bytes(range(256)) * 4096  # 1 MiB
    environ, unreader, reader = gunicorn_input(server, body[:5000], len(body))
    sender = threading.Thread(target=client.sendall, args=(body[5000:] + NEXT_REQUEST,))
    sender.start()
    source = GunicornSocketSource.of(environ)
    assert source is not None
    assert read_all(RequestBody(source, len(body)), buffer_size=3000) == body
    sender.join()
    assert reader.length == 0  # gunicorn knows the body was read
    assert unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST  # and the next request is intact


def test_read_ahead_past_a_short_body_is_given_back(pair):
    server, _ = pair
    environ, unreader, reader = gunicorn_input(server, b"hello" + NEXT_REQUEST, 5)
    body = RequestBody(GunicornSocketSource.of(environ), 5)
    assert body.read(100) == b"hello" and body.read(100) == b""
    assert reader.length == 0 and unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST


def test_a_body_cut_short_is_400_and_gunicorn_knows_what_is_missing(pair):
    server, client = pair
    environ, _, reader = gunicorn_input(server, b"abc", 100)
    client.sendall(b"defg")
    client.shutdown(socket.SHUT_WR)  # the client hangs up after 7 of 100 bytes
    body = RequestBody(GunicornSocketSource.of(environ), 100)
    with pytest.raises(WopiError) as failed:
        read_all(body)
    assert failed.value.status == 400 and "93 bytes before its Content-Length" in failed.value.reason
    assert reader.length == 93


def test_other_inputs_are_read_through_wsgi_input(pair):
    server, _ = pair
    environ, unreader, _ = gunicorn_input(server, b"", 5)
    assert GunicornSocketSource.of({**environ, "gunicorn.socket": None}) is None  # not gunicorn's socket
    assert GunicornSocketSource.of({"wsgi.input": io.BytesIO(b"x"), "gunicorn.socket": server}) is None
    chunked = {"wsgi.input": Body(ChunkedReader({}, unreader)), "gunicorn.socket": server}
    assert GunicornSocketSource.of(chunked) is None
    started = gunicorn_input(server, b"hello", 5)[0]
    started["wsgi.input"].buf.write(b"h")  # part of the body already read through wsgi.input
    assert GunicornSocketSource.of(started) is None


def test_stream_source_reads_any_file_like_input():
    body = RequestBody(StreamSource(io.BytesIO(b"0123456789")), 10)
    assert body.read(4) == b"0123" and read_all(body) == b"456789"
    with pytest.raises(WopiError):
        read_all(RequestBody(StreamSource(io.BytesIO(b"short")), 10))
