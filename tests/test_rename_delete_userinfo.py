"""RenameFile, DeleteFile, PutUserInfo (docs/wopi.md §3.10-3.12, §7 item 7)."""

import io
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from wopihost.models import File
from wopihost.names import encode_utf7
from wopihost.repository import load_file

from .helpers import (
    WopiClient,
    raw_utf8,
    revoke_or_expire,
    stored_blobs,
    wait_until,
    waits_for_another_writer,
    while_the_body_comes,
)


def rename(wopi, name: str, **headers):
    return wopi.op("RENAME_FILE", X_WOPI_RequestedName=encode_utf7(name), **headers)


# -- RenameFile -----------------------------------------------------------------------


def test_rename_keeps_extension_and_file_id(wopi, services):
    response = rename(wopi, "New Name")
    assert response.status_int == 200
    assert response.json["Name"] == "New Name"
    info = wopi.check_file_info().json
    assert info["BaseFileName"] == "New Name.docx"
    assert info["Version"] == "1"
    assert services.files.get(wopi.file_id).sequence_number == 2


def test_rename_answers_the_time_collabora_sends_back_in_its_next_save(wopi):
    """Collabora keeps LastModifiedTime from every 200 JSON answer and sends it with its next PutFile: the
    rename's must be the file's, unchanged by the rename, or that save would be refused as stale (1010)."""
    before = wopi.check_file_info().json["LastModifiedTime"]
    wopi.lock("L")
    response = rename(wopi, "Renamed", X_WOPI_Lock="L")
    assert set(response.json) == {"Name", "Url", "LastModifiedTime"}
    assert response.json["LastModifiedTime"] == before == wopi.check_file_info().json["LastModifiedTime"]
    saved = wopi.put_file(b"new", lock="L", X_COOL_WOPI_Timestamp=response.json["LastModifiedTime"])
    assert saved.status_int == 200, saved.body


