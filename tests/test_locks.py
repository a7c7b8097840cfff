"""The lock state table of docs/wopi.md §2.2, row by row, and the lock header rules."""

import io

import pytest

from .helpers import statements_sent

CURRENT = "lock-C"
OTHER = "lock-X"


@pytest.fixture(params=["unlocked", "expired"])
def unlocked(request, wopi, clock):
    """A file with no lock, or with a lock whose 30 minutes have passed (the same thing)."""
    if request.param == "expired":
        assert wopi.lock(CURRENT).status_int == 200
        clock.advance(minutes=30, seconds=1)
    return wopi


@pytest.fixture
def locked(wopi):
    assert wopi.lock(CURRENT).status_int == 200
    return wopi


def lock_of(wopi) -> str:
    response = wopi.op("GET_LOCK")
    assert response.status_int == 200
    return response.headers["X-WOPI-Lock"]


def assert_conflict(response, current: str):
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == current
    assert response.headers["X-WOPI-FailureReason"]
    assert response.headers["X-WOPI-LockFailureReason"]


# -- Lock ---------------------------------------------------------------------------


def test_lock_unlocked_file_takes_the_lock(unlocked):
    response = unlocked.lock(CURRENT)
    assert response.status_int == 200
    assert "X-WOPI-Lock" not in response.headers
    assert lock_of(unlocked) == CURRENT


def test_lock_with_same_id_refreshes_the_timer(locked, clock):
    clock.advance(minutes=20)
    assert locked.lock(CURRENT).status_int == 200
    clock.advance(minutes=20)  # 40 minutes after the first Lock, 20 after the second
    assert lock_of(locked) == CURRENT


def test_lock_with_other_id_conflicts(locked):
    assert_conflict(locked.lock(OTHER), CURRENT)
    assert lock_of(locked) == CURRENT


def test_lock_expires_after_30_minutes(locked, clock):
    clock.advance(minutes=29, seconds=59)
    assert lock_of(locked) == CURRENT
    clock.advance(seconds=2)
    assert lock_of(locked) == ""
    assert locked.lock(OTHER).status_int == 200


# -- UnlockAndRelock ------------------------------------------------------------------


def test_unlock_and_relock_unlocked_file_conflicts_with_empty_lock(unlocked):
    assert_conflict(unlocked.op("LOCK", X_WOPI_Lock=OTHER, X_WOPI_OldLock=CURRENT), "")
    assert lock_of(unlocked) == ""


def test_unlock_and_relock_with_matching_old_lock_swaps(locked, clock):
    clock.advance(minutes=25)
    assert locked.op("LOCK", X_WOPI_Lock=OTHER, X_WOPI_OldLock=CURRENT).status_int == 200
    clock.advance(minutes=25)  # the new lock has its own fresh 30 minutes
    assert lock_of(locked) == OTHER


def test_unlock_and_relock_with_wrong_old_lock_conflicts(locked):
    assert_conflict(locked.op("LOCK", X_WOPI_Lock=OTHER, X_WOPI_OldLock="not-it"), CURRENT)
    assert lock_of(locked) == CURRENT


# -- RefreshLock ----------------------------------------------------------------------


def test_refresh_unlocked_file_conflicts_with_empty_lock(unlocked):
    assert_conflict(unlocked.op("REFRESH_LOCK", X_WOPI_Lock=CURRENT), "")


def test_refresh_with_same_id_restarts_the_timer(locked, clock):
    clock.advance(minutes=20)
    assert locked.op("REFRESH_LOCK", X_WOPI_Lock=CURRENT).status_int == 200
    clock.advance(minutes=20)
    assert lock_of(locked) == CURRENT


def test_refresh_with_other_id_conflicts(locked):
    assert_conflict(locked.op("REFRESH_LOCK", X_WOPI_Lock=OTHER), CURRENT)


# -- Unlock ---------------------------------------------------------------------------


def test_unlock_unlocked_file_conflicts_with_empty_lock(unlocked):
    assert_conflict(unlocked.op("UNLOCK", X_WOPI_Lock=CURRENT), "")


def test_unlock_with_same_id_removes_the_lock(locked):
    response = locked.op("UNLOCK", X_WOPI_Lock=CURRENT)
    assert response.status_int == 200
    assert response.headers["X-WOPI-ItemVersion"] == "1"
    assert lock_of(locked) == ""


def test_unlock_with_other_id_conflicts(locked):
    assert_conflict(locked.op("UNLOCK", X_WOPI_Lock=OTHER), CURRENT)
    assert lock_of(locked) == CURRENT


# -- GetLock --------------------------------------------------------------------------


def test_get_lock_unlocked_answers_empty_lock(unlocked):
    response = unlocked.op("GET_LOCK")
    assert response.status_int == 200
    assert response.headers["X-WOPI-Lock"] == ""


def test_get_lock_never_creates_a_lock(unlocked):
    unlocked.op("GET_LOCK", X_WOPI_Lock=CURRENT)
    assert lock_of(unlocked) == ""


def test_get_lock_is_allowed_with_a_read_only_token(locked, services, client_for):
    reader = client_for(services.files.get(locked.file_id), can_write=False)
    assert lock_of(reader) == CURRENT


def test_get_lock_reads_the_database_once(locked, services, tmp_path):
    """The token's row, the file's version and its lock come in one statement (issue 13's one round trip, as
    CheckFileInfo's), with no transaction around it: the version and the lock answered are of one moment."""
    with statements_sent(services, tmp_path) as sent:
        response = locked.op("GET_LOCK")
    assert response.status_int == 200
    assert response.headers["X-WOPI-Lock"] == CURRENT
    assert response.headers["X-WOPI-ItemVersion"] == "1"
    assert sent == ["SELECT"]


