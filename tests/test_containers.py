"""WOPI containers and the ecosystem (docs/wopi.md §4): every operation, status code and header, and what the
tokens handed out in responses may do."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import webtest

from wopihost.app import create_app
from wopihost.clock import iso_round_trip
from wopihost.errors import WopiError
from wopihost.files import Target
from wopihost.names import decode_utf7, encode_utf7
from wopihost.repository import lock_folder

from .helpers import WopiClient, raw_utf8, wait_until, waits_for_another_writer

PUBLIC = "https://wopi.example.test"


class Follow:
    """Follows the absolute URLs that WOPI responses hand out, as a WOPI client does."""

    def __init__(self, testapp: webtest.TestApp):
        self.testapp = testapp

    @staticmethod
    def local(url: str, suffix: str = "") -> str:
        assert url.startswith(PUBLIC), url
        parts = urlsplit(url)
        return f"{parts.path}{suffix}?{parts.query}"

    def get(self, url: str, suffix: str = "", **headers):
        return self.testapp.get(self.local(url, suffix), headers=headers, expect_errors=True)

    def post(self, url: str, override: str, body: bytes = b"", suffix: str = "", **headers):
        headers = {"X-WOPI-Override": override, **{k.replace("_", "-"): v for k, v in headers.items()}}
        return self.testapp.post(self.local(url, suffix), body, headers=headers, expect_errors=True)


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["access_token"][0]


@pytest.fixture
def follow(testapp) -> Follow:
    return Follow(testapp)


@pytest.fixture
def placed(services):
    """alice's file Docs/Report.docx, with a write token whose containers may be listed, made in, managed."""

    def place(folders: str = "lcmw", can_write: bool = True, user: str = "alice"):
        file = services.add_file("alice", "Report.docx", io.BytesIO(b"report"), ["Docs"])
        return file, services.issue_token(file.id, user, can_write, folders=folders).token

    return place


@pytest.fixture
def placement(placed):
    return placed()


@pytest.fixture
def parent(placement, follow):
    """The URL of Docs (the test file's container), from EnumerateAncestors with a full-rights token."""
    file, token = placement
    response = follow.testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}")
    return response.json["AncestorsWithRootFirst"][-1]["Url"]


# -- EnumerateAncestors, CheckContainerInfo ------------------------------------------------


def test_file_ancestors_are_root_first_with_container_urls(placed, testapp, follow):
    file, token = placed()
    response = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}")
    assert response.status_int == 200 and response.content_type == "application/json"
    ancestors = response.json["AncestorsWithRootFirst"]
    assert [a["Name"] for a in ancestors] == ["root", "Docs"]
    for ancestor in ancestors:
        assert ancestor["Url"].startswith(f"{PUBLIC}/wopi/containers/") and "?access_token=" in ancestor["Url"]
    assert follow.get(ancestors[1]["Url"]).json["Name"] == "Docs"
    assert "X-WOPI-EnumerationIncomplete" not in response.headers


def test_container_ancestors_and_the_root_has_none(parent, follow):
    ancestors = follow.get(parent, "/ancestry").json["AncestorsWithRootFirst"]
    assert [a["Name"] for a in ancestors] == ["root"]
    assert follow.get(ancestors[0]["Url"], "/ancestry").json == {"AncestorsWithRootFirst": []}


def test_check_container_info_reports_the_tokens_rights(parent, follow):
    info = follow.get(parent).json
    assert info == {
        "Name": "Docs",
        "UserCanCreateChildContainer": True,
        "UserCanCreateChildFile": True,
        "UserCanDelete": True,
        "UserCanRename": True,
        "SupportedShareUrlTypes": ["ReadOnly", "ReadWrite"],
        "IsAnonymousUser": False,
        "IsEduUser": False,
        "LicenseCheckForEditIsEnabled": False,
    }


def test_a_root_container_is_neither_renamed_nor_deleted(parent, follow):
    root = follow.get(parent, "/ancestry").json["AncestorsWithRootFirst"][0]["Url"]
    info = follow.get(root).json
    assert (info["Name"], info["UserCanRename"], info["UserCanDelete"], info["UserCanCreateChildFile"]) == (
        "root",
        False,
        False,
        True,
    )
    assert follow.post(root, "RENAME_CONTAINER", X_WOPI_RequestedName="x").status_int == 409
    assert follow.post(root, "DELETE_CONTAINER").status_int == 409


def test_licensing_flags_are_checkfileinfos(placement, testapp, parent, follow):
    file, token = placement
    info = testapp.get(f"/wopi/files/{file.id}?access_token={token}").json
    container = follow.get(parent).json
    for flag in ("IsAnonymousUser", "IsEduUser", "LicenseCheckForEditIsEnabled"):
        assert info[flag] is container[flag] is False
    assert info["SupportsContainers"] is info["SupportsEcosystem"] is True


