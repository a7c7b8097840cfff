"""Coauth locks: GetCoauthLock, RefreshCoauthLock, UnlockCoauthLock, GetCoauthTable, and their WOPI-lock interplay."""

import json
from datetime import timedelta

import pytest

from wopihost.clock import to_epoch_ms

from .helpers import revoke_or_expire, while_the_body_comes


def get_lock(wopi, lock_id="C1", lock_type="Coauth", timeout="600", metadata=None, body=b"", **extra):
    headers = {
        "X_WOPI_CoauthLockId": lock_id,
        "X_WOPI_CoauthLockType": lock_type,
        "X_WOPI_CoauthLockExpirationTimeout": timeout,
        **extra,
    }
    if metadata is not None:
        headers["X_WOPI_CoauthLockMetadata"] = metadata
    return wopi.op("GET_COAUTH_LOCK", body, **{k: v for k, v in headers.items() if v is not None})


def refresh(wopi, lock_id="C1", timeout="600", metadata=None):
    headers = {"X_WOPI_CoauthLockId": lock_id, "X_WOPI_CoauthLockExpirationTimeout": timeout}
    if metadata is not None:
        headers["X_WOPI_CoauthLockMetadata"] = metadata
    return wopi.op("REFRESH_COAUTH_LOCK", **{k: v for k, v in headers.items() if v is not None})


def table(wopi, version: str = ""):
    return wopi.op("GET_COAUTH_TABLE", X_WOPI_CoauthTableVersion=version)


def rows(response) -> dict:
    return {row["CoauthLockId"]: row for row in response.json["CoauthTable"]}


# -- GetCoauthLock ---------------------------------------------------------------------------


def test_get_coauth_lock_answers_the_whole_table(wopi, clock):
    response = get_lock(wopi, metadata="meta")
    assert response.status_int == 200
    assert response.headers["X-WOPI-CoauthTableVersion"]
    assert response.json == {
        "CoauthTable": [
            {
                "CoauthLockId": "C1",
                "CoauthLockMetadata": "meta",
                "CoauthLockType": "Coauth",
                "UserFriendlyName": "alice",
                "CoauthLockTime": to_epoch_ms(clock.now()),
            }
        ]
    }
    second = get_lock(wopi, "C2", "CoauthExclusive")
    assert set(rows(second)) == {"C1", "C2"}
    assert rows(second)["C2"]["CoauthLockMetadata"] == ""  # never null
    assert second.headers["X-WOPI-CoauthTableVersion"] != response.headers["X-WOPI-CoauthTableVersion"]


@pytest.mark.parametrize(
    "kwargs, header",
    [
        ({"lock_id": None}, "X-WOPI-CoauthLockId"),
        ({"lock_id": "x" * 1025}, "X-WOPI-CoauthLockId"),
        ({"lock_type": None}, "X-WOPI-CoauthLockType"),
        ({"lock_type": ""}, "X-WOPI-CoauthLockType"),
        ({"lock_type": "None"}, "X-WOPI-CoauthLockType"),
        ({"timeout": None}, "X-WOPI-CoauthLockExpirationTimeout"),
        ({"timeout": "59"}, "X-WOPI-CoauthLockExpirationTimeout"),
        ({"timeout": "3601"}, "X-WOPI-CoauthLockExpirationTimeout"),
        ({"timeout": "ten"}, "X-WOPI-CoauthLockExpirationTimeout"),
        ({"metadata": "m" * 4097}, "metadata"),
    ],
)
def test_get_coauth_lock_bad_headers_are_400(wopi, kwargs, header):
    response = get_lock(wopi, **kwargs)
    assert response.status_int == 400
    assert header in response.headers["X-WOPI-FailureReason"]
    assert rows(table(wopi)) == {}


@pytest.mark.parametrize("timeout", ["60", "3600"])
def test_timeout_limits_are_inclusive(wopi, timeout):
    assert get_lock(wopi, timeout=timeout).status_int == 200


def test_lock_type_is_case_insensitive(wopi):
    assert rows(get_lock(wopi, lock_type="coauthexclusive"))["C1"]["CoauthLockType"] == "CoauthExclusive"


def test_metadata_may_come_in_the_body(wopi):
    response = get_lock(wopi, body=b'{"CoauthLockMetadata":"from body"}')
    assert rows(response)["C1"]["CoauthLockMetadata"] == "from body"


