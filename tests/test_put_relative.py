"""PutRelativeFile (docs/wopi.md §3.9, §1.5, §7 item 6)."""

import io
import unicodedata
from urllib.parse import parse_qs, urlsplit

import pytest

from wopihost.names import encode_utf7

from .helpers import WopiClient, raw_utf8, stored_blobs, while_the_body_comes


def put_relative(wopi, body=b"new file", **headers):
    return wopi.op("PUT_RELATIVE", body, **headers)


def follow(wopi, url: str):
    """A client for the file behind a returned Url (what the validator does next)."""
    parts = urlsplit(url)
    file_id = parts.path.rsplit("/", 1)[1]
    token = parse_qs(parts.query)["access_token"][0]
    return type(wopi)(wopi.testapp, file_id, token)


def test_suggested_extension_keeps_the_source_name(wopi):
    response = put_relative(wopi, b"%PDF", X_WOPI_SuggestedTarget=".pdf")
    assert response.status_int == 200
    assert response.json["Name"] == "Doc.pdf"
    assert follow(wopi, response.json["Url"]).get_file().body == b"%PDF"


def test_response_urls(wopi):
    body = put_relative(wopi, X_WOPI_SuggestedTarget="Copy.docx").json
    new = follow(wopi, body["Url"])
    assert body["Url"].startswith(f"https://wopi.example.test/wopi/files/{new.file_id}?access_token=")
    assert body["HostViewUrl"].startswith("https://wopi.example.test/host/view/")
    assert body["HostEditUrl"].startswith("https://wopi.example.test/host/edit/")
    assert None not in body.values()


def test_returned_url_works_for_every_follow_up_operation(wopi):
    new = follow(wopi, put_relative(wopi, X_WOPI_SuggestedTarget="Copy.docx").json["Url"])
    assert new.check_file_info().json["BaseFileName"] == "Copy.docx"
    assert new.lock("L").status_int == 200
    assert new.op("UNLOCK", X_WOPI_Lock="L").status_int == 200
    assert new.op("RENAME_FILE", X_WOPI_RequestedName="Renamed").json["Name"] == "Renamed"
    assert new.op("DELETE").status_int == 200
    assert new.check_file_info().status_int == 404


def test_answers_the_time_collabora_sends_back_in_its_next_save_of_the_open_file(wopi, clock):
    """Collabora keeps LastModifiedTime from a Save As's answer as that of the document it has open, and sends it
    with its next PutFile there: the source's time, so that save passes and a change by another is still caught."""
    before = wopi.check_file_info().json["LastModifiedTime"]
    clock.advance(seconds=5)
    answer = put_relative(wopi, X_WOPI_SuggestedTarget="Copy.docx").json
    assert answer["LastModifiedTime"] == before
    assert follow(wopi, answer["Url"]).check_file_info().json["LastModifiedTime"] != before
    wopi.lock("L")
    assert wopi.put_file(b"mine", lock="L", X_COOL_WOPI_Timestamp=answer["LastModifiedTime"]).status_int == 200
    stale = wopi.put_file(b"again", lock="L", X_COOL_WOPI_Timestamp=answer["LastModifiedTime"])
    assert stale.status_int == 409 and stale.json["COOLStatusCode"] == 1010


def test_overwriting_its_own_file_answers_that_files_new_time(wopi, clock):
    clock.advance(seconds=5)
    answer = put_relative(wopi, X_WOPI_RelativeTarget="Doc.docx", X_WOPI_OverwriteRelativeTarget="true").json
    assert answer["Name"] == "Doc.docx"
    assert answer["LastModifiedTime"] == wopi.check_file_info().json["LastModifiedTime"]


def test_new_token_has_the_same_expiry_and_user(wopi, services, clock):
    new = follow(wopi, put_relative(wopi, X_WOPI_SuggestedTarget="Copy.docx").json["Url"])
    with services.db.read() as s:
        original = services.tokens.verify(s, wopi.token, wopi.file_id)
        issued = services.tokens.verify(s, new.token, new.file_id)
    assert issued.expires_at == original.expires_at
    assert issued.user_id == original.user_id and issued.can_write


