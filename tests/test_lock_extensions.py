"""CSPP Plus's lock extensions: X-WOPI-LockUserVisible (a conflict names the user who holds the lock, in
X-WOPI-ConflictingLockUsername) and X-WOPI-LockExpirationTimeout (a lock time of 60 to 3600 seconds)."""

from __future__ import annotations

import pytest

from wopihost.users import ensure_user

HELD = "lock-held"
OTHER = "lock-other"
USERNAME = "X-WOPI-ConflictingLockUsername"


def name_user(services, clock, user_id: str, display_name: str) -> None:
    with services.db.write() as s:
        ensure_user(s, user_id, clock.now(), display_name)


def utf7(header_value: str) -> str:
    """A header value as WOPI's UTF-7 name headers carry it, decoded; it must be plain ASCII on the wire."""
    assert header_value.isascii()
    return header_value.encode("ascii").decode("utf-7")


def lock_of(wopi) -> str:
    response = wopi.op("GET_LOCK")
    assert response.status_int == 200
    return response.headers["X-WOPI-Lock"]


def get_coauth_lock(wopi, lock_id: str = "C1"):
    return wopi.op(
        "GET_COAUTH_LOCK",
        X_WOPI_CoauthLockId=lock_id,
        X_WOPI_CoauthLockType="Coauth",
        X_WOPI_CoauthLockExpirationTimeout="120",
        X_WOPI_CoauthLockMetadata="meta",
    )


@pytest.fixture
def pair(make_file, client_for, services, clock):
    """Bob (display name "Bob Builder") and alice, each with a write token for the same file."""
    file = make_file()
    bob, alice = client_for(file, "bob"), client_for(file, "alice")
    name_user(services, clock, "bob", "Bob Builder")
    return bob, alice


@pytest.fixture
def visible(pair):
    """The file locked by bob with X-WOPI-LockUserVisible: True (as the .NET validator spells it)."""
    bob, alice = pair
    response = bob.lock(HELD, X_WOPI_LockUserVisible="True")
    assert response.status_int == 200
    assert USERNAME not in response.headers
    return bob, alice


def assert_names(response, name: str, lock: str | None = HELD):
    assert response.status_int == 409
    assert response.headers["X-WOPI-FailureReason"]
    if lock is not None:
        assert response.headers["X-WOPI-Lock"] == lock
    assert utf7(response.headers[USERNAME]) == name


def assert_anonymous(response, lock: str | None = HELD):
    assert response.status_int == 409
    if lock is not None:
        assert response.headers["X-WOPI-Lock"] == lock
    assert USERNAME not in response.headers


# -- X-WOPI-LockUserVisible ----------------------------------------------------------------------------


def test_a_conflicting_lock_names_the_visible_holder(visible):
    bob, alice = visible
    response = alice.lock(OTHER)
    assert_names(response, "Bob Builder")
    assert response.headers[USERNAME] == "Bob Builder"  # plain ASCII is its own UTF-7
    assert lock_of(alice) == HELD


@pytest.mark.parametrize("spelling", ["True", "true", "TRUE"])
def test_the_header_is_read_ignoring_case(pair, spelling):
    bob, alice = pair
    assert bob.lock(HELD, X_WOPI_LockUserVisible=spelling).status_int == 200
    assert_names(alice.lock(OTHER), "Bob Builder")


@pytest.mark.parametrize("name", ["Ängström Ödön", "李小龙", "Zoë O'Brien + Co", "😀 Emoji"])
def test_a_non_ascii_name_is_sent_utf7_encoded(pair, services, clock, name):
    bob, alice = pair
    name_user(services, clock, "bob", name)
    assert bob.lock(HELD, X_WOPI_LockUserVisible="True").status_int == 200
    response = alice.lock(OTHER)
    assert_names(response, name)
    assert response.headers[USERNAME] != name