def test_get_lock_answers_the_version_of_the_content_it_reads(locked, services):
    services.files.put(locked.file_id, io.BytesIO(b"v2"), CURRENT)
    response = locked.op("GET_LOCK")
    assert (response.headers["X-WOPI-Lock"], response.headers["X-WOPI-ItemVersion"]) == (CURRENT, "2")


# -- lock ids and headers -------------------------------------------------------------


@pytest.mark.parametrize(
    "lock_id",
    [
        "x" * 256,
        "x" * 1024,
        '{"S":"a0a4a2b6-3d5e","F":4,"E":2,"M":"Word","P":"\\"quoted\\" {braces}: colons"}',
        "spaces inside = fine; <tags> & 'quotes'",
    ],
)
def test_lock_ids_up_to_1024_chars_are_stored_verbatim(wopi, lock_id):
    assert wopi.lock(lock_id).status_int == 200
    assert lock_of(wopi) == lock_id
    assert wopi.op("UNLOCK", X_WOPI_Lock=lock_id).status_int == 200


def test_lock_ids_compare_byte_exactly(locked):
    assert_conflict(locked.lock(CURRENT.upper()), CURRENT)


@pytest.mark.parametrize("override", ["LOCK", "REFRESH_LOCK", "UNLOCK"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_or_empty_lock_header_is_400(wopi, override, value):
    headers = {} if value is None else {"X_WOPI_Lock": value}
    response = wopi.op(override, **headers)
    assert response.status_int == 400
    assert "X-WOPI-Lock" in response.headers["X-WOPI-FailureReason"]


def test_unlock_and_relock_with_empty_old_lock_is_400(locked):
    response = locked.op("LOCK", X_WOPI_Lock=OTHER, X_WOPI_OldLock="")
    assert response.status_int == 400
    assert "X-WOPI-OldLock" in response.headers["X-WOPI-FailureReason"]
    assert lock_of(locked) == CURRENT


@pytest.mark.parametrize("override", ["LOCK", "REFRESH_LOCK", "UNLOCK"])
def test_lock_id_longer_than_1024_is_400(wopi, override):
    response = wopi.op(override, X_WOPI_Lock="x" * 1025)
    assert response.status_int == 400
    assert "1024" in response.headers["X-WOPI-FailureReason"]
    assert lock_of(wopi) == ""


def test_non_ascii_lock_id_is_400(wopi):
    response = wopi.testapp.post(
        wopi.url(), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "caf\xe9"}, expect_errors=True
    )
    assert response.status_int == 400
    assert lock_of(wopi) == ""


def test_lock_returns_item_version_and_does_not_change_it(wopi):
    response = wopi.lock(CURRENT)
    assert response.headers["X-WOPI-ItemVersion"] == "1"
    assert wopi.check_file_info().json["Version"] == "1"


@pytest.mark.parametrize("override", ["LOCK", "REFRESH_LOCK", "UNLOCK"])
def test_lock_changes_need_a_write_token(locked, services, client_for, override):
    reader = client_for(services.files.get(locked.file_id), can_write=False)
    response = reader.op(override, X_WOPI_Lock=CURRENT)
    assert response.status_int == 404
    assert lock_of(locked) == CURRENT


def test_locks_are_not_owned_by_users(locked, services, client_for):
    bob = client_for(services.files.get(locked.file_id), user="bob")
    assert bob.op("REFRESH_LOCK", X_WOPI_Lock=CURRENT).status_int == 200
    assert bob.op("UNLOCK", X_WOPI_Lock=CURRENT).status_int == 200


def test_breaking_a_files_locks_removes_its_wopi_lock(locked, services):
    assert services.coauth.break_all(locked.file_id).lock_id == CURRENT
    assert lock_of(locked) == ""


@pytest.mark.parametrize(
    "transition, change",
    [
        (lambda wopi: wopi.lock(OTHER, X_WOPI_OldLock=CURRENT), "INSERT"),  # UnlockAndRelock
        (lambda wopi: wopi.op("REFRESH_LOCK", X_WOPI_Lock=CURRENT), "INSERT"),
        (lambda wopi: wopi.op("UNLOCK", X_WOPI_Lock=CURRENT), "DELETE"),
    ],
    ids=["unlock_and_relock", "refresh_lock", "unlock"],
)
def test_a_lock_transition_reads_once_then_changes_in_one_transaction(locked, services, tmp_path, transition, change):
    """Issue 13's round trips: the request's one read (its token, file and user), then one transaction that reads
    the lock's state and changes it. PostgreSQL's first takes the file's row lock (locks.py), as the check and
    the change must be one transaction under READ COMMITTED; SQLite's BEGIN IMMEDIATE takes the database's."""
    with statements_sent(services, tmp_path) as sent:
        assert transition(locked).status_int == 200
    row_lock = [] if services.db.is_sqlite else ["SELECT"]
    assert sent == ["SELECT", "BEGIN", *row_lock, "SELECT", change, "COMMIT"]


def test_lock_reads_once_then_changes_in_one_transaction(wopi, services, tmp_path):
    with statements_sent(services, tmp_path) as sent:
        assert wopi.lock(CURRENT).status_int == 200
    row_lock = [] if services.db.is_sqlite else ["SELECT"]
    assert sent == ["SELECT", "BEGIN", *row_lock, "SELECT", "INSERT", "COMMIT"]