def test_new_file_is_created_in_the_source_folder(wopi, services):
    new = follow(wopi, put_relative(wopi, X_WOPI_SuggestedTarget="Copy.docx").json["Url"])
    assert services.files.get(new.file_id).folder_id == services.files.get(wopi.file_id).folder_id


def test_suggested_name_that_exists_is_made_unique(wopi):
    names = [put_relative(wopi, X_WOPI_SuggestedTarget="Doc.docx").json["Name"] for _ in range(2)]
    assert names == ["Doc (2).docx", "Doc (3).docx"]


@pytest.mark.parametrize(
    "suggested, expected",
    [
        ("a/b:c.docx", "a_b_c.docx"),
        ("../../etc/passwd.docx", "_.._etc_passwd.docx"),
        ("..\\..\\x.docx", "_.._x.docx"),
        ("bad\x01name.docx", "bad_name.docx"),
        ("CON.docx", "_CON.docx"),
        (".docx", "Doc (2).docx"),
        # nothing suggested: the source's name, its extension kept (it was "Untitled", with none)
        ("", "Doc (2).docx"),
        (" ", "Doc (2).docx"),
        (". .", "Doc (2).docx"),
    ],
)
def test_suggested_mode_never_fails_it_sanitises(wopi, suggested, expected, tmp_path):
    response = put_relative(wopi, X_WOPI_SuggestedTarget=encode_utf7(suggested))
    assert response.status_int == 200
    assert response.json["Name"] == expected
    assert not [p for p in tmp_path.rglob("*") if "passwd" in p.name or p.name == "x.docx"]


def test_suggested_target_that_is_not_utf7_is_used_raw(wopi):
    response = put_relative(wopi, X_WOPI_SuggestedTarget="Plain+Name.docx")  # '+N' starts a UTF-7 shift
    assert response.status_int == 200
    assert response.json["Name"].endswith(".docx")


@pytest.mark.parametrize(
    "encoded, expected",
    [
        ("madeup+AF8-name.wopitestx", "madeup_name.wopitestx"),  # .NET encodes even '_' (docs/wopi.md §1.5)
        (encode_utf7("Résumé 日本.docx"), "Résumé 日本.docx"),
    ],
)
def test_names_are_utf7_decoded(wopi, encoded, expected):
    assert put_relative(wopi, X_WOPI_RelativeTarget=encoded).json["Name"] == expected


@pytest.mark.parametrize("mode", ["X_WOPI_SuggestedTarget", "X_WOPI_RelativeTarget"])
@pytest.mark.parametrize("name", ["Grüße.docx", "Résumé 日本.docx", "Voilà", "Å"])
def test_a_name_sent_as_raw_utf8_is_read_as_utf8(wopi, mode, name):
    """Some clients send the name's UTF-8 bytes, not UTF-7 (docs/wopi.md §1.5): the name, not its bytes read as
    Latin-1 ('GrÃ¼Ãe.docx'). A last byte of 0x85 or 0xA0 ('Å', 'à') is part of it, not space around it."""
    response = put_relative(wopi, **{mode: raw_utf8(name)})
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert response.json["Name"] == name
    assert follow(wopi, response.json["Url"]).check_file_info().json["BaseFileName"] == name


def test_a_suggested_extension_and_a_raw_latin1_name_are_read_as_before(wopi):
    """ASCII is UTF-7 still; bytes that are not UTF-8 (a Latin-1 name) are no UTF-7 either: suggested mode uses
    them raw, read as Latin-1, as it did."""
    assert put_relative(wopi, X_WOPI_SuggestedTarget="+AOk-t+AOk-.docx").json["Name"] == "été.docx"
    assert put_relative(wopi, X_WOPI_SuggestedTarget="Gr\xfc\xdfe.docx").json["Name"] == "Grüße.docx"