@pytest.mark.parametrize(
    "folders, expected",
    [
        ("", (False, False, False, [])),
        ("c", (True, False, False, [])),
        ("l", (False, False, False, ["ReadOnly"])),
        ("lm", (False, True, True, ["ReadOnly"])),
        ("lcmw", (True, True, True, ["ReadOnly", "ReadWrite"])),
    ],
)
def test_a_file_tokens_reach_decides_its_containers_rights(placed, testapp, follow, folders, expected):
    file, token = placed(folders)
    docs = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    info = follow.get(docs["Url"]).json
    assert (
        info["UserCanCreateChildFile"],
        info["UserCanRename"],
        info["UserCanDelete"],
        info["SupportedShareUrlTypes"],
    ) == expected
    assert info["UserCanCreateChildContainer"] is info["UserCanCreateChildFile"]


# -- EnumerateChildren ------------------------------------------------------------------------


def test_children_are_folders_and_files_with_checkfileinfos_values(services, placement, testapp, parent, follow):
    file, token = placement
    folder_id = urlsplit(parent).path.rsplit("/", 1)[1]
    services.files.create("alice", folder_id, "Sheet.XLSX", io.BytesIO(b"12345"))
    follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub")
    listing = follow.get(parent, "/children").json
    assert [c["Name"] for c in listing["ChildContainers"]] == ["Sub"]
    assert [f["Name"] for f in listing["ChildFiles"]] == ["Report.docx", "Sheet.XLSX"]
    report = listing["ChildFiles"][0]
    info = follow.get(report["Url"]).json  # the child's URL is a working WOPISrc with a token
    assert (report["Size"], report["Version"], report["LastModifiedTime"]) == (
        info["Size"],
        info["Version"],
        info["LastModifiedTime"],
    )
    assert report["Version"] == "1" and isinstance(report["Size"], int)
    assert info["UserCanWrite"] is True  # the container's "w" right reaches its files
    assert follow.get(report["Url"], "/contents").body == b"report"
    assert iso_round_trip(services.files.get(file.id).modified_at) == report["LastModifiedTime"]


@pytest.mark.parametrize(
    "header, names",
    [
        (".docx", ["Report.docx"]),
        (".xlsx", ["Sheet.XLSX"]),  # matched ignoring case
        (".DOCX,.xlsx", ["Report.docx", "Sheet.XLSX"]),
        ("xlsx", ["Sheet.XLSX"]),  # a missing dot is forgiven
        (".pdf", []),
        ("", ["Report.docx", "Sheet.XLSX"]),
    ],
)
def test_children_filtered_by_extension(services, parent, follow, header, names):
    folder_id = urlsplit(parent).path.rsplit("/", 1)[1]
    services.files.create("alice", folder_id, "Sheet.XLSX", io.BytesIO(b"12345"))
    follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub.docx")
    listing = follow.get(parent, "/children", **{"X-WOPI-FileExtensionFilterList": header}).json
    assert [f["Name"] for f in listing["ChildFiles"]] == names
    assert [c["Name"] for c in listing["ChildContainers"]] == ["Sub.docx"]  # the filter is for files only


def test_children_of_a_read_only_container_are_read_only(services, testapp, follow):
    file = services.add_file("alice", "A.docx", io.BytesIO(b"a"), ["Docs"])
    token = services.issue_container_token(file.folder_id, "alice", "l").token
    listing = testapp.get(f"/wopi/containers/{file.folder_id}/children?access_token={token}").json
    child = follow.get(listing["ChildFiles"][0]["Url"]).json
    assert (child["UserCanWrite"], child["ReadOnly"]) == (False, True)
    assert follow.post(listing["ChildFiles"][0]["Url"], "LOCK", X_WOPI_Lock="L").status_int == 404


# -- token scope --------------------------------------------------------------------------------


def test_a_file_token_does_not_list_its_siblings(services, placed, testapp, follow):
    file, token = placed(folders="c")
    services.files.create("alice", file.folder_id, "Secret.docx", io.BytesIO(b"secret"))
    for ancestor in testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"]:
        response = follow.get(ancestor["Url"], "/children")
        assert response.status_int == 404
        assert "does not allow listing" in response.headers["X-WOPI-FailureReason"]
        assert b"Secret" not in response.body


def test_a_container_token_cannot_read_a_file(parent, placement, testapp, follow):
    file, _ = placement
    container_token = token_of(parent)
    for suffix in ("", "/contents"):
        response = testapp.get(f"/wopi/files/{file.id}{suffix}?access_token={container_token}", expect_errors=True)
        assert response.status_int == 401
        assert "container" in response.headers["X-WOPI-FailureReason"]


def test_a_container_token_opens_no_file_named_as_its_resource(parent, placement, testapp):
    """A container token is for "c-{folder id}"; a file path naming that is no file of its."""
    file, _ = placement
    for resource in (f"c-{file.folder_id}", "e-"):
        response = testapp.get(f"/wopi/files/{resource}?access_token={token_of(parent)}", expect_errors=True)
        assert response.status_int == 401 and response.headers["X-WOPI-FailureReason"]


