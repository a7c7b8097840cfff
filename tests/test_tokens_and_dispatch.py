"""Access tokens (docs/wopi.md §1.2), dispatch on X-WOPI-Override (§4.1), headers on every response (§1.3)."""

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from wopihost.clock import to_epoch_ms
from wopihost.models import FileRevocation
from wopihost.tokens import API

from .helpers import stored_blobs, while_the_body_comes

# Every operation, as (method, suffix, override, extra headers); each must refuse a bad token.
OPERATIONS = [
    ("GET", "", None, {}),
    ("GET", "/contents", None, {}),
    ("POST", "/contents", "PUT", {"X-WOPI-Lock": "L"}),
    ("POST", "", "LOCK", {"X-WOPI-Lock": "L"}),
    ("POST", "", "LOCK", {"X-WOPI-Lock": "L", "X-WOPI-OldLock": "O"}),
    ("POST", "", "GET_LOCK", {}),
    ("POST", "", "REFRESH_LOCK", {"X-WOPI-Lock": "L"}),
    ("POST", "", "UNLOCK", {"X-WOPI-Lock": "L"}),
    ("POST", "", "PUT_RELATIVE", {"X-WOPI-SuggestedTarget": ".pdf"}),
    ("POST", "", "RENAME_FILE", {"X-WOPI-RequestedName": "x"}),
    ("POST", "", "DELETE", {}),
    ("POST", "", "PUT_USER_INFO", {}),
]
OPERATION_IDS = [f"{m}{s}:{o or '-'}" + ("+OldLock" if "X-WOPI-OldLock" in h else "") for m, s, o, h in OPERATIONS]


def call(testapp, file_id, operation, token):
    method, suffix, override, headers = operation
    url = f"/wopi/files/{file_id}{suffix}"
    if token is not None:
        url += f"?access_token={token}"
    headers = {**headers, **({"X-WOPI-Override": override} if override else {})}
    if method == "GET":
        return testapp.get(url, headers=headers, expect_errors=True)
    return testapp.post(url, b"", headers=headers, expect_errors=True)


def tampered(token: str) -> str:
    """Change one character well inside the signature (the last one may only hold padding bits)."""
    i = len(token) - 10
    return token[:i] + ("b" if token[i] != "b" else "c") + token[i + 1 :]


@pytest.mark.parametrize("operation", OPERATIONS, ids=OPERATION_IDS)
def test_every_operation_refuses_bad_tokens(wopi, make_file, services, clock, operation):
    other = make_file(name="Other.docx")
    other_token = services.issue_token(other.id, "alice", True).token
    revoked = services.issue_token(wopi.file_id, "alice", True).token
    with services.db.write() as s:
        services.tokens.revoke(s, token=revoked)
    expiring = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=1)).token
    clock.advance(minutes=2)
    for label, token in [
        ("missing", None),
        ("garbage", "not-a-token"),
        ("tampered", tampered(wopi.token)),
        ("other file", other_token),
        ("revoked", revoked),
        ("expired", expiring),
    ]:
        response = call(wopi.testapp, wopi.file_id, operation, token)
        assert response.status_int == 401, label
        assert response.headers["X-WOPI-FailureReason"], label
        assert response.headers["X-WOPI-ServerVersion"], label
    assert wopi.check_file_info().json["Version"] == "1"  # nothing happened


def test_failure_reasons_say_what_was_wrong(wopi, services, clock):
    expiring = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=1)).token
    clock.advance(minutes=2)
    assert "expired" in call(wopi.testapp, wopi.file_id, OPERATIONS[0], expiring).headers["X-WOPI-FailureReason"]
    assert "no access token" in call(wopi.testapp, wopi.file_id, OPERATIONS[0], None).headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("operation", OPERATIONS, ids=OPERATION_IDS)
def test_every_operation_on_a_deleted_file_is_404(wopi, services, operation):
    services.files.delete(wopi.file_id)
    response = call(wopi.testapp, wopi.file_id, operation, wopi.token)
    assert response.status_int == 404
    assert response.headers["X-WOPI-FailureReason"]


def test_bearer_header_is_accepted_when_the_query_has_no_token(wopi):
    response = wopi.testapp.get(f"/wopi/files/{wopi.file_id}", headers={"Authorization": f"Bearer {wopi.token}"})
    assert response.json["BaseFileName"] == "Doc.docx"