def test_relative_target_is_kept_composed(wopi):
    """A decomposed name (as macOS spells it) is the same name composed: stored as such, not as sent."""
    decomposed = unicodedata.normalize("NFD", "Résumé.docx")
    response = put_relative(wopi, X_WOPI_RelativeTarget=encode_utf7(decomposed))
    assert response.json["Name"] == "Résumé.docx"
    assert follow(wopi, response.json["Url"]).check_file_info().json["BaseFileName"] == "Résumé.docx"


def test_relative_target_creates_exactly_that_name(wopi):
    response = put_relative(wopi, b"exact", X_WOPI_RelativeTarget="Exact Name.docx")
    assert response.status_int == 200
    assert response.json["Name"] == "Exact Name.docx"


def test_relative_target_that_exists_conflicts_with_a_valid_alternative(wopi, services):
    response = put_relative(wopi, b"new", X_WOPI_RelativeTarget="Doc.docx")
    assert response.status_int == 409
    assert response.headers["X-WOPI-ValidRelativeTarget"] == encode_utf7("Doc (2).docx")
    assert wopi.get_file().body == b"hello world"
    assert len(services.files.list()) == 1


def test_relative_target_name_conflict_ignores_case(wopi):
    assert put_relative(wopi, X_WOPI_RelativeTarget="DOC.DOCX").status_int == 409


def test_names_apart_on_windows_are_two_files_though_full_case_folding_joins_them(wopi):
    """On Windows "Maße" is not "Masse", nor "ﬁle" "file": case is folded one character for one."""
    for name in ("Maße.docx", "Masse.docx", "ﬁle.docx", "file.docx"):
        response = put_relative(wopi, name.encode(), X_WOPI_RelativeTarget=encode_utf7(name))
        assert (response.status_int, response.json["Name"]) == (200, name)
        assert follow(wopi, response.json["Url"]).get_file().body == name.encode()
    assert put_relative(wopi, X_WOPI_RelativeTarget=encode_utf7("MASSE.DOCX")).status_int == 409  # case aside


@pytest.mark.parametrize("flag", ["True", "true", "TRUE"])
def test_overwrite_replaces_the_existing_file_in_place(wopi, flag):
    response = put_relative(wopi, b"overwritten", X_WOPI_RelativeTarget="Doc.docx", X_WOPI_OverwriteRelativeTarget=flag)
    assert response.status_int == 200
    target = follow(wopi, response.json["Url"])
    assert target.file_id == wopi.file_id
    assert wopi.get_file().body == b"overwritten"
    assert wopi.check_file_info().json["Version"] == "2"


@pytest.mark.parametrize("flag", ["False", "false"])
def test_overwrite_false_still_conflicts(wopi, flag):
    assert put_relative(wopi, X_WOPI_RelativeTarget="Doc.docx", X_WOPI_OverwriteRelativeTarget=flag).status_int == 409


def test_a_taken_name_conflicts_with_the_targets_lock(wopi):
    """WOPI's every 409 carries X-WOPI-Lock: the target's lock, "" when it has none (docs/wopi.md §3.9)."""
    unlocked = put_relative(wopi, X_WOPI_RelativeTarget="Doc.docx")
    assert unlocked.status_int == 409 and unlocked.headers["X-WOPI-Lock"] == ""
    wopi.lock("target-lock")
    locked = put_relative(wopi, X_WOPI_RelativeTarget="Doc.docx")
    assert locked.status_int == 409 and locked.headers["X-WOPI-Lock"] == "target-lock"


def test_a_taken_name_the_token_may_not_write_does_not_tell_its_lock(make_file, client_for):
    source, other = make_file(b"A", name="A.docx"), make_file(b"alice's B", name="B.docx")
    assert client_for(other).lock("alices-lock").status_int == 200
    bob = client_for(source, user="bob")
    for overwrite in ("False", "True"):
        response = put_relative(bob, X_WOPI_RelativeTarget="B.docx", X_WOPI_OverwriteRelativeTarget=overwrite)
        assert response.status_int == 409 and response.headers["X-WOPI-Lock"] == ""