def test_a_file_token_is_not_a_container_token(placed, testapp):
    file, token = placed()
    response = testapp.get(f"/wopi/containers/{file.folder_id}?access_token={token}", expect_errors=True)
    assert response.status_int == 401
    response = testapp.get(f"/wopi/ecosystem?access_token={token}", expect_errors=True)
    assert response.status_int == 401


def test_a_container_token_is_for_one_container(services, parent, testapp, follow):
    other = services.add_file("alice", "B.docx", io.BytesIO(b"b"), ["Other"])
    response = testapp.get(f"/wopi/containers/{other.folder_id}?access_token={token_of(parent)}", expect_errors=True)
    assert response.status_int == 401


def test_handed_out_tokens_expire_with_the_calling_token_and_are_revoked_with_it(
    services, placed, testapp, follow, clock
):
    file, token = placed()
    caller_expiry = testapp.get(f"/wopi/files/{file.id}?access_token={token}").json["AccessTokenExpiry"]
    docs = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    child = follow.get(docs["Url"], "/children").json["ChildFiles"][0]["Url"]
    assert follow.get(child).json["AccessTokenExpiry"] == caller_expiry
    with services.db.write() as s:
        services.tokens.revoke(s, token=token)
    for url in (docs["Url"], child):
        response = follow.get(url)
        assert response.status_int == 401 and "revoked" in response.headers["X-WOPI-FailureReason"]


def test_a_handed_out_token_cannot_be_altered(parent, testapp):
    token = token_of(parent)
    tampered = token[:-2] + ("a" if token[-2] != "a" else "b") + token[-1]
    folder_id = urlsplit(parent).path.rsplit("/", 1)[1]
    assert testapp.get(f"/wopi/containers/{folder_id}?access_token={tampered}", expect_errors=True).status_int == 401


# -- CreateChildContainer ------------------------------------------------------------------------


def test_create_child_container_specific_name(parent, follow):
    response = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="container+AF8-name")
    assert response.status_int == 200
    pointer, info = response.json["ContainerPointer"], response.json["ContainerInfo"]
    assert pointer["Name"] == info["Name"] == "container_name"
    assert "?access_token=" in pointer["Url"]
    assert info["UserCanRename"] is info["UserCanDelete"] is info["UserCanCreateChildFile"] is True
    assert follow.get(pointer["Url"]).json == info
    assert [a["Name"] for a in follow.get(pointer["Url"], "/ancestry").json["AncestorsWithRootFirst"]] == [
        "root",
        "Docs",
    ]


def test_create_child_container_taken_name_is_409_with_a_free_one(parent, follow):
    assert follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub").status_int == 200
    response = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="SUB")  # names ignore case
    assert response.status_int == 409
    assert response.headers["X-WOPI-ValidRelativeTarget"] == "SUB (2)"
    assert follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="v1.2").status_int == 200
    dotted = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="v1.2")
    assert dotted.headers["X-WOPI-ValidRelativeTarget"] == "v1.2 (2)"  # no extension to keep last
    assert follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Report.docx").status_int == 409


def test_create_child_container_suggested_name_never_fails(parent, follow):
    names = [
        follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_SuggestedTarget=name).json["ContainerPointer"]["Name"]
        for name in ("Sub", "Sub", "a/b", "Report.docx")
    ]
    assert names == ["Sub", "Sub (2)", "a_b", "Report.docx (2)"]  # a folder's number goes at the end of its name


def test_every_free_name_is_numbered_alike(parent, follow):
    """A suggested container name is made free as a 409 proposes one, and as a file's is (docs/wopi.md §4.1): one
    scheme, ' (n)', not OneDrive's ' 1' that Graph's conflictBehavior "rename" uses."""
    assert follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub").status_int == 200
    proposed = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub")
    suggested = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_SuggestedTarget="Sub")
    file = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_SuggestedTarget="Sub")
    assert proposed.headers["X-WOPI-ValidRelativeTarget"] == suggested.json["ContainerPointer"]["Name"] == "Sub (2)"
    assert file.json["Name"] == "Sub (3)"  # names are unique across files and folders


def test_a_taken_folder_name_with_a_long_tail_after_a_dot_still_gets_a_free_name(parent, follow):
    """What follows a folder name's last dot counts as an extension (32 characters at most): its number must not
    push it past that, in suggested mode (which never fails) or in the name a 409 suggests."""
    name = "Minutes." + "q" * 31
    made = [follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_SuggestedTarget=name) for _ in range(2)]
    assert [r.status_int for r in made] == [200, 200]
    assert made[1].json["ContainerPointer"]["Name"] == "Minutes." + "q" * 27 + " (2)"
    taken = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget=name)
    assert taken.status_int == 409
    retry = follow.post(
        parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget=taken.headers["X-WOPI-ValidRelativeTarget"]
    )
    assert retry.status_int == 200 and retry.json["ContainerPointer"]["Name"] == "Minutes." + "q" * 27 + " (3)"


