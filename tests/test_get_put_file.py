"""GetFile and PutFile (docs/wopi.md §3.2, §3.3, the PutFile row of §2.2, §7 items 4-5)."""

import io
import os
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest

from wopihost.clock import parse_iso
from wopihost.errors import WopiError

from .helpers import revoke_or_expire, statements_sent, stored_blobs, while_the_body_comes

# -- GetFile --------------------------------------------------------------------------


def test_get_file_returns_content_length_and_version(wopi):
    response = wopi.get_file()
    assert response.status_int == 200
    assert response.body == b"hello world"
    assert response.headers["Content-Length"] == "11"
    assert response.headers["X-WOPI-ItemVersion"] == "1"
    assert response.content_type == "application/octet-stream"


def test_get_file_is_dated_with_the_current_second(wopi):
    before = int(time.time())
    date = parsedate_to_datetime(wopi.get_file().headers["Date"]).timestamp()
    assert before <= date <= time.time()


def test_get_file_does_not_change_the_version(wopi):
    wopi.get_file()
    assert wopi.check_file_info().json["Version"] == "1"


@pytest.mark.parametrize("limit, status", [("10", 412), ("11", 200), ("2147483647", 200)])
def test_get_file_max_expected_size(wopi, limit, status):
    response = wopi.get_file(X_WOPI_MaxExpectedSize=limit)
    assert response.status_int == status
    if status == 412:
        assert "X-WOPI-MaxExpectedSize" in response.headers["X-WOPI-FailureReason"]


def test_get_file_without_max_expected_size_assumes_32_bit_limit(make_file, client_for, services):
    assert client_for(make_file(b"x" * 100)).get_file().status_int == 200


@pytest.mark.parametrize("limit", ["-1", "ten", "1e3", "12 bytes", "\u00b2"])
def test_get_file_malformed_max_expected_size_is_400(wopi, limit):
    response = wopi.get_file(X_WOPI_MaxExpectedSize=limit)
    assert response.status_int == 400
    assert "X-WOPI-MaxExpectedSize" in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize(
    "range_header, status, body, content_range",
    [
        ("bytes=0-4", 206, b"hello", "bytes 0-4/11"),
        ("bytes=6-", 206, b"world", "bytes 6-10/11"),
        ("bytes=-3", 206, b"rld", "bytes 8-10/11"),
        ("bytes=-20", 206, b"hello world", "bytes 0-10/11"),  # a suffix longer than the file: all of it
    ],
)
def test_get_file_range(wopi, range_header, status, body, content_range):
    response = wopi.get_file(Range=range_header)
    assert response.status_int == status
    assert response.body == body
    assert response.headers["Content-Range"] == content_range
    assert response.headers["Content-Length"] == str(len(body))


def test_get_file_offers_ranges_and_an_etag(wopi):
    response = wopi.get_file()
    assert response.headers["Accept-Ranges"] == "bytes" and response.headers["ETag"]
    assert "Content-Range" not in response.headers


def test_a_plain_get_file_has_the_headers_a_conditional_one_that_holds_has(wopi):
    """A download without Range or conditions skips Werkzeug's make_conditional, which would only add
    Accept-Ranges: the same headers as one whose condition make_conditional evaluates and finds met."""
    plain = wopi.get_file()
    conditional = wopi.get_file(If_Modified_Since="Sat, 01 Jan 2000 00:00:00 GMT")
    assert plain.status_int == conditional.status_int == 200 and plain.body == conditional.body
    assert sorted((k, v) for k, v in plain.headerlist if k != "Date") == sorted(
        (k, v) for k, v in conditional.headerlist if k != "Date"
    )


def test_get_file_conditions_on_the_etag(wopi):
    etag = wopi.get_file().headers["ETag"]
    assert wopi.get_file(If_None_Match=etag).status_int == 304
    assert wopi.get_file(If_None_Match='"other"').status_int == 200
    assert wopi.get_file(If_Match='"other"').status_int == 412
    assert wopi.get_file(If_Match=etag).status_int == 200
    whole = wopi.get_file(Range="bytes=0-4", If_Range='"other"')  # the range is of another version: all of it
    assert whole.status_int == 200 and whole.body == b"hello world"
    part = wopi.get_file(Range="bytes=0-4", If_Range=etag)
    assert part.status_int == 206 and part.body == b"hello"
    weak = wopi.get_file(Range="bytes=0-4", If_Range=f"W/{etag}")  # RFC 9110 §13.1.5: never matches
    assert weak.status_int == 200 and weak.body == b"hello world"


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=0-4"}], ids=["whole", "range"])
def test_a_failed_if_match_is_a_412_error_without_the_content(wopi, headers):
    """Checked before any Range (RFC 9110 §13.2.2); an error like every other, with its reason and no bytes."""
    response = wopi.get_file(If_Match='"other"', **headers)
    assert response.status_int == 412
    assert response.body == b"" and response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("range_header", ["bytes=50-60", "bytes=50-60,11-", "bytes=-0", "bytes=11-,-0"])