def test_overwrite_of_a_locked_target_conflicts_with_its_lock(wopi):
    wopi.lock("target-lock")
    response = put_relative(wopi, b"x", X_WOPI_RelativeTarget="Doc.docx", X_WOPI_OverwriteRelativeTarget="True")
    assert response.status_int == 409
    assert response.headers["X-WOPI-Lock"] == "target-lock"
    assert wopi.get_file().body == b"hello world"


def test_overwrite_of_a_file_the_token_never_reached_is_a_taken_name(make_file, client_for, services):
    """Bob's token is for alice's A.docx alone (no folder rights): overwriting her B.docx beside it would write a
    file he was never given, and hand him a write token for it in the answer (docs/wopi.md §4.2)."""
    source, other = make_file(b"A", name="A.docx"), make_file(b"alice's B", name="B.docx")
    bob = client_for(source, user="bob")
    response = put_relative(bob, b"bob's", X_WOPI_RelativeTarget="B.docx", X_WOPI_OverwriteRelativeTarget="True")
    assert response.status_int == 409 and "may not overwrite" in response.headers["X-WOPI-FailureReason"]
    assert response.headers["X-WOPI-ValidRelativeTarget"] == encode_utf7("B (2).docx")
    assert (
        client_for(other).get_file().body == b"alice's B" and client_for(other).check_file_info().json["Version"] == "1"
    )


@pytest.mark.parametrize("folders", ["", "w"])
def test_overwrite_of_a_file_revoked_for_the_user_is_a_taken_name(make_file, services, testapp, clock, folders):
    """`token revoke --file B --user alice`: no token of alice's from before it opens B any more, so A's may not
    overwrite it either, whether alice created B or A's folder rights reach it (docs/wopi.md §1.1)."""
    source, other = make_file(b"A", name="A.docx"), make_file(b"alice's B", name="B.docx")
    alice = WopiClient(testapp, source.id, services.issue_token(source.id, "alice", True, folders=folders).token)
    clock.advance(seconds=1)
    with services.db.write() as s:
        services.tokens.revoke(s, file_id=other.id, user_id="alice")
    response = put_relative(alice, b"new", X_WOPI_RelativeTarget="B.docx", X_WOPI_OverwriteRelativeTarget="True")
    assert response.status_int == 409 and "may not overwrite" in response.headers["X-WOPI-FailureReason"]
    assert services.files.get(other.id).version == 1
    # a token issued since opens B again, and so may overwrite it
    clock.advance(seconds=1)
    alice.token = services.issue_token(source.id, "alice", True, folders=folders).token
    response = put_relative(alice, b"new", X_WOPI_RelativeTarget="B.docx", X_WOPI_OverwriteRelativeTarget="True")
    assert response.status_int == 200 and response.json["Name"] == "B.docx"


def test_overwrite_of_a_file_the_user_created_or_the_folder_rights_reach(make_file, client_for, services, testapp):
    source = make_file(b"A", name="A.docx")
    bob = client_for(source, user="bob")
    made = follow(bob, put_relative(bob, b"bob's first", X_WOPI_RelativeTarget="Mine.docx").json["Url"])
    again = put_relative(bob, b"bob's second", X_WOPI_RelativeTarget="Mine.docx", X_WOPI_OverwriteRelativeTarget="True")
    assert again.status_int == 200 and made.get_file().body == b"bob's second"
    other = make_file(b"alice's B", name="B.docx")
    with_folders = type(bob)(testapp, source.id, services.issue_token(source.id, "bob", True, folders="lw").token)
    response = put_relative(
        with_folders, b"bob's", X_WOPI_RelativeTarget="B.docx", X_WOPI_OverwriteRelativeTarget="True"
    )
    assert response.status_int == 200 and client_for(other).get_file().body == b"bob's"


def test_source_lock_is_irrelevant(wopi):
    wopi.lock("source-lock")
    assert put_relative(wopi, X_WOPI_SuggestedTarget=".pdf").status_int == 200