@pytest.mark.parametrize("how", ["revoked", "expired"])
@pytest.mark.parametrize("override", ["GET_COAUTH_LOCK", "REFRESH_COAUTH_LOCK"])
def test_a_token_revoked_or_expired_while_the_metadata_body_comes_takes_no_lock(wopi, services, clock, override, how):
    """The token was live when GetCoauthLock (RefreshCoauthLock) began, and is not once its metadata body is in:
    401, as PutFile's, and the table is as it was."""
    if override == "REFRESH_COAUTH_LOCK":
        get_lock(wopi, timeout="3600", metadata="before")
    before = table(wopi).json
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token
    body = json.dumps({"CoauthLockMetadata": "from body"}).encode()

    def meanwhile() -> None:
        revoke_or_expire(services, clock, wopi.token, how)

    headers = {"X_WOPI_CoauthLockId": "C1", "X_WOPI_CoauthLockExpirationTimeout": "3600"}
    if override == "GET_COAUTH_LOCK":
        headers["X_WOPI_CoauthLockType"] = "Coauth"
    answer = while_the_body_comes(
        lambda held: wopi.raw_post("", held, len(body), X_WOPI_Override=override, **headers), body, meanwhile
    )
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    wopi.token = services.issue_token(wopi.file_id, "alice", True).token
    assert table(wopi).json == before


def test_metadata_in_the_body_is_whole_up_to_the_limit_however_json_escapes_it(wopi):
    """.NET escapes every non-ASCII character (\u00e9: six bytes of JSON for two of UTF-8)."""
    metadata = "é" * 2048  # 4096 bytes of UTF-8: the limit
    body = json.dumps({"CoauthLockMetadata": metadata}).encode()  # ensure_ascii: 12 KiB
    assert rows(get_lock(wopi, body=body))["C1"]["CoauthLockMetadata"] == metadata


@pytest.mark.parametrize("metadata", ["m" * 4097, "m" * 30_000])
def test_metadata_in_the_body_over_the_limit_is_400(wopi, metadata):
    response = get_lock(wopi, body=json.dumps({"CoauthLockMetadata": metadata}).encode())
    assert response.status_int == 400 and "metadata" in response.headers["X-WOPI-FailureReason"]
    assert rows(table(wopi)) == {}


def test_same_id_again_keeps_lock_time_and_version_unless_something_shown_changes(wopi, clock):
    first = get_lock(wopi, metadata="m")
    clock.advance(seconds=30)
    again = get_lock(wopi, metadata="m")
    assert again.headers["X-WOPI-CoauthTableVersion"] == first.headers["X-WOPI-CoauthTableVersion"]
    assert rows(again)["C1"]["CoauthLockTime"] == rows(first)["C1"]["CoauthLockTime"]
    reset = get_lock(wopi)  # no metadata header: reset to ""
    assert rows(reset)["C1"]["CoauthLockMetadata"] == ""
    assert reset.headers["X-WOPI-CoauthTableVersion"] != again.headers["X-WOPI-CoauthTableVersion"]


@pytest.mark.parametrize("before, after", [("Coauth", "CoauthExclusive"), ("CoauthExclusive", "Coauth")])
def test_switching_type_changes_the_version(wopi, before, after):
    first = get_lock(wopi, lock_type=before)
    second = get_lock(wopi, lock_type=after)
    assert second.status_int == 200
    assert rows(second)["C1"]["CoauthLockType"] == after
    assert second.headers["X-WOPI-CoauthTableVersion"] != first.headers["X-WOPI-CoauthTableVersion"]


def test_only_one_exclusive_holder(wopi):
    get_lock(wopi, "X1", "CoauthExclusive")
    response = get_lock(wopi, "X2", "CoauthExclusive")
    assert response.status_int == 409
    assert "X-WOPI-CoauthTableVersion" not in response.headers
    get_lock(wopi, "C2", "Coauth")
    assert get_lock(wopi, "C2", "CoauthExclusive").status_int == 409  # no upgrade either
    assert rows(table(wopi))["C2"]["CoauthLockType"] == "Coauth"  # left as it was