@pytest.mark.parametrize(
    "name, reason", [("a/b", "not allowed"), ("CON", "reserved"), (".hidden", "dot"), ("+!", "")]
)  # "+!" is not valid UTF-7
def test_create_child_container_invalid_specific_name_is_400(parent, follow, name, reason):
    response = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget=name)
    assert response.status_int == 400
    assert reason in response.headers["X-WOPI-InvalidContainerNameError"]
    assert follow.get(parent, "/children").json["ChildContainers"] == []


@pytest.mark.parametrize(
    "name, reason",
    [
        ("x" * 251, "the container name is longer than 250 characters"),
        ("Minutes." + "q" * 33, "the part of the container name after its last dot is longer than 32 characters"),
        ("a|b", "the container name contains characters that are not allowed: |"),
        ("trail.", "the container name starts or ends with a space, or ends with a dot"),
    ],
)
def test_an_invalid_container_name_is_refused_as_a_container_name(parent, follow, name, reason):
    """In a container's words, not a file's: a container has no extension."""
    sub = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub").json["ContainerPointer"]["Url"]
    created = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget=name)
    renamed = follow.post(sub, "RENAME_CONTAINER", X_WOPI_RequestedName=name)
    for response in (created, renamed):
        assert response.status_int == 400
        assert response.headers["X-WOPI-InvalidContainerNameError"] == reason


def test_a_container_target_that_is_not_utf7_is_refused_naming_its_header(parent, follow):
    """As CreateChildFile's and RenameContainer's are, not as "the target"."""
    response = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="+!")
    assert response.headers["X-WOPI-InvalidContainerNameError"] == "X-WOPI-RelativeTarget is not valid UTF-7"


def test_create_child_container_wants_exactly_one_target(parent, follow):
    both = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="a", X_WOPI_SuggestedTarget="a")
    assert both.status_int == 501
    assert follow.post(parent, "CREATE_CHILD_CONTAINER").status_int == 400


def test_creating_needs_the_create_right(placed, testapp, follow):
    file, token = placed(folders="l")
    docs = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    for override in ("CREATE_CHILD_CONTAINER", "CREATE_CHILD_FILE"):
        response = follow.post(docs["Url"], override, X_WOPI_RelativeTarget="New.docx")
        assert response.status_int == 404
        assert "does not allow creating" in response.headers["X-WOPI-FailureReason"]
    assert follow.get(docs["Url"], "/children").json["ChildContainers"] == []


def test_what_a_narrow_token_creates_is_the_creators_but_its_surroundings_stay_narrow(placed, testapp, follow):
    file, token = placed(folders="c")
    docs = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    made = follow.post(docs["Url"], "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Mine").json
    assert made["ContainerInfo"]["UserCanDelete"] is True
    assert follow.get(made["ContainerPointer"]["Url"], "/children").status_int == 200  # its own: listed
    above = follow.get(made["ContainerPointer"]["Url"], "/ancestry").json["AncestorsWithRootFirst"][-1]
    assert above["Name"] == "Docs"
    assert follow.get(above["Url"], "/children").status_int == 404  # Docs still may not be listed
    assert follow.get(above["Url"]).json["UserCanDelete"] is False


# -- CreateChildFile --------------------------------------------------------------------------


def test_create_child_file_is_empty_and_its_url_works(services, parent, follow):
    response = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_SuggestedTarget="CreateChildFileTestFile.wopitest")
    assert response.status_int == 200
    body = response.json
    assert body["Name"] == "CreateChildFileTestFile.wopitest"
    assert body["HostViewUrl"].startswith(PUBLIC) and body["HostEditUrl"].startswith(PUBLIC)
    info = follow.get(body["Url"]).json
    assert (info["BaseFileName"], info["Size"], info["UserCanWrite"], info["UserCanRename"]) == (
        "CreateChildFileTestFile.wopitest",
        0,
        True,
        True,
    )
    assert follow.get(body["Url"], "/contents").body == b""
    assert follow.post(body["Url"], "DELETE").status_int == 200
    assert follow.get(body["Url"]).status_int == 404


def test_create_child_file_suggested_names(parent, follow):
    names = [
        follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_SuggestedTarget=s).json["Name"]
        for s in (".docx", ".docx", "madeupname.wopitest", "madeupname.wopitest", "a:b.txt", "Report.docx")
    ]
    assert names == [
        "Untitled.docx",
        "Untitled (2).docx",
        "madeupname.wopitest",
        "madeupname (2).wopitest",
        "a_b.txt",
        "Report (2).docx",
    ]