@pytest.mark.parametrize(
    "name",
    [
        "a/b.docx",
        "..",
        "a\\b.docx",
        "x\x01y.docx",
        "con.docx",
        "CON." + "x" * 300 + ".docx",  # a device name at the longest: its valid alternative must not be longer
        "a:b.docx",
        "trailing.",
        ".hidden",
    ],
)
def test_illegal_relative_target_is_400_with_a_valid_alternative(wopi, services, name, tmp_path):
    response = put_relative(wopi, X_WOPI_RelativeTarget=encode_utf7(name))
    assert response.status_int == 400
    assert response.headers["X-WOPI-FailureReason"]
    assert response.headers["X-WOPI-ValidRelativeTarget"]
    assert len(services.files.list()) == 1


def test_relative_target_that_is_not_utf7_is_400(wopi):
    response = put_relative(wopi, X_WOPI_RelativeTarget="bad+AAA€")
    assert response.status_int == 400


def test_both_target_headers_is_501(wopi):
    response = put_relative(wopi, X_WOPI_SuggestedTarget=".pdf", X_WOPI_RelativeTarget="x.pdf")
    assert response.status_int == 501
    assert response.headers["X-WOPI-FailureReason"]


def test_no_target_header_is_400(wopi):
    assert put_relative(wopi).status_int == 400


def test_read_only_user_gets_501(make_file, client_for):
    response = put_relative(client_for(make_file(), can_write=False), X_WOPI_SuggestedTarget=".pdf")
    assert response.status_int == 501


def test_malformed_overwrite_flag_is_400(wopi):
    response = put_relative(wopi, X_WOPI_RelativeTarget="x.docx", X_WOPI_OverwriteRelativeTarget="maybe")
    assert response.status_int == 400
    assert "X-WOPI-OverwriteRelativeTarget" in response.headers["X-WOPI-FailureReason"]


@pytest.mark.parametrize("flag", ["maybe", "1"])
def test_suggested_mode_does_not_read_the_overwrite_flag(wopi, flag):
    """A suggested name must never get 400 or 409, and overwrites nothing: the flag is a specific name's alone."""
    response = put_relative(wopi, X_WOPI_SuggestedTarget="Doc.docx", X_WOPI_OverwriteRelativeTarget=flag)
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
    assert response.json["Name"] == "Doc (2).docx"
    assert wopi.get_file().body == b"hello world"


def test_too_large_is_413(wopi, settings, services):
    response = put_relative(wopi, b"x" * (settings.max_file_size + 1), X_WOPI_SuggestedTarget=".pdf")
    assert response.status_int == 413
    assert len(services.files.list()) == 1


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise AssertionError("the body was read")


@pytest.mark.parametrize("content_length", [5, None], ids=["content-length", "chunked"])
def test_declared_size_too_large_is_413_before_reading(wopi, settings, services, content_length):
    size = str(settings.max_file_size + 1)
    response = wopi.raw_post(
        "",
        Unreadable(),
        content_length,
        X_WOPI_Override="PUT_RELATIVE",
        X_WOPI_SuggestedTarget=".pdf",
        X_WOPI_Size=size,
    )
    assert response.status_int == 413
    assert "limit" in response.headers["X-WOPI-FailureReason"]
    assert len(services.files.list()) == 1


@pytest.mark.parametrize("value", ["lots", "-1", "+5", "1.5", "0x10", "5 5", "5e0"])
def test_malformed_size_header_is_400(wopi, services, value):
    response = put_relative(wopi, b"12345", X_WOPI_SuggestedTarget=".pdf", X_WOPI_Size=value)
    assert response.status_int == 400
    assert "X-WOPI-Size" in response.headers["X-WOPI-FailureReason"]
    assert len(services.files.list()) == 1


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
def test_body_of_the_declared_size_is_stored(wopi, content_length):
    body = b"exactly 16 bytes"
    length = len(body) if content_length else None
    response = wopi.raw_post(
        "", io.BytesIO(body), length, X_WOPI_Override="PUT_RELATIVE", X_WOPI_SuggestedTarget=".pdf", X_WOPI_Size="16"
    )
    assert response.status_int == 200
    assert follow(wopi, response.json["Url"]).get_file().body == body


