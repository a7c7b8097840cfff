"""`wopihost open`: a launch link of the host page, as its only line, or JSON."""

import json

import pytest


@pytest.fixture
def doc(run, tmp_path):
    path = tmp_path / "Plan.docx"
    path.write_bytes(b"x")
    return json.loads(run("files", "add", str(path), "--json").output)["id"]


def test_open_prints_a_link_that_opens_the_page(run, served, doc, env, tmp_path):
    output = run("open", doc, "--user", "bob", "--action", "edit").output
    assert output.count("\n") == 1 and output.startswith("https://wopi.example.test/host/edit/")
    # no discovery in these settings: the page says so, which it only does behind a valid link
    page = served.get(output.strip().removeprefix("https://wopi.example.test"), status=503)
    assert "WOPIHOST_DISCOVERY_URL" in page.text


def test_open_json(run, doc):
    info = json.loads(run("open", doc, "--user", "bob", "--json").output)
    assert set(info) == {"url", "action", "file_id", "user", "expires"}
    assert (info["action"], info["file_id"], info["user"]) == ("view", doc, "bob")
    assert info["url"].startswith("https://wopi.example.test/host/view/")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--action", "edit", "--read-only"], 1, "a read-only link cannot edit"),
        (["--action", "print"], 2, "'print' is not one of 'view', 'edit', 'editnew'"),
        (["--ttl", "0"], 2, "must be a duration of more than 0"),
        (["--ttl", "soon"], 2, "must be a duration of more than 0"),
        (["--ttl", "99999999999999d"], 2, "at most 100 years"),  # a timedelta overflowed: a traceback
    ],
)
def test_open_refuses(run, doc, args, code, message):
    result = run("open", doc, "--user", "bob", *args, ok=False)
    assert result.exit_code == code and message in result.output


def test_open_of_an_unknown_file(run):
    result = run("open", "nope", "--user", "bob", ok=False)
    assert result.exit_code == 1 and "no such file: nope" in result.output