def test_a_user_without_a_display_name_is_named_by_id(make_file, client_for):
    file = make_file()
    carol, alice = client_for(file, "carol"), client_for(file, "alice")
    assert carol.lock(HELD, X_WOPI_LockUserVisible="True").status_int == 200
    assert_names(alice.lock(OTHER), "carol")


def test_the_name_is_the_one_the_holder_had_when_locking(visible, services, clock):
    bob, alice = visible
    name_user(services, clock, "bob", "Robert Builder")
    assert_names(alice.lock(OTHER), "Bob Builder")


def test_put_file_with_a_wrong_lock_names_the_holder(visible):
    bob, alice = visible
    assert_names(alice.put_file(b"mine", OTHER), "Bob Builder")
    assert_names(alice.put_file(b"mine"), "Bob Builder")  # no lock at all on a locked, non-empty file
    assert alice.get_file().body == b"hello world"


def test_unlock_and_relock_with_a_wrong_lock_names_the_holder(visible):
    bob, alice = visible
    assert_names(alice.op("LOCK", X_WOPI_Lock="new", X_WOPI_OldLock=OTHER), "Bob Builder")
    assert lock_of(alice) == HELD


def test_refresh_lock_with_a_wrong_lock_names_the_holder(visible):
    bob, alice = visible
    assert_names(alice.op("REFRESH_LOCK", X_WOPI_Lock=OTHER), "Bob Builder")


def test_unlock_with_a_wrong_lock_names_the_holder(visible):
    bob, alice = visible
    assert_names(alice.op("UNLOCK", X_WOPI_Lock=OTHER), "Bob Builder")
    assert lock_of(alice) == HELD


def test_rename_and_delete_of_a_visibly_locked_file_name_the_holder(visible):
    bob, alice = visible
    assert_names(alice.op("RENAME_FILE", X_WOPI_Lock=OTHER, X_WOPI_RequestedName="New"), "Bob Builder")
    assert_names(alice.op("DELETE"), "Bob Builder")
    assert alice.check_file_info().json["BaseFileName"] == "Doc.docx"


def test_coauth_lock_request_on_a_visible_wopi_lock_names_the_holder(visible):
    """The validator's CoauthLockRequestOnExistingWopiLockWithLockUserVisibleTrue."""
    bob, alice = visible
    response = get_coauth_lock(alice)
    assert_names(response, "Bob Builder", lock=None)
    assert response.headers["X-WOPI-ConflictingMechanism"] == "WOPI-Lock"
    assert lock_of(alice) == HELD
    table = alice.op("GET_COAUTH_TABLE")
    assert_names(table, "Bob Builder", lock=None)


@pytest.mark.parametrize("value", [None, "False", "false", ""], ids=["absent", "False", "false", "empty"])
def test_without_the_header_a_conflict_names_nobody(pair, value):
    bob, alice = pair
    headers = {} if value is None else {"X_WOPI_LockUserVisible": value}
    assert bob.lock(HELD, **headers).status_int == 200
    assert_anonymous(alice.lock(OTHER))
    assert_anonymous(alice.put_file(b"x", OTHER))
    assert_anonymous(alice.op("UNLOCK", X_WOPI_Lock=OTHER))
    assert_anonymous(alice.op("REFRESH_LOCK", X_WOPI_Lock=OTHER))
    assert_anonymous(alice.op("LOCK", X_WOPI_Lock="new", X_WOPI_OldLock=OTHER))
    coauth = get_coauth_lock(alice)
    assert_anonymous(coauth, lock=None)
    assert coauth.headers["X-WOPI-ConflictingMechanism"] == "WOPI-Lock"


def test_a_refresh_without_the_header_hides_the_name_again(visible):
    bob, alice = visible
    assert bob.op("REFRESH_LOCK", X_WOPI_Lock=HELD).status_int == 200
    assert_anonymous(alice.lock(OTHER))
    assert bob.op("REFRESH_LOCK", X_WOPI_Lock=HELD, X_WOPI_LockUserVisible="True").status_int == 200
    assert_names(alice.lock(OTHER), "Bob Builder")