def test_create_child_file_specific_name(parent, follow):
    response = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="madeup+AF8-name.wopitestx")
    assert response.status_int == 200 and response.json["Name"] == "madeup_name.wopitestx"
    again = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="madeup+AF8-name.wopitestx")
    assert again.status_int == 409 and again.headers["X-WOPI-Lock"] == ""  # the taken file's lock: none
    assert decode_utf7(again.headers["X-WOPI-ValidRelativeTarget"], "") == "madeup_name (2).wopitestx"
    false = follow.post(
        parent,
        "CREATE_CHILD_FILE",
        X_WOPI_RelativeTarget="madeup+AF8-name.wopitestx",
        X_WOPI_OverwriteRelativeTarget="False",
    )
    assert false.status_int == 409


def test_create_child_file_keeps_names_apart_that_windows_keeps_apart(parent, follow):
    """Case is folded one character for one, as Windows does: "Maße" and "Masse" are two names."""
    for name in ("Maße.txt", "Masse.txt", "ﬁle.txt", "file.txt"):
        response = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget=encode_utf7(name))
        assert (response.status_int, response.json["Name"]) == (200, name)
    again = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget=encode_utf7("MASSE.txt"))
    assert again.status_int == 409  # still the same name, case aside
    listed = follow.get(parent, "/children").json["ChildFiles"]
    assert {"Maße.txt", "Masse.txt", "ﬁle.txt", "file.txt"} <= {f["Name"] for f in listed}


def test_create_child_file_overwrite_empties_the_file_in_place(services, placement, parent, follow):
    file, _ = placement
    response = follow.post(
        parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="Report.docx", X_WOPI_OverwriteRelativeTarget="True"
    )
    assert response.status_int == 200 and response.json["Name"] == "Report.docx"
    replaced = services.files.get(file.id)
    assert (replaced.size, replaced.version) == (0, 2)
    assert urlsplit(response.json["Url"]).path.endswith(file.id)


def test_create_child_file_overwrite_needs_the_containers_w(services, placed, follow):
    """A token that may create but not write lists the container's files read-only: it may not empty them."""
    file, token = placed(folders="lc")
    response = follow.testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}")
    parent = response.json["AncestorsWithRootFirst"][-1]["Url"]
    refused = follow.post(
        parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="Report.docx", X_WOPI_OverwriteRelativeTarget="True"
    )
    assert refused.status_int == 404 and "overwriting" in refused.headers["X-WOPI-FailureReason"]
    assert services.files.get(file.id).size == 6
    created = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="New.docx")
    assert created.status_int == 200  # creating is still its right


def test_create_child_file_does_not_overwrite_a_file_revoked_for_the_user(services, placement, follow, clock):
    """`token revoke --file F --user alice`: no token of alice's from before it opens F any more, so her token for
    F's container may not empty F either: a taken name, 409."""
    file, _ = placement
    token = services.issue_container_token(file.folder_id, "alice", "lcmw").token
    parent = f"{PUBLIC}/wopi/containers/{file.folder_id}?access_token={token}"
    clock.advance(seconds=1)
    with services.db.write() as s:
        services.tokens.revoke(s, file_id=file.id, user_id="alice")
    refused = follow.post(
        parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="Report.docx", X_WOPI_OverwriteRelativeTarget="True"
    )
    assert refused.status_int == 409 and "may not overwrite" in refused.headers["X-WOPI-FailureReason"]
    assert services.files.get(file.id).size == 6


def test_create_child_file_over_a_locked_file_is_409_with_its_lock(services, placement, parent, follow):
    file, token = placement
    WopiClient(follow.testapp, file.id, token).lock("LockString")
    response = follow.post(
        parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="Report.docx", X_WOPI_OverwriteRelativeTarget="True"
    )
    assert response.status_int == 409 and response.headers["X-WOPI-Lock"] == "LockString"
    assert services.files.get(file.id).size == 6


@pytest.mark.parametrize("name", ["a/b.docx", "x" * 251 + ".docx", "CON.docx", "+!"])
def test_create_child_file_invalid_specific_name_is_400(parent, follow, name):
    response = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget=name)
    assert response.status_int == 400
    assert response.headers["X-WOPI-InvalidFileNameError"]
    assert "X-WOPI-ValidRelativeTarget" in response.headers


def test_create_child_file_over_a_folder_name_is_409(parent, follow):
    follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Taken")
    response = follow.post(
        parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="Taken", X_WOPI_OverwriteRelativeTarget="True"
    )
    assert response.status_int == 409


def test_create_child_file_wants_exactly_one_target(parent, follow):
    both = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="a.docx", X_WOPI_SuggestedTarget="a.docx")
    assert both.status_int == 501
    assert follow.post(parent, "CREATE_CHILD_FILE").status_int == 400
    bad = follow.post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="a.docx", X_WOPI_OverwriteRelativeTarget="yes")
    assert bad.status_int == 400


def test_racing_creates_of_one_name_make_one_file(app, parent, follow):
    """Eight requests for one specific name at once: one 200, seven 409, one file (PutRelativeFile's rules)."""
    statuses = []

    def create():
        client = webtest.TestApp(app)
        statuses.append(Follow(client).post(parent, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="Race.docx").status_int)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 7
    assert [f["Name"] for f in follow.get(parent, "/children").json["ChildFiles"]].count("Race.docx") == 1