def test_get_file_unsatisfiable_range_is_416(wopi, range_header):
    response = wopi.get_file(Range=range_header)
    assert response.status_int == 416 and response.headers["Content-Range"] == "bytes */11"
    assert response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize(
    "range_header, body, content_range",
    [
        ("bytes=0-1,", b"he", "bytes 0-1/11"),
        ("bytes=, 6-", b"world", "bytes 6-10/11"),
        ("bytes=,-3,,", b"rld", "bytes 8-10/11"),
    ],
)
def test_empty_elements_of_the_range_list_are_skipped(wopi, range_header, body, content_range):
    """RFC 9110 §5.6.1.2: a recipient ignores empty list elements; one range is left, and honoured."""
    response = wopi.get_file(Range=range_header)
    assert response.status_int == 206 and response.body == body and response.headers["Content-Range"] == content_range


@pytest.mark.parametrize("range_header", ["bytes=4-1", "bytes=a-b", "bytes=1-2-3", "bytes=", "bytes=,"])
def test_a_malformed_range_is_416(wopi, range_header):
    response = wopi.get_file(Range=range_header)
    assert response.status_int == 416 and response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("range_header", ["bytes=0-", "bytes=5-9", "bytes=-0", "bytes=0-1,3-4"])
def test_only_a_suffix_of_an_empty_file_can_be_satisfied(make_file, client_for, range_header):
    """RFC 9110 §14.1.1: of a representation of no bytes, only a suffix of more than none can be satisfied."""
    response = client_for(make_file(b"")).get_file(Range=range_header)
    assert response.status_int == 416 and response.headers["Content-Range"] == "bytes */0"


def test_if_range_decides_for_an_empty_file_too(make_file, client_for):
    """RFC 9110 §13.1.5: If-Range with the current ETag lets the Range be judged (of no bytes: 416); with another
    one, the whole file."""
    wopi = client_for(make_file(b""))
    etag = wopi.get_file().headers["ETag"]
    held = wopi.get_file(Range="bytes=0-0", If_Range=etag)
    assert held.status_int == 416 and held.headers["Content-Range"] == "bytes */0"
    other = wopi.get_file(Range="bytes=0-0", If_Range='"other"')
    assert other.status_int == 200 and other.body == b""


@pytest.mark.parametrize("range_header", ["bytes=-5", "bytes=0-1,-5"])
def test_a_suffix_of_an_empty_file_is_the_whole_empty_file(make_file, client_for, range_header):
    """Satisfiable (RFC 9110 §14.1.1), and no Content-Range can say an empty range: the whole file, 200."""
    response = client_for(make_file(b"")).get_file(Range=range_header)
    assert response.status_int == 200 and response.body == b"" and "Content-Range" not in response.headers


def test_a_range_in_a_unit_other_than_bytes_is_ignored(wopi):
    """RFC 9110 §14.2: a server ignores a range unit it does not know."""
    response = wopi.get_file(Range="items=0-4")
    assert response.status_int == 200 and response.body == b"hello world" and "Content-Range" not in response.headers


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-1,4-5",
        "bytes=0-4, 50-60",
        "bytes=3-4,0-1",  # out of order
        "bytes=0-1,1-2",  # overlapping
        "bytes=-2,0-1",  # a suffix first
        "bytes=50-60,-2",  # the first unsatisfiable, the second not
    ],
)
def test_several_ranges_are_ignored(wopi, range_header):
    """RFC 9110 §14.2: a server may ignore a Range; a 416 would say that none of the ranges can be satisfied."""
    response = wopi.get_file(Range=range_header)
    assert response.status_int == 200 and response.body == b"hello world" and "Content-Range" not in response.headers