def test_a_relock_by_another_user_names_that_user(visible, services, clock):
    bob, alice = visible
    name_user(services, clock, "alice", "Alice Example")
    assert (
        alice.op("LOCK", X_WOPI_Lock="alice-lock", X_WOPI_OldLock=HELD, X_WOPI_LockUserVisible="True").status_int == 200
    )
    assert_names(bob.lock(OTHER), "Alice Example", lock="alice-lock")
    assert bob.op("LOCK", X_WOPI_Lock="bob-again", X_WOPI_OldLock="alice-lock").status_int == 200
    assert_anonymous(alice.lock(OTHER), lock="bob-again")


def test_the_name_goes_with_the_lock(visible, clock):
    bob, alice = visible
    assert bob.op("UNLOCK", X_WOPI_Lock=HELD).status_int == 200
    assert bob.lock(HELD).status_int == 200
    assert_anonymous(alice.lock(OTHER))


@pytest.mark.parametrize("value", ["maybe", "1", "yes", "True False"])
def test_a_bad_value_is_400_and_changes_nothing(pair, value):
    bob, alice = pair
    response = bob.lock(HELD, X_WOPI_LockUserVisible=value)
    assert response.status_int == 400
    assert "X-WOPI-LockUserVisible" in response.headers["X-WOPI-FailureReason"]
    assert lock_of(bob) == ""
    assert bob.lock(HELD).status_int == 200
    refresh = bob.op("REFRESH_LOCK", X_WOPI_Lock=HELD, X_WOPI_LockUserVisible=value)
    assert refresh.status_int == 400
    relock = bob.op("LOCK", X_WOPI_Lock="new", X_WOPI_OldLock=HELD, X_WOPI_LockUserVisible=value)
    assert relock.status_int == 400
    assert lock_of(bob) == HELD
    assert_anonymous(alice.lock(OTHER))


def test_get_lock_and_check_file_info_are_unchanged_by_it(pair):
    bob, alice = pair
    info_before = alice.check_file_info().json
    assert bob.lock(HELD, X_WOPI_LockUserVisible="True").status_int == 200
    for client in (alice, bob):
        response = client.op("GET_LOCK")
        assert response.status_int == 200
        assert response.headers["X-WOPI-Lock"] == HELD
        assert USERNAME not in response.headers
    info_after = alice.check_file_info()
    assert USERNAME not in info_after.headers
    assert info_after.json == info_before


def test_the_holders_own_requests_succeed_without_the_name(visible):
    bob, alice = visible
    for response in (
        bob.lock(HELD, X_WOPI_LockUserVisible="True"),
        bob.put_file(b"saved", HELD),
        bob.op("REFRESH_LOCK", X_WOPI_Lock=HELD, X_WOPI_LockUserVisible="True"),
    ):
        assert response.status_int == 200
        assert USERNAME not in response.headers


# -- X-WOPI-LockExpirationTimeout ---------------------------------------------------------------------------

SECONDS = [60, 61, 300, 1800, 3599, 3600]


def assert_expires_after(wopi, clock, seconds: int, lock: str = HELD) -> None:
    """Locked `seconds` - 1 s from now, unlocked at `seconds`: then a Lock with another id succeeds."""
    clock.advance(seconds=seconds - 1)
    assert lock_of(wopi) == lock
    assert wopi.lock(OTHER).status_int == 409
    clock.advance(seconds=1)
    assert lock_of(wopi) == ""
    assert wopi.lock(OTHER).status_int == 200


@pytest.mark.parametrize("seconds", SECONDS)
def test_lock_with_a_timeout_expires_after_exactly_that(wopi, clock, seconds):
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout=str(seconds)).status_int == 200
    assert_expires_after(wopi, clock, seconds)


@pytest.mark.parametrize("seconds", SECONDS)
def test_refresh_lock_with_a_timeout_restarts_it_for_that_long(wopi, clock, seconds):
    assert wopi.lock(HELD).status_int == 200
    clock.advance(minutes=20)
    assert wopi.op("REFRESH_LOCK", X_WOPI_Lock=HELD, X_WOPI_LockExpirationTimeout=str(seconds)).status_int == 200
    assert_expires_after(wopi, clock, seconds)