@pytest.mark.parametrize("folders", ["", "lcmw"])
def test_rename_answers_the_files_own_url_which_collabora_reads_as_the_renamed_document(
    services, testapp, make_file, folders
):
    """Collabora takes a rename for done only with a Url in its answer (as PutRelativeFile's): the same WOPISrc,
    with a token of the caller's user, rights and reach, expiring with the caller's, that opens the renamed file."""
    file = make_file()
    issued = services.issue_token(file.id, "alice", True, folders=folders)
    response = rename(WopiClient(testapp, file.id, issued.token), "Renamed")
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    url = urlsplit(response.json["Url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"https://wopi.example.test/wopi/files/{file.id}"
    handed = parse_qs(url.query)["access_token"][0]
    again = WopiClient(testapp, file.id, handed).check_file_info().json
    assert again["BaseFileName"] == "Renamed.docx" and again["UserId"] == "alice" and again["UserCanWrite"]
    with services.db.read() as s:
        grant = services.tokens.verify(s, handed, file.id)
    assert (grant.rights, grant.reach, grant.expires_at) == ("w", folders, issued.grant.expires_at)


def test_rename_decodes_utf7(wopi):
    assert rename(wopi, "Résumé 日本").json["Name"] == "Résumé 日本"
    assert wopi.check_file_info().json["BaseFileName"] == "Résumé 日本.docx"


@pytest.mark.parametrize("name", ["Grüße", "Voilà", "Å"])
def test_rename_reads_a_name_sent_as_raw_utf8(wopi, name):
    """X-WOPI-RequestedName as some clients send it, the name's UTF-8 bytes rather than UTF-7 (docs/wopi.md §1.5);
    the last byte of 'à' (0xA0) or 'Å' (0x85) is part of the name, not space around it."""
    response = wopi.op("RENAME_FILE", X_WOPI_RequestedName=raw_utf8(name))
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert response.json["Name"] == name
    assert wopi.check_file_info().json["BaseFileName"] == f"{name}.docx"


def test_rename_with_validator_style_encoding(wopi):
    response = wopi.op("RENAME_FILE", X_WOPI_RequestedName="madeup+AF8-name")
    assert response.json["Name"] == "madeup_name"


@pytest.mark.parametrize("lock_header", [{}, {"X_WOPI_Lock": ""}, {"X_WOPI_Lock": "ignored"}])
def test_rename_unlocked_file_ignores_any_lock_header(wopi, lock_header):
    assert rename(wopi, "Renamed", **lock_header).status_int == 200


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
@pytest.mark.parametrize("name", ["X-WOPI-Lock", "X-WOPI-CoauthLockId"])
@pytest.mark.parametrize("value", ["L" * 1025, raw_utf8("Lé")], ids=["too-long", "not-ascii"])
def test_a_lock_header_that_is_no_lock_id_is_400_naming_it(wopi, locked, name, value):
    """A lock id is at most 1024 ASCII characters (CSPP Plus's RenameFile: 400 when a lock header is not), as
    PutFile and the lock operations read it: not ignored on an unlocked file, nor a mere mismatch on a locked one."""
    if locked:
        wopi.lock("L")
    response = wopi.testapp.post(
        wopi.url(),
        headers={"X-WOPI-Override": "RENAME_FILE", "X-WOPI-RequestedName": "Renamed", name: value},
        expect_errors=True,
    )
    assert response.status_int == 400
    assert name in response.headers["X-WOPI-FailureReason"]
    assert wopi.check_file_info().json["BaseFileName"] == "Doc.docx"


def test_rename_locked_file_with_its_lock(wopi):
    wopi.lock("L")
    assert rename(wopi, "Renamed", X_WOPI_Lock="L").status_int == 200


@pytest.mark.parametrize("lock_header", [{}, {"X_WOPI_Lock": "other"}])
def test_rename_locked_file_with_wrong_lock_conflicts(wopi, lock_header):
    wopi.lock("L")
    response = rename(wopi, "Renamed", **lock_header)
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == "L"
    assert wopi.check_file_info().json["BaseFileName"] == "Doc.docx"


def test_rename_to_a_taken_name_picks_a_free_variant(wopi, make_file):
    make_file(name="Taken.docx")
    assert rename(wopi, "Taken").json["Name"] == "Taken (2)"


@pytest.mark.parametrize("requested", ["notes.txt", "v1.2"])
def test_a_file_without_an_extension_is_answered_its_whole_new_name(make_file, client_for, requested):
    """The answer's Name is the new name without the file's extension, and this file has none to keep."""
    client = client_for(make_file(name="README"))
    assert rename(client, requested).json["Name"] == requested
    assert client.check_file_info().json["BaseFileName"] == requested


def test_the_name_answered_is_less_the_extension_the_rename_kept_not_the_one_the_request_saw(
    wopi, services, monkeypatch
):
    """Renamed to Doc.md (say through Graph) after the request's first read saw Doc.docx: the file becomes New.md,
    and the answer's Name is New, not New.md cut by the length of ".docx"."""
    rename_file = services.files.rename

    def renamed_meanwhile(file_id, *args, **kwargs):
        with services.db.write() as s:
            s.get(File, file_id).name = "Doc.md"
        return rename_file(file_id, *args, **kwargs)

    monkeypatch.setattr(services.files, "rename", renamed_meanwhile)
    assert rename(wopi, "New").json["Name"] == "New"
    assert wopi.check_file_info().json["BaseFileName"] == "New.md"


def test_rename_to_own_name_in_other_case_is_allowed(wopi):
    assert rename(wopi, "DOC").json["Name"] == "DOC"


@pytest.mark.parametrize(
    "name", ["a/b", "..", "../../etc/passwd", "a\\b", "x\x01y", "con", "a:b", "", "   ", "x" * 251, "bad?", "pipe|name"]
)
def test_rename_to_an_illegal_name_is_400(wopi, name, tmp_path):
    response = rename(wopi, name)
    assert response.status_int == 400
    assert response.headers["X-WOPI-InvalidFileNameError"]
    assert response.headers["X-WOPI-FailureReason"]
    assert wopi.check_file_info().json["BaseFileName"] == "Doc.docx"
    assert not [p for p in tmp_path.rglob("*") if "passwd" in p.name]


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_requested_name_is_400_saying_so(wopi, name):
    """Not 'the name starts with a dot', which the name made with the extension kept ('.docx') does, and the
    client never sent."""
    response = rename(wopi, name)
    assert response.status_int == 400
    assert response.headers["X-WOPI-InvalidFileNameError"] == "X-WOPI-RequestedName is empty"
    assert wopi.check_file_info().json["BaseFileName"] == "Doc.docx"


def test_rename_with_a_non_utf7_header_is_400(wopi):
    response = wopi.op("RENAME_FILE", X_WOPI_RequestedName="bad+AAA€")
    assert response.status_int == 400
    assert response.headers["X-WOPI-InvalidFileNameError"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_rename_reads_the_document_collabora_sends_with_it_before_answering(wopi, services, chunked):
    """Collabora sends the whole document as the body of RenameFile and reads the answer once it has sent it: left
    unread, the server would close the connection on it and the client would never see the answer."""
    document = io.BytesIO(b"d" * 300_000)
    response = wopi.raw_post(
        "", document, None if chunked else 300_000, True, X_WOPI_Override="RENAME_FILE", X_WOPI_RequestedName="Renamed"
    )
    assert (response.status_int, response.json["Name"]) == (200, "Renamed")
    assert document.tell() == 300_000  # read to its end
    assert services.files.get(wopi.file_id).size == 11  # and not stored: a rename changes the name only


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_rename_with_a_body_larger_than_any_file_is_413_and_renames_nothing(wopi, services, chunked):
    size = services.settings.max_file_size + 1
    response = wopi.raw_post(
        "",
        io.BytesIO(b"d" * size),
        None if chunked else size,
        True,
        X_WOPI_Override="RENAME_FILE",
        X_WOPI_RequestedName="Renamed",
    )
    assert response.status_int == 413
    assert services.files.get(wopi.file_id).name == "Doc.docx"


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_collaboras_rename_body_comes_renames_nothing(wopi, services, clock, how):
    """The token was live when RenameFile began, and is not once the document Collabora sends along is in: 401,
    and the name stays."""
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token

    def meanwhile() -> None:
        revoke_or_expire(services, clock, wopi.token, how)

    answer = while_the_body_comes(
        lambda held: wopi.raw_post("", held, 4096, X_WOPI_Override="RENAME_FILE", X_WOPI_RequestedName="Renamed"),
        b"d" * 4096,
        meanwhile,
    )
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    file = services.files.get(wopi.file_id)
    assert (file.name, file.sequence_number) == ("Doc.docx", 1)


def test_rename_without_requested_name_is_400(wopi):
    assert wopi.op("RENAME_FILE").status_int == 400


def test_rename_needs_a_write_token(make_file, client_for):
    assert rename(client_for(make_file(), can_write=False), "X").status_int == 404


def test_rename_of_a_deleted_file_is_404(wopi):
    assert wopi.op("DELETE").status_int == 200
    assert rename(wopi, "Gone").status_int == 404


# -- DeleteFile -----------------------------------------------------------------------


def test_delete_removes_file_and_content(wopi, services):
    assert wopi.op("DELETE").status_int == 200
    assert wopi.check_file_info().status_int == 404
    assert wopi.get_file().status_int == 404
    assert stored_blobs(services) == set()


def test_delete_locked_file_conflicts(wopi):
    wopi.lock("L")
    response = wopi.op("DELETE")
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == "L"
    assert wopi.check_file_info().status_int == 200


def test_delete_file_with_expired_lock(wopi, clock):
    wopi.lock("L")
    clock.advance(minutes=31)
    assert wopi.op("DELETE").status_int == 200


def test_delete_frees_the_name(wopi, make_file):
    wopi.op("DELETE")
    assert make_file(name="Doc.docx").name == "Doc.docx"


def test_delete_needs_a_write_token(make_file, client_for):
    assert client_for(make_file(), can_write=False).op("DELETE").status_int == 404


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_delete_file_waits_deletes_nothing(wopi, services, clock, database, how):
    """The token was live when DeleteFile began, and is not once the deletion holds the file: 401, and the file
    stays, as PutFile and RenameFile answer."""
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token
    answers = []
    with services.db.write() as s:
        load_file(s, wopi.file_id)  # as another writer of the file holds it: its row, or SQLite's turn to write
        deleting = threading.Thread(target=lambda: answers.append(wopi.op("DELETE")))
        deleting.start()
        assert wait_until(lambda: waits_for_another_writer(database, deleting)), "the deletion never waited"
        if how == "revoked":
            assert services.tokens.revoke(s, token=wopi.token) == 1
        else:
            clock.advance(minutes=11)
    deleting.join(30)
    assert answers[0].status_int == 401 and answers[0].headers["X-WOPI-FailureReason"]
    assert services.files.get(wopi.file_id).name == "Doc.docx"


# -- PutUserInfo ----------------------------------------------------------------------


def test_user_info_is_stored_per_user_and_returned(wopi, make_file, client_for):
    assert wopi.op("PUT_USER_INFO", b'{"theme":"dark"}').status_int == 200
    assert wopi.check_file_info().json["UserInfo"] == '{"theme":"dark"}'
    other_file = client_for(make_file(name="Other.docx"))
    assert other_file.check_file_info().json["UserInfo"] == '{"theme":"dark"}'
    bob = client_for(make_file(name="Bobs.docx"), user="bob")
    assert "UserInfo" not in bob.check_file_info().json


def test_user_info_can_be_replaced_and_emptied(wopi):
    wopi.op("PUT_USER_INFO", b"first")
    wopi.op("PUT_USER_INFO", b"")
    assert wopi.check_file_info().json["UserInfo"] == ""


def test_user_info_up_to_1024_characters(wopi):
    assert wopi.op("PUT_USER_INFO", b"u" * 1024).status_int == 200
    response = wopi.op("PUT_USER_INFO", b"u" * 1025)
    assert response.status_int == 400
    assert "1024" in response.headers["X-WOPI-FailureReason"]
    assert wopi.check_file_info().json["UserInfo"] == "u" * 1024


def test_user_info_must_be_text(wopi):
    response = wopi.op("PUT_USER_INFO", b"\xff\xfe")
    assert response.status_int == 400
    assert "UTF-8" in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_revoked_or_expired_while_user_info_comes_stores_nothing(wopi, services, clock, how):
    """The token was live when PutUserInfo began, and is not once its body is in: 401, as PutFile's, and the
    user's UserInfo is as it was."""
    wopi.op("PUT_USER_INFO", b"before")
    wopi.token = services.issue_token(wopi.file_id, "alice", True, clock.now() + timedelta(minutes=10)).token

    def meanwhile() -> None:
        revoke_or_expire(services, clock, wopi.token, how)

    answer = while_the_body_comes(
        lambda held: wopi.raw_post("", held, 1000, X_WOPI_Override="PUT_USER_INFO"), b"u" * 1000, meanwhile
    )
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    assert services.user("alice").user_info == "before"


def test_user_info_with_a_read_only_token(make_file, client_for):
    reader = client_for(make_file(), can_write=False)
    assert reader.op("PUT_USER_INFO", b"prefs").status_int == 200
    assert reader.check_file_info().json["UserInfo"] == "prefs"