def test_chunked_body_without_a_declared_size_is_stored(wopi):
    body = io.BytesIO(b"no size said")
    response = wopi.raw_post("", body, None, X_WOPI_Override="PUT_RELATIVE", X_WOPI_SuggestedTarget=".pdf")
    assert response.status_int == 200
    assert follow(wopi, response.json["Url"]).get_file().body == b"no size said"


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "body", [b"1234", b"123456", b"", b"x" * 70_000], ids=["short", "long", "empty", "much-longer"]
)
@pytest.mark.parametrize(
    "target",
    [
        {"X_WOPI_SuggestedTarget": ".pdf"},
        {"X_WOPI_RelativeTarget": "Doc.docx", "X_WOPI_OverwriteRelativeTarget": "true"},
    ],
    ids=["new", "overwrite"],
)
def test_body_of_another_size_than_declared_is_400_and_leaves_nothing(wopi, services, content_length, body, target):
    """X-WOPI-Size is the size of the file: a body of any other length is not the file the client meant to save.
    Nothing of it may stay: no new file, no changed content, no blob, no partial write."""
    blobs = stored_blobs(services)
    length = len(body) if content_length else None
    response = wopi.raw_post("", io.BytesIO(body), length, X_WOPI_Override="PUT_RELATIVE", X_WOPI_Size="5", **target)
    assert response.status_int == 400
    assert "X-WOPI-Size" in response.headers["X-WOPI-FailureReason"]
    assert len(services.files.list()) == 1
    assert wopi.get_file().body == b"hello world"
    assert wopi.check_file_info().json["Version"] == "1"
    assert stored_blobs(services) == blobs
    assert services.blobs.partial_writes() == []


def test_file_conversion_flow_is_accepted(wopi):
    response = put_relative(wopi, b"docx bytes", X_WOPI_SuggestedTarget=".docx", X_WOPI_FileConversion="")
    assert response.status_int == 200


def test_a_token_revoked_while_the_body_comes_makes_no_file(wopi, services):
    """The token was live when PutRelativeFile began, and revoked before its body was in: 401, and no file."""
    before, blobs = len(services.files.list()), stored_blobs(services)

    def revoke() -> None:
        with services.db.write() as s:
            assert services.tokens.revoke(s, token=wopi.token) == 1

    answer = while_the_body_comes(
        lambda held: wopi.raw_post(
            "", held, 4096, X_WOPI_Override="PUT_RELATIVE", X_WOPI_SuggestedTarget="Copy.docx", X_WOPI_Size="4096"
        ),
        b"x" * 4096,
        revoke,
    )
    assert answer.status_int == 401 and answer.headers["X-WOPI-FailureReason"]
    assert len(services.files.list()) == before
    assert stored_blobs(services) == blobs


def test_a_source_moved_while_the_body_comes_gets_its_new_file_beside_it_where_it_is_now(wopi, services, graph):
    """PutRelativeFile puts the new file beside its source. The source's folder was read before the body came,
    and a move meanwhile (Graph's PATCH parentReference, say) left the new file in the folder the source had
    left."""
    elsewhere = graph.post_json("me/drive/root/children", {"name": "Elsewhere", "folder": {}}).json["id"]

    def move() -> None:
        moved = graph.patch_json(f"me/drive/items/{wopi.file_id}", {"parentReference": {"id": elsewhere}})
        assert moved.status_int == 200

    answer = while_the_body_comes(
        lambda held: wopi.raw_post(
            "", held, 4096, X_WOPI_Override="PUT_RELATIVE", X_WOPI_SuggestedTarget=".pdf", X_WOPI_Size="4096"
        ),
        b"x" * 4096,
        move,
    )
    assert answer.status_int == 200 and answer.json["Name"] == "Doc.pdf"
    listed = graph.get(f"me/drive/items/{elsewhere}/children").json["value"]
    assert sorted(item["name"] for item in listed) == ["Doc.docx", "Doc.pdf"]