@pytest.mark.parametrize("seconds", SECONDS)
def test_unlock_and_relock_with_a_timeout(wopi, clock, seconds):
    assert wopi.lock("old").status_int == 200
    clock.advance(minutes=20)
    response = wopi.op("LOCK", X_WOPI_Lock=HELD, X_WOPI_OldLock="old", X_WOPI_LockExpirationTimeout=str(seconds))
    assert response.status_int == 200
    assert_expires_after(wopi, clock, seconds)


def test_lock_with_the_same_id_and_a_timeout_refreshes_for_that_long(wopi, clock):
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout="3600").status_int == 200
    clock.advance(minutes=50)
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout="120").status_int == 200
    assert_expires_after(wopi, clock, 120)


def test_without_the_header_a_lock_lasts_30_minutes(wopi, clock):
    assert wopi.lock(HELD).status_int == 200
    assert_expires_after(wopi, clock, 30 * 60)


def test_a_refresh_without_the_header_goes_back_to_30_minutes(wopi, clock):
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout="60").status_int == 200
    clock.advance(seconds=30)
    assert wopi.op("REFRESH_LOCK", X_WOPI_Lock=HELD).status_int == 200
    assert_expires_after(wopi, clock, 30 * 60)


def test_both_extensions_together(pair, clock):
    bob, alice = pair
    assert bob.lock(HELD, X_WOPI_LockUserVisible="True", X_WOPI_LockExpirationTimeout="90").status_int == 200
    clock.advance(seconds=89)
    assert_names(alice.lock(OTHER), "Bob Builder")
    clock.advance(seconds=1)
    assert alice.lock(OTHER).status_int == 200


BAD_TIMEOUTS = ["59", "3601", "0", "-1", "abc", "60.5", "1e3", "99999999999999999999999"]


def assert_bad_timeout(response):
    assert response.status_int == 400
    assert "X-WOPI-LockExpirationTimeout" in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_timeout_on_lock_is_400_and_leaves_the_file_unlocked(wopi, value):
    assert_bad_timeout(wopi.lock(HELD, X_WOPI_LockExpirationTimeout=value))
    assert lock_of(wopi) == ""


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_timeout_on_refresh_is_400_and_leaves_the_lock_as_it_was(wopi, clock, value):
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout="600").status_int == 200
    clock.advance(seconds=100)
    assert_bad_timeout(wopi.op("REFRESH_LOCK", X_WOPI_Lock=HELD, X_WOPI_LockExpirationTimeout=value))
    assert_expires_after(wopi, clock, 500)  # the first lock's 600 seconds, not restarted


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_timeout_on_unlock_and_relock_is_400_and_keeps_the_old_lock(wopi, clock, value):
    assert wopi.lock("old", X_WOPI_LockExpirationTimeout="600").status_int == 200
    clock.advance(seconds=100)
    assert_bad_timeout(wopi.op("LOCK", X_WOPI_Lock=HELD, X_WOPI_OldLock="old", X_WOPI_LockExpirationTimeout=value))
    assert_expires_after(wopi, clock, 500, lock="old")


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_timeout_on_lock_with_the_same_id_keeps_the_lock_as_it_was(wopi, clock, value):
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout="600").status_int == 200
    clock.advance(seconds=100)
    assert_bad_timeout(wopi.lock(HELD, X_WOPI_LockExpirationTimeout=value))
    assert_expires_after(wopi, clock, 500)


def test_get_lock_and_check_file_info_are_unchanged_by_a_timeout(wopi):
    info_before = wopi.check_file_info().json
    assert wopi.lock(HELD, X_WOPI_LockExpirationTimeout="60").status_int == 200
    assert wopi.check_file_info().json == info_before
    assert lock_of(wopi) == HELD
