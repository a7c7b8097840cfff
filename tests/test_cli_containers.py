"""The wopihost command's container additions: `token issue --container`, `token issue FILE_ID --folders`, and
`files add --folder a/b`; every token it prints is used against the host on the same database."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

PUBLIC = "https://wopi.example.test"


def local(url: str, suffix: str = "") -> str:
    """An absolute URL of the host as a path for the test app, with `suffix` added to its path."""
    assert url.startswith(PUBLIC + "/")
    parts = urlsplit(url)
    return parts.path + suffix + (f"?{parts.query}" if parts.query else "")


def container_id(url: str) -> str:
    path = urlsplit(url).path
    assert path.startswith("/wopi/containers/")
    return path.rsplit("/", 1)[1]


@pytest.fixture
def add(run, tmp_path):
    """`wopihost files add` of a small file; returns its JSON."""

    def add(name: str = "Doc.docx", *options: str) -> dict:
        source = tmp_path / name
        source.write_bytes(b"content of " + name.encode())
        return json.loads(run("files", "add", str(source), "--json", *options).output)

    return add


@pytest.fixture
def file_token(run):
    def issue(file_id: str, *options: str, user: str = "demo") -> dict:
        return json.loads(run("token", "issue", file_id, "--user", user, "--json", *options).output)

    return issue


def ancestors(served, file_id: str, token: str) -> list[dict]:
    response = served.get(f"/wopi/files/{file_id}/ancestry?access_token={token}")
    return response.json["AncestorsWithRootFirst"]


# -- files add --folder -------------------------------------------------------------------------------


def test_files_add_into_a_folder_path(add, file_token, served):
    added = add("Report.docx", "--folder", "a/b", "--owner", "carol")
    assert added["owner"] == "carol" and added["name"] == "Report.docx"
    token = file_token(added["id"], user="carol")["access_token"]
    found = ancestors(served, added["id"], token)
    assert [a["Name"] for a in found] == ["root", "a", "b"]


def test_files_add_into_the_same_folder_reuses_it(add, file_token, run, served):
    first = add("One.docx", "--folder", "a/b")
    second = add("Two.docx", "--folder", "a/b")
    third = add("Three.docx", "--folder", "a")
    first_up = ancestors(served, first["id"], file_token(first["id"])["access_token"])
    second_up = ancestors(served, second["id"], file_token(second["id"])["access_token"])
    third_up = ancestors(served, third["id"], file_token(third["id"])["access_token"])
    assert [container_id(a["Url"]) for a in first_up] == [container_id(a["Url"]) for a in second_up]
    assert [container_id(a["Url"]) for a in third_up] == [container_id(a["Url"]) for a in first_up[:2]]
    # the root holds one folder a, and b holds both files
    root_token = json.loads(
        run("token", "issue", "--container", container_id(first_up[0]["Url"]), "--user", "demo", "--json").output
    )
    listing = served.get(
        local(root_token["container_url"], "/children") + f"?access_token={root_token['access_token']}"
    )
    assert [c["Name"] for c in listing.json["ChildContainers"]] == ["a"]
    b_token = json.loads(
        run("token", "issue", "--container", container_id(first_up[2]["Url"]), "--user", "demo", "--json").output
    )
    listing = served.get(local(b_token["container_url"], "/children") + f"?access_token={b_token['access_token']}")
    assert sorted(f["Name"] for f in listing.json["ChildFiles"]) == ["One.docx", "Two.docx"]


def test_files_add_without_a_folder_goes_into_the_root(add, file_token, served):
    added = add("Top.docx")
    found = ancestors(served, added["id"], file_token(added["id"])["access_token"])
    assert [a["Name"] for a in found] == ["root"]


def test_files_add_refuses_an_invalid_folder_name(run, tmp_path):
    source = tmp_path / "x.docx"
    source.write_bytes(b"x")
    result = run("files", "add", str(source), "--folder", "a/bad:name", ok=False)
    assert result.exit_code == 2  # a usage error, found before folder a is made
    assert "Invalid value for '--folder': the name contains characters that are not allowed: :" in result.stderr


# -- token issue --container ----------------------------------------------------------------------------


@pytest.fixture
def folder_b(add, file_token, served) -> tuple[str, dict]:
    """The id of folder b (demo's root/a/b), which holds one file, and that file's JSON."""
    added = add("Inside.docx", "--folder", "a/b")
    found = ancestors(served, added["id"], file_token(added["id"])["access_token"])
    return container_id(found[-1]["Url"]), added


def test_container_token_as_json(run, served, folder_b):
    folder_id, added = folder_b
    issued = json.loads(run("token", "issue", "--container", folder_id, "--user", "dave", "--json").output)
    assert issued["container_id"] == folder_id
    assert issued["container_url"] == f"{PUBLIC}/wopi/containers/{folder_id}"
    assert issued["rights"] == "lcmw"
    assert issued["user"] == "dave" and issued["can_write"] is True
    assert issued["check_container_info_url"] == f"{issued['container_url']}?access_token={issued['access_token']}"
    info = served.get(local(issued["check_container_info_url"])).json
    assert info["Name"] == "b"
    assert info["UserCanCreateChildContainer"] is True and info["UserCanCreateChildFile"] is True
    assert info["UserCanRename"] is True and info["UserCanDelete"] is True
    children = served.get(local(issued["container_url"], "/children") + f"?access_token={issued['access_token']}")
    assert [f["Name"] for f in children.json["ChildFiles"]] == ["Inside.docx"]
    # a container token is refused on the file itself
    response = served.get(f"/wopi/files/{added['id']}?access_token={issued['access_token']}", expect_errors=True)
    assert response.status_int == 401


def test_read_only_container_token_may_only_list(run, served, folder_b):
    folder_id, _ = folder_b
    issued = json.loads(
        run("token", "issue", "--container", folder_id, "--user", "dave", "--read-only", "--json").output
    )
    assert issued["rights"] == "l" and issued["can_write"] is False
    info = served.get(local(issued["check_container_info_url"])).json
    assert info["UserCanCreateChildContainer"] is False and info["UserCanCreateChildFile"] is False
    assert info["UserCanRename"] is False and info["UserCanDelete"] is False
    query = f"?access_token={issued['access_token']}"
    assert served.get(local(issued["container_url"], "/children") + query).status_int == 200
    created = served.post(
        local(issued["container_url"]) + query,
        headers={"X-WOPI-Override": "CREATE_CHILD_CONTAINER", "X-WOPI-SuggestedTarget": "new"},
        expect_errors=True,
    )
    assert created.status_int == 404


def test_container_token_as_text(run, served, folder_b):
    folder_id, _ = folder_b
    text = run("token", "issue", "--container", folder_id, "--user", "dave").output
    assert f"container:        {PUBLIC}/wopi/containers/{folder_id}" in text
    assert f"CheckContainerInfo: curl -s '{PUBLIC}/wopi/containers/{folder_id}?access_token=" in text
    token = text.split("access_token:", 1)[1].split()[0]
    assert served.get(f"/wopi/containers/{folder_id}?access_token={token}").json["Name"] == "b"


def test_container_token_for_an_unknown_folder_fails(run):
    result = run("token", "issue", "--container", "NoSuchFolder00000000", "--user", "dave", ok=False)
    assert result.exit_code == 1
    assert "not found" in result.output


# -- token issue FILE_ID --folders --------------------------------------------------------------------------


def test_file_token_with_folder_rights_reaches_the_containers_above(file_token, served, folder_b):
    folder_id, added = folder_b
    issued = file_token(added["id"], "--folders", "list,create")
    assert issued["folders"] == "lc"
    found = ancestors(served, added["id"], issued["access_token"])
    assert [a["Name"] for a in found] == ["root", "a", "b"]
    for ancestor in found:
        info = served.get(local(ancestor["Url"])).json
        assert info["UserCanCreateChildContainer"] is True
        assert info["UserCanDelete"] is False  # manage was not granted
    parent = found[-1]["Url"]
    assert container_id(parent) == folder_id
    children = served.get(local(parent, "/children"))
    assert [f["Name"] for f in children.json["ChildFiles"]] == ["Inside.docx"]


def test_file_token_reaches_no_further_by_default(file_token, served, folder_b):
    _, added = folder_b
    issued = file_token(added["id"])
    assert issued["folders"] == ""
    found = ancestors(served, added["id"], issued["access_token"])
    assert [a["Name"] for a in found] == ["root", "a", "b"]
    for ancestor in found:
        info = served.get(local(ancestor["Url"])).json
        assert info["UserCanCreateChildContainer"] is False
        assert info["UserCanCreateChildFile"] is False
    response = served.get(local(found[-1]["Url"], "/children"), expect_errors=True)
    assert response.status_int == 404
    assert file_token(added["id"], "--folders", "none")["folders"] == ""


def test_all_folder_rights(file_token, served, folder_b):
    _, added = folder_b
    issued = file_token(added["id"], "--folders", "all")
    assert issued["folders"] == "lcmw"
    info = served.get(local(ancestors(served, added["id"], issued["access_token"])[-1]["Url"])).json
    assert info["UserCanCreateChildContainer"] is True and info["UserCanRename"] is True


@pytest.mark.parametrize("folders", ["bogus", "list,bogus", "read"])
def test_unknown_folder_rights_are_a_usage_error(run, add, folders):
    added = add()
    result = run("token", "issue", added["id"], "--user", "demo", "--folders", folders, ok=False)
    assert result.exit_code == 2
    assert folders.split(",")[-1] in result.output


@pytest.mark.parametrize("extra", [("--container", "FOLDER"), ("--api",)], ids=["container", "api"])
def test_a_file_id_with_another_kind_of_token_is_a_usage_error(run, add, extra):
    added = add()
    result = run("token", "issue", added["id"], *extra, "--user", "demo", ok=False)
    assert result.exit_code == 2
    assert "FILE_ID" in result.output


def test_container_and_api_together_are_a_usage_error(run, folder_b):
    folder_id, _ = folder_b
    result = run("token", "issue", "--container", folder_id, "--api", "--user", "demo", ok=False)
    assert result.exit_code == 2


def test_no_target_at_all_is_a_usage_error(run):
    result = run("token", "issue", "--user", "demo", ok=False)
    assert result.exit_code == 2


# -- token revoke --file ------------------------------------------------------------------------------------


def test_revoking_a_file_refuses_the_tokens_handed_out_for_it_through_a_container(run, add, served, folder_b):
    """A token for a file handed out by EnumerateChildren has the container token's row, not one of its own:
    `token revoke --file` found no row of the file and the token went on opening it, writing included."""
    folder_id, added = folder_b
    add("Sibling.docx", "--folder", "a/b")
    issued = {
        user: json.loads(run("token", "issue", "--container", folder_id, "--user", user, "--json").output)
        for user in ("dave", "erin")
    }

    def children(user: str) -> dict[str, str]:
        query = f"?access_token={issued[user]['access_token']}"
        listed = served.get(local(issued[user]["container_url"], "/children") + query).json["ChildFiles"]
        return {f["Name"]: local(f["Url"]) for f in listed}

    dave, erin = children("dave"), children("erin")
    file_url = served.get(dave["Inside.docx"]).json["FileUrl"]
    revoked = run("token", "revoke", "--file", added["id"], "--user", "dave")
    assert revoked.output == (
        f"revoked 0 tokens issued for {added['id']}; no token of dave from before now opens it any more, those "
        "handed out for it through a container's or a sibling's included\n"
    )
    inside = dave["Inside.docx"]
    refused = [
        served.get(inside, expect_errors=True),
        served.get(inside.replace("?", "/contents?"), expect_errors=True),
        served.post(inside, headers={"X-WOPI-Override": "GET_LOCK"}, expect_errors=True),
        served.post(inside.replace("?", "/contents?"), b"x", {"X-WOPI-Override": "PUT"}, expect_errors=True),
        served.get(local(file_url), expect_errors=True),
    ]
    assert [r.status_int for r in refused] == [401] * 5
    assert "revoked" in refused[0].headers["X-WOPI-FailureReason"]
    assert served.get(dave["Sibling.docx"]).status_int == 200  # the other files of the container stay open
    assert served.get(erin["Inside.docx"]).status_int == 200  # and so does the file to other users
    # for everyone, with the token issued for the file itself (folder_b's)
    assert json.loads(run("token", "revoke", "--file", added["id"], "--json").output) == {"revoked": 1}
    assert served.get(erin["Inside.docx"], expect_errors=True).status_int == 401
    # a token issued since opens it
    issued["dave"] = json.loads(run("token", "issue", "--container", folder_id, "--user", "dave", "--json").output)
    assert served.get(children("dave")["Inside.docx"]).json["BaseFileName"] == "Inside.docx"