# -- DeleteContainer, RenameContainer ---------------------------------------------------------


def test_delete_container_only_when_empty(parent, follow):
    made = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub").json["ContainerPointer"]["Url"]
    follow.post(made, "CREATE_CHILD_FILE", X_WOPI_RelativeTarget="f.txt")
    response = follow.post(made, "DELETE_CONTAINER")
    assert response.status_int == 409 and "not empty" in response.headers["X-WOPI-FailureReason"]
    inner = follow.get(made, "/children").json["ChildFiles"][0]["Url"]
    assert follow.post(inner, "DELETE").status_int == 200
    assert follow.post(made, "DELETE_CONTAINER").status_int == 200
    assert follow.get(made).status_int == 404
    assert follow.post(made, "DELETE_CONTAINER").status_int == 404


def test_delete_container_with_a_subfolder_is_409(parent, follow):
    made = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Sub").json["ContainerPointer"]["Url"]
    follow.post(made, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Inner")
    assert follow.post(made, "DELETE_CONTAINER").status_int == 409


CHANGES = {
    "CREATE_CHILD_CONTAINER": {"X-WOPI-RelativeTarget": "Sub"},
    "CREATE_CHILD_FILE": {"X-WOPI-RelativeTarget": "f.txt"},
    "RENAME_CONTAINER": {"X-WOPI-RequestedName": "Renamed"},
    "DELETE_CONTAINER": {},
}


@pytest.mark.parametrize("how", ["revoked", "expired"])
@pytest.mark.parametrize("override", CHANGES)
def test_a_token_revoked_or_expired_while_a_container_change_waits_changes_nothing(
    services, follow, clock, database, override, how
):
    """The token was live when the change began, and is not once the change holds the container: 401, and the
    container stays as it was, as DeleteFile answers."""
    file = services.add_file("alice", "Report.docx", io.BytesIO(b"report"), ["Docs", "Empty"])
    folder_id = file.folder_id
    services.files.delete(file.id)
    token = services.issue_container_token(folder_id, "alice", "lcmw", clock.now() + timedelta(minutes=10)).token
    url = f"{PUBLIC}/wopi/containers/{folder_id}?access_token={token}"
    answers = []
    with services.db.write() as s:
        lock_folder(s, folder_id)  # as another writer in the container holds it: its row, or SQLite's turn to write
        changing = threading.Thread(target=lambda: answers.append(follow.post(url, override, **CHANGES[override])))
        changing.start()
        assert wait_until(lambda: waits_for_another_writer(database, changing)), "the change never waited"
        if how == "revoked":
            assert services.tokens.revoke(s, token=token) == 1
        else:
            clock.advance(minutes=11)
    changing.join(30)
    assert answers[0].status_int == 401 and answers[0].headers["X-WOPI-FailureReason"]
    assert services.containers.get(folder_id).name == "Empty"
    assert services.containers.children(folder_id, None) == ([], [])


def test_rename_container(parent, follow):
    made = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_SuggestedTarget="CreateChildContainerTest").json
    url = made["ContainerPointer"]["Url"]
    response = follow.post(url, "RENAME_CONTAINER", X_WOPI_RequestedName="container+AF8-name")
    assert response.status_int == 200 and response.json == {"Name": "container_name"}
    assert follow.get(url).json["Name"] == "container_name"  # the URL stays valid
    assert follow.post(url, "RENAME_CONTAINER", X_WOPI_RequestedName="Report.docx").status_int == 409
    bad = follow.post(url, "RENAME_CONTAINER", X_WOPI_RequestedName="a|b")
    assert bad.status_int == 400 and "not allowed" in bad.headers["X-WOPI-InvalidContainerNameError"]
    assert follow.post(url, "RENAME_CONTAINER", X_WOPI_RequestedName="+!").status_int == 400
    assert follow.post(url, "RENAME_CONTAINER").status_int == 400
    assert follow.get(url).json["Name"] == "container_name"


@pytest.mark.parametrize("name", ["Grüße", "Voilà"])
def test_container_names_sent_as_raw_utf8_are_read_as_utf8(parent, follow, name):
    """CreateChildContainer, CreateChildFile and RenameContainer read a name sent as its raw UTF-8 bytes, not
    UTF-7, as the name (docs/wopi.md §1.5), not as those bytes in Latin-1."""
    made = []
    for header, suffix in (("X_WOPI_SuggestedTarget", " 1"), ("X_WOPI_RelativeTarget", " 2")):
        response = follow.post(parent, "CREATE_CHILD_CONTAINER", **{header: raw_utf8(name + suffix)})
        assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")
        made.append(response.json["ContainerPointer"])
    assert [m["Name"] for m in made] == [f"{name} 1", f"{name} 2"]
    for header, file_name in (("X_WOPI_SuggestedTarget", f"{name}.txt"), ("X_WOPI_RelativeTarget", f"{name} 2.txt")):
        response = follow.post(parent, "CREATE_CHILD_FILE", **{header: raw_utf8(file_name)})
        assert response.status_int == 200 and response.json["Name"] == file_name
    renamed = follow.post(made[0]["Url"], "RENAME_CONTAINER", X_WOPI_RequestedName=raw_utf8(name))
    assert renamed.status_int == 200 and renamed.json == {"Name": name}