def test_query_token_wins_over_the_bearer_header(wopi):
    response = wopi.testapp.get(wopi.url(), headers={"Authorization": "Bearer garbage"})
    assert response.status_int == 200


def test_unknown_query_parameters_are_ignored(wopi):
    response = wopi.testapp.get(wopi.url() + "&access_token_ttl=0&sc=xyz")
    assert response.status_int == 200


def test_tokens_are_short_and_alphanumeric(wopi):
    assert re.fullmatch(r"[a-z2-7]+", wopi.token)
    assert len(wopi.token) < 200


def other_spellings(token: str) -> list[str]:
    """Strings that base32-decode to the same bytes as `token`: case, padding, the last character's spare bits."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    spare_bits = (5 * len(token)) % 8  # low bits of the last character that carry no data
    last = alphabet.index(token[-1])
    same_bytes = [alphabet[(last & ~((1 << spare_bits) - 1)) | low] for low in range(1 << spare_bits)]
    spellings = [token.upper(), token[:-1] + token[-1].upper(), token + "=" * (-len(token) % 8), token + "="]
    spellings += [token[:-1] + ch for ch in same_bytes]
    return sorted(set(spellings) - {token})


def test_only_the_issued_spelling_of_a_token_is_accepted(wopi):
    spellings = other_spellings(wopi.token)
    assert len(spellings) >= 5
    for spelling in spellings:
        response = wopi.testapp.get(wopi.url(token=spelling), expect_errors=True)
        assert response.status_int == 401, spelling
    assert wopi.check_file_info().status_int == 200


def test_revoking_needs_the_issued_spelling_too(wopi, services):
    with services.db.write() as s:
        assert services.tokens.revoke(s, token=wopi.token.upper()) == 0
    assert wopi.check_file_info().status_int == 200


def test_token_lifetime_default_and_access_token_ttl(services, make_file, clock):
    issued = services.issue_token(make_file().id, "alice", True)
    assert issued.grant.expires_at == (clock.now() + timedelta(hours=10)).replace(microsecond=0)
    # access_token_ttl is milliseconds since the epoch, not a duration
    assert to_epoch_ms(issued.grant.expires_at) > 1_700_000_000_000


def test_token_works_until_its_expiry(services, wopi, clock):
    token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(hours=1)).token
    clock.advance(minutes=59)
    assert wopi.testapp.get(wopi.url(token=token), expect_errors=True).status_int == 200
    clock.advance(minutes=2)
    assert wopi.testapp.get(wopi.url(token=token), expect_errors=True).status_int == 401


def test_revoking_by_file_and_user(services, wopi, make_file):
    other = make_file(name="Other.docx")
    other_token = services.issue_token(other.id, "alice", True).token
    with services.db.write() as s:
        assert services.tokens.revoke(s, file_id=wopi.file_id) == 1
    assert wopi.check_file_info().status_int == 401
    assert wopi.testapp.get(f"/wopi/files/{other.id}?access_token={other_token}").status_int == 200
    with services.db.write() as s:
        assert services.tokens.revoke(s, user_id="alice") == 1


def test_token_signed_with_another_secret_is_refused(wopi, services, settings, clock):
    from wopihost.services import Services

    foreign = Services.create(settings.with_changes(secret_key="another secret"), clock)
    token = foreign.issue_token(wopi.file_id, "alice", True).token  # same database, other key
    assert wopi.testapp.get(wopi.url(token=token), expect_errors=True).status_int == 401
    foreign.db.dispose()


# -- dispatch -------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["BOGUS", "GET_FILE_USER_VALUE", "PUT_CHUNKED_FILE_NOT", "COBALT"])
def test_unknown_override_is_501(wopi, override):
    response = wopi.op(override)
    assert response.status_int == 501
    assert override in response.headers["X-WOPI-FailureReason"]


def test_file_override_on_contents_endpoint_is_501(wopi):
    response = wopi.testapp.post(
        wopi.url("/contents"), headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": "L"}, expect_errors=True
    )
    assert response.status_int == 501


def test_post_without_override_is_400(wopi):
    response = wopi.testapp.post(wopi.url(), expect_errors=True)
    assert response.status_int == 400
    assert "X-WOPI-Override" in response.headers["X-WOPI-FailureReason"]


def test_override_is_case_insensitive(wopi):
    assert wopi.op("get_lock").status_int == 200


def test_unknown_paths_get_wopi_error_headers(testapp):
    response = testapp.get("/wopi/files/x/ids/y", expect_errors=True)
    assert response.status_int == 404
    assert response.headers["X-WOPI-FailureReason"]
    assert response.headers["X-WOPI-ServerVersion"]


def test_wrong_method_is_405_with_reason(wopi):
    response = wopi.testapp.delete(wopi.url(), expect_errors=True)
    assert response.status_int == 405
    assert response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("path", ["", "/contents", "/ancestry", "/ecosystem_pointer", "containers", "download"])
def test_options_is_a_method_no_wopi_endpoint_takes(wopi, path):
    """405 with Allow and a reason, as any other method an endpoint does not take (docs/wopi.md §1.1), not Flask's
    automatic 200, which answered any file id, with or without a token."""
    elsewhere = {"containers": "/wopi/containers/x?access_token=t", "download": "/wopi/download/x"}
    url = elsewhere.get(path) or wopi.url(path)
    response = wopi.testapp.options(url, expect_errors=True)
    assert response.status_int == 405
    assert response.headers["X-WOPI-FailureReason"]
    assert "OPTIONS" not in response.headers["Allow"] and "GET" in response.headers["Allow"]


@pytest.mark.parametrize("suffix", ["", "/contents"], ids=["CheckFileInfo", "GetFile"])
def test_head_is_get_without_the_body(wopi, suffix):
    got = wopi.testapp.get(wopi.url(suffix))
    head = wopi.testapp.head(wopi.url(suffix))
    assert head.status_int == 200 and head.body == b""
    for name in ("Content-Type", "Content-Length", "X-WOPI-ItemVersion"):
        assert head.headers.get(name) == got.headers.get(name), name


def test_every_response_carries_server_version_and_matching_length(wopi):
    responses = [
        wopi.check_file_info(),
        wopi.get_file(),
        wopi.lock("L"),
        wopi.lock("other"),
        wopi.op("BOGUS"),
        wopi.put_file(b"x", lock="L"),
    ]
    for response in responses:
        assert response.headers["X-WOPI-ServerVersion"].startswith("wopihost/")
        assert int(response.headers["Content-Length"]) == len(response.body)


def test_errors_never_claim_an_html_body(wopi):
    response = wopi.lock("L") and wopi.lock("other")
    assert response.status_int == 409
    assert "html" not in response.headers.get("Content-Type", "")


def test_unexpected_errors_are_500_without_details(wopi, services, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services, "file_url", explode)
    response = wopi.check_file_info()
    assert response.status_int == 500
    assert response.headers["X-WOPI-ServerError"] == "internal server error"
    assert "secret" not in str(response.headers) + response.text


def test_a_file_revoked_while_put_file_comes_through_a_containers_token_saves_nothing(wopi, services, clock):
    """A token handed out for the file by its container has the container token's row: revoking the file's tokens
    found no row of it, and the save it was sending landed."""
    wopi.lock("L")
    folder_id = services.files.get(wopi.file_id).folder_id
    container = services.issue_container_token(folder_id, "alice", "lcmw")
    wopi.token = services.tokens.derive(container.grant, wopi.file_id, "w", "").token
    blobs = stored_blobs(services)
    clock.advance(seconds=1)

    def meanwhile() -> None:
        with services.db.write() as s:
            assert services.tokens.revoke(s, file_id=wopi.file_id) == 1  # the fixture's own token, not ours

    answer = while_the_body_comes(lambda held: wopi.put_file_from(held, 4096, lock="L"), b"x" * 4096, meanwhile)
    assert answer.status_int == 401 and "revoked" in answer.headers["X-WOPI-FailureReason"]
    assert services.files.get(wopi.file_id).version == 1
    assert stored_blobs(services) == blobs
    assert wopi.check_file_info().status_int == 401
    with services.db.read() as s:  # the container's token itself stays
        assert services.tokens.verify(s, container.token, f"c-{folder_id}").user_id == "alice"
    clock.advance(seconds=1)  # and one issued since hands out a token that opens the file
    since = services.issue_container_token(folder_id, "alice", "lcmw").grant
    wopi.token = services.tokens.derive(since, wopi.file_id, "w", "").token
    assert wopi.check_file_info().status_int == 200


def test_a_files_revocation_is_purged_once_no_live_token_predates_it(wopi, services, clock):
    folder_id = services.files.get(wopi.file_id).folder_id
    services.issue_container_token(folder_id, "alice", "lcmw", clock.now() + timedelta(minutes=10))
    services.issue_token(API, "alice", True, clock.now() + timedelta(days=365))  # an API token opens no WOPI file
    with services.db.write() as s:
        services.tokens.revoke(s, file_id=wopi.file_id)
    count = sa.select(sa.func.count()).select_from(FileRevocation)
    with services.db.write() as s:
        services.tokens.purge(s)  # the fixture's token (revoked) goes; the container's may still hand the file out
        assert s.scalar(count) == 1
    clock.advance(minutes=11)
    with services.db.write() as s:
        services.tokens.purge(s)
        assert s.scalar(count) == 0


# Every operation that reads headers or a body, with ones it would refuse (400 or 501) were the file there.
REFUSED_HEADERS = [
    ("GET", "/contents", None, {"X-WOPI-MaxExpectedSize": "many"}, b""),
    ("POST", "/contents", "PUT", {"X-WOPI-Lock": "L" * 1025}, b""),
    ("POST", "", "LOCK", {}, b""),
    ("POST", "", "LOCK", {"X-WOPI-Lock": "L", "X-WOPI-OldLock": ""}, b""),
    ("POST", "", "LOCK", {"X-WOPI-Lock": "L", "X-WOPI-LockExpirationTimeout": "-1"}, b""),
    ("POST", "", "REFRESH_LOCK", {}, b""),
    ("POST", "", "UNLOCK", {}, b""),
    ("POST", "", "PUT_RELATIVE", {"X-WOPI-SuggestedTarget": ".pdf", "X-WOPI-RelativeTarget": "a.pdf"}, b""),
    ("POST", "", "PUT_RELATIVE", {}, b""),
    ("POST", "", "RENAME_FILE", {}, b""),
    ("POST", "", "GET_SHARE_URL", {"X-WOPI-UrlType": "Bogus"}, b""),
    ("POST", "", "GET_SHARE_URL", {}, b""),
    ("POST", "", "ADD_ACTIVITIES", {}, b"not JSON"),
    ("POST", "", "GET_CHUNKED_FILE", {}, b"not a message"),
    ("POST", "", "GET_CHUNKS", {}, b"not a message"),
    ("POST", "/contents", "PUT_CHUNKED_FILE", {}, b""),
    ("POST", "", "UPDATE_UPLOAD_SESSION", {}, b""),
    ("POST", "", "GET_COAUTH_LOCK", {}, b""),
    ("POST", "", "REFRESH_COAUTH_LOCK", {}, b""),
    ("POST", "", "UNLOCK_COAUTH_LOCK", {}, b""),
]


@pytest.mark.parametrize(
    "operation", REFUSED_HEADERS, ids=[f"{m}{s}:{o or '-'}:{sorted(h)}" for m, s, o, h, _ in REFUSED_HEADERS]
)
def test_a_deleted_file_is_404_before_its_headers_are_read(wopi, services, operation):
    """WOPI answers an unknown file 404 whatever the request's headers (token, then file, then the operation's
    headers: docs/wopi.md §1.2): GetShareUrl with an unsupported X-WOPI-UrlType was 501, and the others' malformed
    headers or bodies 400, for a file that was not there."""
    method, suffix, override, headers, body = operation
    services.files.delete(wopi.file_id)
    headers = {**headers, **({"X-WOPI-Override": override} if override else {})}
    if method == "GET":
        response = wopi.testapp.get(wopi.url(suffix), headers=headers, expect_errors=True)
    else:
        response = wopi.testapp.post(wopi.url(suffix), body, headers=headers, expect_errors=True)
    assert response.status_int == 404, response.headers.get("X-WOPI-FailureReason")
    assert response.headers["X-WOPI-FailureReason"] == "file not found"


def test_a_deleted_file_is_404_for_a_read_only_token_saving_as(make_file, client_for, services):
    """PutRelativeFile's 501 for a read-only token (UserCanNotWriteRelative) is for a file that is there."""
    reader = client_for(make_file(), can_write=False)
    services.files.delete(reader.file_id)
    response = reader.op("PUT_RELATIVE", X_WOPI_SuggestedTarget=".pdf")
    assert response.status_int == 404 and response.headers["X-WOPI-FailureReason"] == "file not found"
