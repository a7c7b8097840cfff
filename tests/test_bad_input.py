"""Input no handler expects gets a 400 that names what was wrong, never a 500, and changes nothing.

Each case here once reached the database or int() unchecked: integers longer than Python converts,
lone surrogates (JSON's "\\ud800", UTF-7's "+2AA-") that no driver can encode, and NUL characters,
which PostgreSQL's text cannot hold. They run on every database backend.
"""

import gzip
import io
import json

import pytest

from wopihost.cspp.frames import END_FRAME, message_frame
from wopihost.cspp.wire import put_chunked_body

from .cspp_helpers import create_session, full_file, put_chunked, update_session

HUGE = "9" * 5000  # more digits than int() converts
TOO_LONG = str(2**63)  # one past the largest .NET long


@pytest.fixture
def locked(wopi):
    assert wopi.lock("L").status_int == 200
    return wopi


def assert_400(response, *words: str):
    assert response.status_int == 400, response.headers
    reason = response.headers["X-WOPI-FailureReason"]
    for word in words:
        assert word in reason, reason


# -- integer headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [HUGE, TOO_LONG, "0" * 30 + TOO_LONG])
def test_max_expected_size_out_of_range_is_400_even_for_a_reader(make_file, client_for, value):
    reader = client_for(make_file(), can_write=False)
    assert_400(reader.get_file(X_WOPI_MaxExpectedSize=value), "X-WOPI-MaxExpectedSize")


def test_leading_zeros_do_not_count_against_the_range(wopi):
    assert wopi.get_file(X_WOPI_MaxExpectedSize="0" * 40 + "100").status_int == 200


@pytest.mark.parametrize("value", [HUGE, TOO_LONG])
def test_sequence_number_out_of_range_is_400(locked, value):
    signature, chunks = full_file(b"x")
    body = put_chunked_body({"MainContent": signature}, chunks)
    assert put_chunked(locked, {}, body=body, sequence=7, X_WOPI_Lock="L").status_int == 412  # well formed else
    assert_400(put_chunked(locked, {}, body=body, sequence=value, X_WOPI_Lock="L"), "X-WOPI-SequenceNumber")


@pytest.mark.parametrize("value", [HUGE, TOO_LONG])
def test_put_relative_size_out_of_range_is_400(wopi, value):
    response = wopi.op("PUT_RELATIVE", b"x", X_WOPI_SuggestedTarget="Copy.docx", X_WOPI_Size=value)
    assert_400(response, "X-WOPI-Size")


@pytest.mark.parametrize("header", ["X_WOPI_ContentRangeOffset", "X_WOPI_ContentRangeLength"])
@pytest.mark.parametrize("value", [HUGE, TOO_LONG])
def test_content_range_out_of_range_is_400(wopi, header, value):
    token = create_session(wopi)
    headers = {
        "X_WOPI_UploadSessionToken": token,
        "X_WOPI_ContentRangeOffset": "0",
        "X_WOPI_ContentRangeLength": "1",
        header: value,
    }
    assert_400(wopi.op("UPDATE_UPLOAD_SESSION", b"x", **headers), header.replace("_", "-"))
    assert update_session(wopi, token, 0, b"x").headers["X-WOPI-UploadSessionCurrentOffset"] == "1"


@pytest.mark.parametrize("value", [HUGE, TOO_LONG])
def test_coauth_timeout_out_of_range_is_400(wopi, value):
    response = wopi.op(
        "GET_COAUTH_LOCK",
        X_WOPI_CoauthLockId="C",
        X_WOPI_CoauthLockType="Coauth",
        X_WOPI_CoauthLockExpirationTimeout=value,
    )
    assert_400(response, "X-WOPI-CoauthLockExpirationTimeout")


# -- lone surrogates ----------------------------------------------------------------------------


def test_rename_to_a_lone_surrogate_is_400(wopi):
    response = wopi.op("RENAME_FILE", X_WOPI_RequestedName="+2AA-")
    assert_400(response, "surrogate")
    assert response.headers["X-WOPI-InvalidFileNameError"]
    assert wopi.check_file_info().json["BaseFileName"] == "Doc.docx"