def test_shared_and_exclusive_locks_mix(wopi):
    assert get_lock(wopi, "C1", "Coauth").status_int == 200
    assert get_lock(wopi, "X1", "CoauthExclusive").status_int == 200
    assert get_lock(wopi, "C2", "Coauth").status_int == 200
    assert {r["CoauthLockType"] for r in rows(table(wopi)).values()} == {"Coauth", "CoauthExclusive"}


def test_coauth_lock_on_a_wopi_locked_file_is_409(wopi):
    wopi.lock("C1")  # the id spaces are separate: the same string is no help
    response = get_lock(wopi, "C1")
    assert response.status_int == 409
    assert response.headers["X-WOPI-ConflictingMechanism"] == "WOPI-Lock"


def test_coauth_locks_are_not_owned_by_users(wopi, services, client_for):
    get_lock(wopi, "C1")
    bob = client_for(services.files.get(wopi.file_id), user="bob")
    assert refresh(bob, "C1").status_int == 200
    assert bob.op("UNLOCK_COAUTH_LOCK", X_WOPI_CoauthLockId="C1").status_int == 200


def test_changes_need_a_write_token(wopi, services, client_for):
    reader = client_for(services.files.get(wopi.file_id), can_write=False)
    assert get_lock(reader).status_int == 404
    get_lock(wopi)
    assert refresh(reader).status_int == 404
    assert reader.op("UNLOCK_COAUTH_LOCK", X_WOPI_CoauthLockId="C1").status_int == 404
    assert table(reader).status_int == 200  # reading the table needs no edit rights


# -- expiry ----------------------------------------------------------------------------------


def test_each_lock_expires_on_its_own_timeout(wopi, clock):
    get_lock(wopi, "short", timeout="60")
    get_lock(wopi, "long", timeout="3600")
    before = table(wopi)
    clock.advance(seconds=61)
    after = table(wopi)
    assert set(rows(after)) == {"long"}
    assert after.headers["X-WOPI-CoauthTableVersion"] != before.headers["X-WOPI-CoauthTableVersion"]
    assert refresh(wopi, "short").status_int == 409


def test_expired_exclusive_lock_no_longer_blocks(wopi, clock):
    get_lock(wopi, "X1", "CoauthExclusive", timeout="60")
    clock.advance(seconds=61)
    assert get_lock(wopi, "X2", "CoauthExclusive").status_int == 200


# -- RefreshCoauthLock -----------------------------------------------------------------------


def test_refresh_without_metadata_keeps_it_and_the_version(wopi, clock):
    first = get_lock(wopi, metadata="m", timeout="60")
    clock.advance(seconds=50)
    refreshed = refresh(wopi, timeout="60")
    assert refreshed.status_int == 200
    assert refreshed.headers["X-WOPI-CoauthTableVersion"] == first.headers["X-WOPI-CoauthTableVersion"]
    assert rows(refreshed)["C1"]["CoauthLockMetadata"] == "m"
    clock.advance(seconds=50)  # 100 s after the lock was taken, 50 after the refresh
    assert set(rows(table(wopi))) == {"C1"}


def test_refresh_with_metadata_changes_it_and_the_version(wopi):
    first = get_lock(wopi, metadata="old")
    refreshed = refresh(wopi, metadata="new")
    assert rows(refreshed)["C1"]["CoauthLockMetadata"] == "new"
    assert refreshed.headers["X-WOPI-CoauthTableVersion"] != first.headers["X-WOPI-CoauthTableVersion"]


def test_refresh_can_shorten_a_lock(wopi, clock):
    get_lock(wopi, timeout="3600")
    refresh(wopi, timeout="60")
    clock.advance(seconds=61)
    assert rows(table(wopi)) == {}


def test_refresh_of_no_lock_is_409(wopi):
    assert refresh(wopi).status_int == 409


@pytest.mark.parametrize(
    "kwargs", [{"lock_id": None}, {"lock_id": "x" * 1025}, {"timeout": None}, {"timeout": "59"}, {"timeout": "3601"}]
)
def test_refresh_bad_headers_are_400_before_anything_else(wopi, kwargs):
    assert refresh(wopi, **kwargs).status_int == 400


# -- UnlockCoauthLock --------------------------------------------------------------------------