def test_get_file_streams_large_content(make_file, client_for):
    content = os.urandom(3 * (1 << 20) // 4)
    assert client_for(make_file(content)).get_file().body == content


# -- PutFile --------------------------------------------------------------------------


def test_put_file_with_matching_lock(wopi, services):
    wopi.lock("L")
    response = wopi.put_file(b"new content", lock="L")
    assert response.status_int == 200
    assert response.headers["X-WOPI-ItemVersion"] == "2"
    assert "X-WOPI-Lock" not in response.headers
    assert wopi.get_file().body == b"new content"
    info = wopi.check_file_info().json
    assert info["Version"] == "2" and info["Size"] == 11
    assert response.json["LastModifiedTime"] == info["LastModifiedTime"]
    assert services.files.get(wopi.file_id).sequence_number == 2


@pytest.mark.local_storage  # an object store's writer also records its hold on the new object (holds.py)
def test_put_file_checks_the_lock_before_the_body_then_changes_in_one_transaction(wopi, services, tmp_path):
    """Issue 13's round trips for PutFile: the request's one read, a read of the lock so that a conflict is
    answered before the body is taken, and after the body one transaction that checks the lock again and
    replaces the content."""
    wopi.lock("L")
    with statements_sent(services, tmp_path) as sent:
        assert wopi.put_file(b"new content", lock="L").status_int == 200
    assert sent[:3] == ["SELECT", "SELECT", "BEGIN"] and sent[-1] == "COMMIT"
    assert "BEGIN" not in sent[3:] and "COMMIT" not in sent[:-1]
    assert "UPDATE" in sent


def test_every_put_makes_a_new_version_even_for_identical_content(wopi):
    wopi.lock("L")
    versions = {wopi.put_file(b"same", lock="L").headers["X-WOPI-ItemVersion"] for _ in range(3)}
    assert len(versions) == 3
    assert wopi.get_file().headers["X-WOPI-ItemVersion"] == wopi.check_file_info().json["Version"]


def test_put_file_with_wrong_lock_conflicts(wopi):
    wopi.lock("L")
    response = wopi.put_file(b"new", lock="other")
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == "L"
    assert wopi.get_file().body == b"hello world"


def test_put_file_without_lock_on_locked_file_conflicts(wopi):
    wopi.lock("L")
    response = wopi.put_file(b"new")
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == "L"


@pytest.mark.parametrize("lock", [None, "", "some-lock"])
def test_put_file_on_unlocked_non_empty_file_conflicts(wopi, lock):
    response = wopi.put_file(b"new", lock=lock)
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == ""
    assert wopi.get_file().body == b"hello world"


@pytest.mark.parametrize("lock", [None, "some-lock"])
def test_put_file_on_unlocked_empty_file_is_allowed(make_file, client_for, lock):
    wopi = client_for(make_file(b""))
    response = wopi.put_file(b"template content", lock=lock)
    assert response.status_int == 200
    assert response.headers["X-WOPI-ItemVersion"] == "2"
    assert wopi.get_file().body == b"template content"


def test_put_file_on_expired_lock_follows_the_unlocked_rules(wopi, clock):
    wopi.lock("L")
    clock.advance(minutes=31)
    response = wopi.put_file(b"new", lock="L")
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == ""


def test_put_file_larger_than_the_limit_is_413_and_keeps_the_old_content(wopi, settings, services):
    wopi.lock("L")
    response = wopi.put_file(b"x" * (settings.max_file_size + 1), lock="L")
    assert response.status_int == 413
    assert response.headers["X-WOPI-FailureReason"]
    assert wopi.get_file().body == b"hello world"
    assert services.blobs.partial_writes() == []


def test_put_file_chunked_body_without_content_length(wopi):
    wopi.lock("L")
    response = wopi.raw_post("/contents", io.BytesIO(b"chunked body"), None, X_WOPI_Override="PUT", X_WOPI_Lock="L")
    assert response.status_int == 200
    assert wopi.get_file().body == b"chunked body"


def test_put_file_413_for_a_chunked_body_without_content_length(wopi, settings, services):
    """No Content-Length to check up front: the limit is enforced while streaming."""
    wopi.lock("L")
    body = io.BytesIO(b"x" * (settings.max_file_size + 1))
    response = wopi.raw_post("/contents", body, None, X_WOPI_Override="PUT", X_WOPI_Lock="L")
    assert response.status_int == 413
    assert wopi.get_file().body == b"hello world"
    assert services.blobs.partial_writes() == []


def test_put_file_needs_a_write_token(make_file, client_for):
    file = make_file(b"")
    response = client_for(file, can_write=False).put_file(b"new")
    assert response.status_int == 404
    assert client_for(file).get_file().body == b""


def test_put_file_replaces_the_blob_and_deletes_the_old_one(wopi, settings, services):
    before = sorted(stored_blobs(services))
    wopi.lock("L")
    wopi.put_file(b"new content", lock="L")
    after = sorted(stored_blobs(services))
    assert len(before) == len(after) == 1 and before != after


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_put_file_comes_saves_nothing(wopi, services, clock, how):
    """The token was live when PutFile began, and is not once its body is in: 401, and the file is as it was."""
    wopi.lock("L")
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token
    blobs = stored_blobs(services)

    def meanwhile() -> None:
        revoke_or_expire(services, clock, wopi.token, how)

    answer = while_the_body_comes(lambda held: wopi.put_file_from(held, 4096, lock="L"), b"x" * 4096, meanwhile)
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    assert services.files.get(wopi.file_id).version == 1
    assert stored_blobs(services) == blobs


# -- Collabora's timestamp check (lessons-from-peers item 8) --------------------------


def test_put_file_with_current_cool_timestamp_succeeds(wopi):
    wopi.lock("L")
    loaded = wopi.check_file_info().json["LastModifiedTime"]
    assert wopi.put_file(b"v2", lock="L", X_COOL_WOPI_Timestamp=loaded).status_int == 200


def test_put_file_with_stale_cool_timestamp_is_1010_conflict(wopi, clock):
    """With the headers of every PutFile 409 (docs/wopi.md §3.3): X-WOPI-Lock and X-WOPI-LockFailureReason."""
    wopi.lock("L")
    loaded = wopi.check_file_info().json["LastModifiedTime"]
    clock.advance(seconds=5)
    wopi.put_file(b"changed elsewhere", lock="L")
    response = wopi.put_file(b"stale editor", lock="L", X_COOL_WOPI_Timestamp=loaded)
    assert response.status_int == 409
    assert response.json == {"COOLStatusCode": 1010, "LOOLStatusCode": 1010}
    assert response.headers["X-WOPI-Lock"] == "L"
    assert "changed in storage" in response.headers["X-WOPI-LockFailureReason"]
    assert wopi.get_file().body == b"changed elsewhere"


@pytest.mark.parametrize("stamp", ["yesterday", "0001-01-01T00:00:00+01:00"])  # the second: before year 1 in UTC
def test_put_file_malformed_cool_timestamp_is_400(wopi, stamp):
    wopi.lock("L")
    response = wopi.put_file(b"v2", lock="L", X_COOL_WOPI_Timestamp=stamp)
    assert response.status_int == 400
    assert "X-COOL-WOPI-Timestamp" in response.headers["X-WOPI-FailureReason"]


def test_last_modified_time_round_trips_through_the_parser(wopi):
    text = wopi.check_file_info().json["LastModifiedTime"]
    assert parse_iso(text) is not None


# -- crash safety ---------------------------------------------------------------------


class BrokenBody(io.RawIOBase):
    """A request body whose client goes away after `good` bytes."""

    def __init__(self, good: int):
        self.left = good

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(len(buffer), self.left, 1000)
        buffer[:n] = b"y" * n
        self.left -= n
        return n


def test_interrupted_put_file_leaves_old_content_and_no_partial_file(wopi, settings, services):
    wopi.lock("L")
    with pytest.raises(ConnectionResetError):
        services.files.put(wopi.file_id, BrokenBody(5000), "L")
    assert wopi.get_file().body == b"hello world"
    assert wopi.check_file_info().json["Version"] == "1"
    assert services.blobs.partial_writes() == []
    assert len(sorted(stored_blobs(services))) == 1


@pytest.mark.parametrize("terminated", [False, True], ids=["werkzeug-limited", "gunicorn-terminated"])
def test_body_shorter_than_content_length_is_400_and_keeps_old_content(wopi, settings, terminated, services):
    wopi.lock("L")
    response = wopi.raw_post(
        "/contents", io.BytesIO(b"only part"), 1000, terminated, X_WOPI_Override="PUT", X_WOPI_Lock="L"
    )
    assert response.status_int == 400
    assert response.headers["X-WOPI-FailureReason"]
    assert wopi.get_file().body == b"hello world"
    assert services.blobs.partial_writes() == []


def test_put_file_on_a_file_deleted_during_upload_is_404_and_leaves_no_blob(make_file, services, settings):
    file = make_file(b"")  # unlocked and empty, so PutFile without a lock may start

    class DeletesMidway(io.RawIOBase):
        sent = False

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.sent:
                return 0
            services.files.delete(file.id)
            self.sent = True
            buffer[:3] = b"abc"
            return 3

    with pytest.raises(WopiError) as excinfo:
        services.files.put(file.id, DeletesMidway(), None)
    assert excinfo.value.status == 404
    assert sorted(stored_blobs(services)) == []


def test_put_file_with_an_over_long_lock_id_is_400(wopi):
    wopi.lock("L")
    response = wopi.put_file(b"new", lock="x" * 1025)
    assert response.status_int == 400
    assert "1024" in response.headers["X-WOPI-FailureReason"]
    assert wopi.get_file().body == b"hello world"