def test_relative_target_with_a_lone_surrogate_is_400_with_a_valid_name(wopi, services):
    response = wopi.op("PUT_RELATIVE", b"x", X_WOPI_RelativeTarget="+2AA-.docx")
    assert_400(response, "surrogate")
    assert response.headers["X-WOPI-ValidRelativeTarget"] == "_.docx"
    assert len(services.files.list()) == 1


def test_relative_target_that_is_not_utf7_is_400_with_a_valid_name(wopi):
    response = wopi.op("PUT_RELATIVE", b"x", X_WOPI_RelativeTarget="Bad+ZZZ.docx")
    assert_400(response, "UTF-7")
    assert response.headers["X-WOPI-ValidRelativeTarget"] == "Bad+-ZZZ.docx"  # the raw text, UTF-7 encoded


def test_suggested_target_with_a_lone_surrogate_is_sanitised(wopi):
    response = wopi.op("PUT_RELATIVE", b"x", X_WOPI_SuggestedTarget="+2AA-.docx")
    assert response.status_int == 200
    assert response.json["Name"] == "_.docx"


def test_suggested_target_starting_with_a_dot_and_a_no_break_space_is_sanitised(wopi):
    response = wopi.op("PUT_RELATIVE", b"x", X_WOPI_SuggestedTarget=".+AKA-Copy.docx+AKA-")  # ".\xa0Copy.docx\xa0"
    assert response.status_int == 200
    assert response.json["Name"] == "Copy.docx"


def coauth_lock_with_body_metadata(wopi, metadata_json: str):
    return wopi.op(
        "GET_COAUTH_LOCK",
        f'{{"CoauthLockMetadata": {metadata_json}}}'.encode(),
        X_WOPI_CoauthLockId="C",
        X_WOPI_CoauthLockType="Coauth",
        X_WOPI_CoauthLockExpirationTimeout="600",
    )


@pytest.mark.parametrize("metadata, problem", [('"\\ud800"', "surrogate"), ('"a\\u0000b"', "NUL")])
def test_coauth_metadata_that_cannot_be_stored_is_400(wopi, metadata, problem):
    assert_400(coauth_lock_with_body_metadata(wopi, metadata), "metadata", problem)
    assert wopi.op("GET_COAUTH_TABLE").json["CoauthTable"] == []


def test_coauth_metadata_from_the_body_is_stored(wopi):
    response = coauth_lock_with_body_metadata(wopi, json.dumps("ünïcode"))
    assert response.json["CoauthTable"][0]["CoauthLockMetadata"] == "ünïcode"


@pytest.mark.parametrize("text, problem", [("\ud800", "surrogate"), ("a\x00b", "NUL")])
@pytest.mark.parametrize("where", ["Name", "Value", "StreamId"])
def test_put_chunked_file_text_that_cannot_be_stored_is_400(locked, text, problem, where):
    signature, chunks = full_file(b"hello")
    streams, properties = {"MainContent": signature}, [{"Name": "p", "Value": "v", "Retention": "KeepOnContentChange"}]
    if where == "StreamId":
        streams[text] = signature
    else:
        properties[0][where] = text
    response = put_chunked(locked, streams, chunks, properties=properties, X_WOPI_Lock="L")
    assert_400(response, where, problem)
    assert locked.get_file().body == b"hello world"


# -- NUL characters -----------------------------------------------------------------------------


def test_user_info_with_a_nul_is_400(wopi):
    assert_400(wopi.op("PUT_USER_INFO", b"a\x00b"), "UserInfo", "NUL")
    assert "UserInfo" not in wopi.check_file_info().json


@pytest.mark.parametrize("header", ["X_WOPI_Lock", "X_WOPI_CoauthLockId"])
def test_lock_ids_with_a_nul_are_400(wopi, header):
    headers = {header: "a\x00b"}
    if header == "X_WOPI_CoauthLockId":
        response = wopi.op(
            "GET_COAUTH_LOCK", X_WOPI_CoauthLockType="Coauth", X_WOPI_CoauthLockExpirationTimeout="600", **headers
        )
    else:
        response = wopi.op("LOCK", **headers)
    assert_400(response, header.replace("_", "-"), "NUL")