def test_unlock_removes_one_lock(wopi):
    get_lock(wopi, "C1")
    get_lock(wopi, "C2")
    response = wopi.op("UNLOCK_COAUTH_LOCK", X_WOPI_CoauthLockId="C1")
    assert response.status_int == 200
    assert set(rows(table(wopi))) == {"C2"}


@pytest.mark.parametrize(
    "headers, status", [({"X_WOPI_CoauthLockId": "nope"}, 409), ({}, 400), ({"X_WOPI_CoauthLockId": "x" * 1025}, 400)]
)
def test_unlock_errors(wopi, headers, status):
    get_lock(wopi, "C1")
    assert wopi.op("UNLOCK_COAUTH_LOCK", **headers).status_int == status


# -- GetCoauthTable ----------------------------------------------------------------------------


def test_empty_table_has_a_version(wopi):
    response = table(wopi)
    assert response.status_int == 200
    assert response.json == {"CoauthTable": []}
    assert response.headers["X-WOPI-CoauthTableVersion"]


def test_table_with_the_clients_version_has_no_body(wopi):
    version = get_lock(wopi).headers["X-WOPI-CoauthTableVersion"]
    same = table(wopi, version)
    assert same.status_int == 200 and same.body == b""
    assert same.headers["X-WOPI-CoauthTableVersion"] == version
    get_lock(wopi, "C2")
    newer = table(wopi, version)
    assert set(rows(newer)) == {"C1", "C2"}
    assert newer.headers["X-WOPI-CoauthTableVersion"] != version


def test_table_of_a_wopi_locked_file_is_409(wopi):
    wopi.lock("L")
    assert table(wopi).status_int == 409


# -- WOPI locks while coauth locks hold the file ------------------------------------------------


@pytest.fixture
def coauthored(wopi):
    assert get_lock(wopi, "C1").status_int == 200
    return wopi


@pytest.mark.parametrize(
    "override, headers",
    [
        ("LOCK", {"X_WOPI_Lock": "L"}),
        ("LOCK", {"X_WOPI_Lock": "L", "X_WOPI_OldLock": "C1"}),
        ("REFRESH_LOCK", {"X_WOPI_Lock": "C1"}),
        ("UNLOCK", {"X_WOPI_Lock": "C1"}),
        ("GET_LOCK", {}),
        ("DELETE", {}),
        ("RENAME_FILE", {"X_WOPI_RequestedName": "New"}),
        ("PUT_RELATIVE", {"X_WOPI_RelativeTarget": "Doc.docx"}),  # a taken name, a target held by coauth locks
        ("PUT_RELATIVE", {"X_WOPI_RelativeTarget": "Doc.docx", "X_WOPI_OverwriteRelativeTarget": "True"}),
    ],
)
def test_wopi_operations_conflict_without_naming_a_lock(coauthored, override, headers):
    response = coauthored.op(override, **headers)
    assert response.status_int == 409
    assert "X-WOPI-Lock" not in response.headers
    assert response.headers["X-WOPI-FailureReason"]


def test_put_file_conflicts(coauthored):
    response = coauthored.put_file(b"x", lock="C1")
    assert response.status_int == 409 and "X-WOPI-Lock" not in response.headers


def test_rename_with_a_live_coauth_lock(coauthored):
    response = coauthored.op("RENAME_FILE", X_WOPI_RequestedName="New", X_WOPI_CoauthLockId="C1")
    assert response.status_int == 200
    assert coauthored.op("RENAME_FILE", X_WOPI_RequestedName="Other", X_WOPI_CoauthLockId="C9").status_int == 409


def test_rename_with_both_lock_headers_is_400(coauthored):
    response = coauthored.op("RENAME_FILE", X_WOPI_RequestedName="New", X_WOPI_CoauthLockId="C1", X_WOPI_Lock="L")
    assert response.status_int == 400


def test_wopi_lock_is_possible_once_coauth_locks_are_gone(coauthored, clock):
    coauthored.op("UNLOCK_COAUTH_LOCK", X_WOPI_CoauthLockId="C1")
    assert coauthored.lock("L").status_int == 200
    assert get_lock(coauthored, "C2").status_int == 409
    coauthored.op("UNLOCK", X_WOPI_Lock="L")
    get_lock(coauthored, "C3", timeout="60")
    clock.advance(seconds=61)
    assert coauthored.lock("L").status_int == 200