def test_managing_needs_the_manage_right(placed, testapp, follow):
    file, token = placed(folders="lc")
    docs = testapp.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    assert follow.post(docs["Url"], "RENAME_CONTAINER", X_WOPI_RequestedName="x").status_int == 404
    assert follow.post(docs["Url"], "DELETE_CONTAINER").status_int == 404
    assert follow.get(docs["Url"]).json["Name"] == "Docs"


# -- the ecosystem --------------------------------------------------------------------------


def test_ecosystem_pointers_of_files_and_containers(placement, parent, testapp, follow):
    file, token = placement
    from_file = testapp.get(f"/wopi/files/{file.id}/ecosystem_pointer?access_token={token}").json["Url"]
    from_container = follow.get(parent, "/ecosystem_pointer").json["Url"]
    for url in (from_file, from_container):
        assert url.startswith(f"{PUBLIC}/wopi/ecosystem?access_token=")
        assert follow.get(url).json == {"SupportsContainers": True}
        root = follow.get(url, "/root_container_pointer").json
        assert root["ContainerPointer"]["Name"] == root["ContainerInfo"]["Name"] == "root"
        assert follow.get(root["ContainerPointer"]["Url"], "/children").json["ChildContainers"][0]["Name"] == "Docs"


def test_the_root_container_is_the_users_own(services, testapp, follow):
    """bob's token for alice's file: the ecosystem's root is bob's drive, not alice's."""
    file = services.add_file("alice", "A.docx", io.BytesIO(b"a"))
    token = services.issue_token(file.id, "bob", True, folders="l").token
    ecosystem = testapp.get(f"/wopi/files/{file.id}/ecosystem_pointer?access_token={token}").json["Url"]
    root = follow.get(ecosystem, "/root_container_pointer").json["ContainerPointer"]
    assert follow.get(root["Url"], "/children").json == {"ChildContainers": [], "ChildFiles": []}


def test_the_ecosystem_needs_a_valid_token(placed, testapp, follow):
    file, token = placed()
    url = testapp.get(f"/wopi/files/{file.id}/ecosystem_pointer?access_token={token}").json["Url"]
    assert (
        testapp.get("/wopi/ecosystem/root_container_pointer?access_token=INVALID", expect_errors=True).status_int == 401
    )
    assert follow.get(url.replace("access_token=", "access_token=x")).status_int == 401


def test_pointers_of_deleted_items_are_404(services, placement, testapp, follow, parent):
    file, token = placement
    services.files.delete(file.id)
    for suffix in ("/ancestry", "/ecosystem_pointer"):
        assert testapp.get(f"/wopi/files/{file.id}{suffix}?access_token={token}", expect_errors=True).status_int == 404
    made = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Gone").json["ContainerPointer"]["Url"]
    follow.post(made, "DELETE_CONTAINER")
    for suffix in ("", "/ancestry", "/children", "/ecosystem_pointer"):
        assert follow.get(made, suffix).status_int == 404


@pytest.mark.parametrize(
    "override, headers",
    [
        ("CREATE_CHILD_CONTAINER", {"X_WOPI_SuggestedTarget": "a", "X_WOPI_RelativeTarget": "b"}),
        ("CREATE_CHILD_CONTAINER", {"X_WOPI_RelativeTarget": "a|b"}),
        ("CREATE_CHILD_FILE", {"X_WOPI_SuggestedTarget": ".docx", "X_WOPI_RelativeTarget": "b.docx"}),
        ("CREATE_CHILD_FILE", {}),
        ("RENAME_CONTAINER", {}),
        ("RENAME_CONTAINER", {"X_WOPI_RequestedName": "a|b"}),
        ("GET_SHARE_URL", {"X_WOPI_UrlType": "Bogus"}),
        ("GET_SHARE_URL", {}),
    ],
    ids=lambda value: value if isinstance(value, str) else "+".join(sorted(value)) or "none",
)
def test_a_deleted_container_is_404_before_its_headers_are_read(parent, follow, override, headers):
    """As for files: an unknown container is 404 whatever the headers; both targets were 501, an invalid name 400,
    and GetShareUrl's unsupported type 501."""
    made = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Gone").json["ContainerPointer"]["Url"]
    assert follow.post(made, "DELETE_CONTAINER").status_int == 200
    response = follow.post(made, override, **headers)
    assert response.status_int == 404, response.headers["X-WOPI-FailureReason"]