@pytest.mark.parametrize("token", ["a\x00b", "\xe9" * 22, "x" * 5000, "../../etc/passwd"])
def test_upload_session_tokens_we_never_issued_are_410(wopi, token):
    response = wopi.op(
        "UPDATE_UPLOAD_SESSION",
        b"x",
        X_WOPI_UploadSessionToken=token,
        X_WOPI_ContentRangeOffset="0",
        X_WOPI_ContentRangeLength="1",
    )
    assert response.status_int == 410, response.headers


@pytest.mark.parametrize("token", ["a\x00b", "\ud800", "x" * 5000])
def test_commit_tokens_we_never_issued_are_410(locked, token):
    signature, chunks = full_file(b"hello")
    message = {"Signatures": [signature.to_json("MainContent")], "UploadSessionTokenToCommit": token}
    response = locked.contents_op(
        "PUT_CHUNKED_FILE", message_frame(message) + END_FRAME, X_WOPI_Lock="L", X_WOPI_SequenceNumber="1"
    )
    assert response.status_int == 410, response.headers


# -- JSON nested past Python's recursion limit -------------------------------------------------


def test_deeply_nested_json_messages_are_400(wopi):
    response = wopi.op("GET_CHUNKED_FILE", b'{"ContentFilters": ' + b"[" * 50_000)
    assert_400(response, "nested too deeply")


def test_deeply_nested_coauth_body_is_no_metadata(wopi):
    response = wopi.op(
        "GET_COAUTH_LOCK",
        b"[" * 5000,
        X_WOPI_CoauthLockId="C",
        X_WOPI_CoauthLockType="Coauth",
        X_WOPI_CoauthLockExpirationTimeout="600",
    )
    assert response.status_int == 200
    assert response.json["CoauthTable"][0]["CoauthLockMetadata"] == ""


def test_a_malformed_commit_token_does_not_hide_a_lock_conflict(locked):
    signature, chunks = full_file(b"hello")
    message = {"Signatures": [signature.to_json("MainContent")], "UploadSessionTokenToCommit": "x" * 5000}
    response = locked.contents_op(
        "PUT_CHUNKED_FILE", message_frame(message) + END_FRAME, X_WOPI_Lock="other", X_WOPI_SequenceNumber="1"
    )
    assert response.status_int == 409 and response.headers["X-WOPI-Lock"] == "L"


@pytest.mark.parametrize("value", ["+11", "١١"])  # what WebTest lets through of what Werkzeug reads as 0
def test_a_content_length_that_is_no_number_is_400_and_changes_nothing(locked, value):
    """gunicorn and nginx refuse these themselves; another server may pass them on, and Werkzeug reads them as 0."""
    response = locked.raw_post("/contents", io.BytesIO(b"new content"), value, X_WOPI_Override="PUT", X_WOPI_Lock="L")
    assert response.status_int == 400 and "Content-Length" in response.headers["X-WOPI-FailureReason"]
    assert locked.get_file().body == b"hello world"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "chunked, gzip"])
def test_a_body_in_a_transfer_coding_the_host_does_not_decode_is_501_and_changes_nothing(locked, coding):
    """gunicorn accepts these codings and hands the coded bytes on: stored as they are, they would corrupt the file."""
    coded = gzip.compress(b"new content")
    response = locked.raw_post("/contents", io.BytesIO(coded), None, X_WOPI_Override="PUT", X_WOPI_Lock="L")
    assert response.status_int == 200  # chunked alone is understood
    response = locked.raw_post(
        "/contents", io.BytesIO(coded), None, X_WOPI_Override="PUT", X_WOPI_Lock="L", Transfer_Encoding=coding
    )
    assert response.status_int == 501 and "Transfer-Encoding" in response.headers["X-WOPI-FailureReason"]
    assert locked.get_file().body == coded