def test_every_container_operation_says_one_thing_of_a_deleted_container(services, parent, follow):
    """DeleteContainer, CreateChildContainer and CreateChildFile said 'the folder does not exist' (the folder
    tree's words, from the row lock they take), the others 'container not found'; the writers still say it of a
    container deleted after the request found it."""
    made = follow.post(parent, "CREATE_CHILD_CONTAINER", X_WOPI_RelativeTarget="Gone").json["ContainerPointer"]
    gone = urlsplit(made["Url"]).path.rsplit("/", 1)[1]
    assert follow.post(made["Url"], "DELETE_CONTAINER").status_int == 200
    answers = [follow.get(made["Url"], suffix) for suffix in ("", "/ancestry", "/children", "/ecosystem_pointer")]
    for override, headers in [
        ("CREATE_CHILD_CONTAINER", {"X_WOPI_RelativeTarget": "a"}),
        ("CREATE_CHILD_CONTAINER", {"X_WOPI_SuggestedTarget": "a"}),
        ("CREATE_CHILD_FILE", {"X_WOPI_RelativeTarget": "a.docx"}),
        ("DELETE_CONTAINER", {}),
        ("RENAME_CONTAINER", {"X_WOPI_RequestedName": "a"}),
        ("GET_SHARE_URL", {"X_WOPI_UrlType": "ReadOnly"}),
    ]:
        answers.append(follow.post(made["Url"], override, **headers))
    assert {(a.status_int, a.headers["X-WOPI-FailureReason"]) for a in answers} == {(404, "container not found")}
    for write in (
        lambda: services.containers.create_child(gone, "a", False, "alice"),
        lambda: services.containers.create_child(gone, "a", True, "alice"),
        lambda: services.containers.create_file(gone, Target("a.docx", suggested=False), "alice"),
        lambda: services.containers.delete(gone),
    ):
        with pytest.raises(WopiError) as refused:
            write()
        assert (refused.value.status, refused.value.reason) == (404, "container not found")


def test_unknown_overrides_and_methods_on_containers(parent, follow, testapp):
    assert follow.post(parent, "BOGUS").status_int == 501
    assert follow.post(parent, "LOCK").status_int == 501
    assert follow.post(parent, "CREATE_CHILD_FILE", suffix="/children").status_int == 501
    response = testapp.put(Follow.local(parent), b"", expect_errors=True)
    assert response.status_int == 405


# -- turned off ------------------------------------------------------------------------------


def test_check_ecosystem_answers_with_containers_off(settings, clock, services, placement, testapp):
    """CheckEcosystem has no 501 in WOPI, and its SupportsContainers matches CheckFileInfo's: an ecosystem token
    handed out while containers were on got 501 once they were turned off. GetRootContainer, which needs them,
    stays 501."""
    file, token = placement
    ecosystem = testapp.get(f"/wopi/files/{file.id}/ecosystem_pointer?access_token={token}").json["Url"]
    app = create_app(settings.with_changes(containers=False), clock)
    try:
        plain = Follow(webtest.TestApp(app))
        response = plain.get(ecosystem)
        assert response.status_int == 200 and response.json == {"SupportsContainers": False}
        assert "SupportsContainers" not in plain.testapp.get(f"/wopi/files/{file.id}?access_token={token}").json
        root = plain.get(ecosystem, "/root_container_pointer")
        assert root.status_int == 501 and "turned off" in root.headers["X-WOPI-FailureReason"]
        assert plain.get(ecosystem.replace("access_token=", "access_token=x")).status_int == 401
    finally:
        app.extensions["wopihost"].db.dispose()


def test_containers_can_be_turned_off(settings, clock, services):
    file = services.add_file("alice", "A.docx", io.BytesIO(b"a"), ["Docs"])
    token = services.issue_token(file.id, "alice", True, folders="lcmw").token
    container_token = services.issue_container_token(file.folder_id, "alice", "lcmw").token
    app = create_app(settings.with_changes(containers=False), clock)
    try:
        plain = webtest.TestApp(app)
        info = plain.get(f"/wopi/files/{file.id}?access_token={token}").json
        assert "SupportsContainers" not in info and "SupportsEcosystem" not in info
        for url in (
            f"/wopi/files/{file.id}/ancestry?access_token={token}",
            f"/wopi/files/{file.id}/ecosystem_pointer?access_token={token}",
            f"/wopi/containers/{file.folder_id}?access_token={container_token}",
            f"/wopi/containers/{file.folder_id}/children?access_token={container_token}",
        ):
            response = plain.get(url, expect_errors=True)
            assert response.status_int == 501 and "turned off" in response.headers["X-WOPI-FailureReason"]
        response = plain.post(
            f"/wopi/containers/{file.folder_id}?access_token={container_token}",
            headers={"X-WOPI-Override": "CREATE_CHILD_FILE", "X-WOPI-RelativeTarget": "x.docx"},
            expect_errors=True,
        )
        assert response.status_int == 501
    finally:
        app.extensions["wopihost"].db.dispose()
