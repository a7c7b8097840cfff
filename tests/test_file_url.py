"""CheckFileInfo's FileUrl: a download URL that is its own credential (no token, no proof), always the current
content, for WOPIHOST_FILE_URL_TTL (5 minutes) or until the token it was made under is revoked or expires."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
import webtest
from cryptography.hazmat.primitives.asymmetric import rsa

from wopihost.app import create_app
from wopihost.proof import ticks_from_datetime

from .helpers import WopiClient
from .proof_helpers import discovery_xml, sign

PUBLIC = "https://wopi.example.test"


def file_url(wopi: WopiClient) -> str:
    response = wopi.check_file_info()
    assert response.status_int == 200
    return response.json["FileUrl"]


def download(testapp: webtest.TestApp, url: str, **headers):
    """GET an absolute URL of this host as a client would: no token, no Authorization, no proof."""
    assert url.startswith(PUBLIC + "/")
    return testapp.get(url[len(PUBLIC) :], headers=headers, expect_errors=True)


def ticket_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


# -- what it is ----------------------------------------------------------------------------------------


def test_file_url_is_absolute_under_the_public_url_and_carries_no_token(wopi):
    url = file_url(wopi)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "wopi.example.test")
    assert parts.path.startswith("/wopi/download/") and len(ticket_of(url)) > 20
    assert parts.query == "" and "access_token" not in url
    assert wopi.token not in url


def test_file_url_downloads_the_content_without_any_credential(wopi, testapp):
    info = wopi.check_file_info().json
    response = download(testapp, info["FileUrl"])
    assert response.status_int == 200
    assert response.body == b"hello world"
    assert response.headers["Content-Length"] == "11"
    assert response.headers["X-WOPI-ItemVersion"] == info["Version"]


def test_a_read_only_token_gets_a_working_file_url(make_file, client_for, testapp):
    reader = client_for(make_file(b"read me"), "bob", can_write=False)
    assert download(testapp, file_url(reader)).body == b"read me"


def test_the_same_file_url_follows_a_save(wopi, testapp):
    url = file_url(wopi)
    before = download(testapp, url)
    assert wopi.lock("L1").status_int == 200
    saved = wopi.put_file(b"new content, longer", "L1")
    assert saved.status_int == 200
    assert wopi.op("UNLOCK", X_WOPI_Lock="L1").status_int == 200
    after = download(testapp, url)
    assert after.status_int == 200
    assert after.body == b"new content, longer"
    assert after.headers["Content-Length"] == str(len(b"new content, longer"))
    assert after.headers["X-WOPI-ItemVersion"] == saved.headers["X-WOPI-ItemVersion"]
    assert after.headers["X-WOPI-ItemVersion"] != before.headers["X-WOPI-ItemVersion"]


def test_range_requests(wopi, testapp):
    url = file_url(wopi)
    part = download(testapp, url, Range="bytes=6-10")
    assert part.status_int == 206
    assert part.body == b"world"
    assert part.headers["Content-Range"] == "bytes 6-10/11"
    assert part.headers["Content-Length"] == "5"
    assert download(testapp, url, Range="bytes=0-4").body == b"hello"
    assert download(testapp, url, Range="bytes=-3").body == b"rld"
    assert download(testapp, url, Range="bytes=20-30").status_int == 416


# -- how long it works -----------------------------------------------------------------------------------


def test_file_url_expires_after_five_minutes(wopi, testapp, clock):
    url = file_url(wopi)
    clock.advance(minutes=4, seconds=59)
    assert download(testapp, url).status_int == 200
    clock.advance(seconds=2)
    expired = download(testapp, url)
    assert expired.status_int == 401
    assert expired.headers["X-WOPI-FailureReason"]
    assert expired.body == b""
    fresh = file_url(wopi)  # the token still works, and CheckFileInfo hands out a new FileUrl
    assert fresh != url
    assert download(testapp, fresh).body == b"hello world"


def test_file_url_ttl_is_a_setting(settings, clock, make_file):
    app = create_app(settings.with_changes(file_url_ttl=60), clock)
    try:
        file = make_file()
        token = app.extensions["wopihost"].issue_token(file.id, "alice", True).token
        wopi = WopiClient(webtest.TestApp(app), file.id, token)
        url = file_url(wopi)
        clock.advance(seconds=59)
        assert download(wopi.testapp, url).status_int == 200
        clock.advance(seconds=2)
        assert download(wopi.testapp, url).status_int == 401
    finally:
        app.extensions["wopihost"].db.dispose()


def test_file_url_expires_no_later_than_its_token(make_file, services, testapp, clock):
    file = make_file()
    token = services.issue_token(file.id, "alice", True, clock.now() + timedelta(seconds=90)).token
    url = file_url(WopiClient(testapp, file.id, token))
    clock.advance(seconds=88)
    assert download(testapp, url).status_int == 200
    clock.advance(seconds=3)
    assert download(testapp, url).status_int == 401


def test_revoking_the_token_revokes_the_file_url(wopi, services, testapp):
    url = file_url(wopi)
    with services.db.write() as s:
        assert services.tokens.revoke(s, token=wopi.token) == 1
    response = download(testapp, url)
    assert response.status_int == 401
    assert response.body == b""


def test_revoking_another_token_leaves_it_working(wopi, make_file, client_for, services, testapp):
    url = file_url(wopi)
    other = client_for(make_file(name="Other.docx"))
    with services.db.write() as s:
        services.tokens.revoke(s, token=other.token)
    assert download(testapp, url).body == b"hello world"


# -- forged and foreign tickets -------------------------------------------------------------------------


def _tampered(ticket: str) -> str:
    middle = len(ticket) // 2
    return ticket[:middle] + ("a" if ticket[middle] != "a" else "b") + ticket[middle + 1 :]


@pytest.mark.parametrize(
    "change",
    [
        lambda t: "garbage",
        lambda t: "a" * len(t),
        _tampered,
        lambda t: t[:-1],
        lambda t: t + "a",
        lambda t: t.upper(),
        lambda t: t + "====",
        lambda t: t[:5] + "\u00e9" + t[6:],
        lambda t: t.replace(".", ""),
    ],
    ids=[
        "garbage",
        "same-length",
        "tampered",
        "truncated",
        "extended",
        "upper-case",
        "padded",
        "non-ascii",
        "no-fields",
    ],
)
def test_a_forged_or_damaged_ticket_is_401(wopi, testapp, change):
    ticket = ticket_of(file_url(wopi))
    forged = change(ticket)
    assert forged != ticket
    response = testapp.get(f"/wopi/download/{quote(forged)}", expect_errors=True)
    assert response.status_int == 401
    assert response.headers["X-WOPI-FailureReason"]
    assert response.body == b""


def test_an_access_token_is_not_a_ticket(wopi, testapp):
    assert testapp.get(f"/wopi/download/{wopi.token}", expect_errors=True).status_int == 401


def test_a_graph_download_ticket_is_not_a_file_url(wopi, graph, testapp):
    graph_url = graph.get(f"me/drive/items/{wopi.file_id}").json["@microsoft.graph.downloadUrl"]
    assert download(testapp, graph_url).body == b"hello world"  # it works where it belongs
    response = testapp.get(f"/wopi/download/{ticket_of(graph_url)}", expect_errors=True)
    assert response.status_int == 401


def test_a_file_url_ticket_is_not_a_graph_download_ticket(wopi, graph, testapp):
    graph_url = graph.get(f"me/drive/items/{wopi.file_id}").json["@microsoft.graph.downloadUrl"]
    swapped = graph_url.rsplit("/", 1)[0] + "/" + ticket_of(file_url(wopi))
    assert download(testapp, swapped).status_int == 401


# -- proof keys, deleted files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proof_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_with_proof_keys_required_the_file_url_needs_no_proof(settings, clock, make_file, tmp_path, proof_key):
    public = f"{PUBLIC}/office"
    discovery = tmp_path / "discovery.xml"
    discovery.write_bytes(discovery_xml(proof_key.public_key(), None))
    app = create_app(
        settings.with_changes(public_url=public, proof_keys="require", discovery_url=str(discovery)), clock
    )
    try:
        testapp = webtest.TestApp(app)
        file = make_file()
        token = app.extensions["wopihost"].issue_token(file.id, "alice", True).token
        path = f"/office/wopi/files/{file.id}?access_token={token}"
        unsigned = testapp.get(path, expect_errors=True)
        assert unsigned.status_int == 500 and "proof" in unsigned.headers["X-WOPI-FailureReason"]
        ticks = ticks_from_datetime(clock.now())
        signed = testapp.get(
            path, headers={"X-WOPI-TimeStamp": str(ticks), "X-WOPI-Proof": sign(proof_key, token, PUBLIC + path, ticks)}
        )
        assert signed.status_int == 200
        url = signed.json["FileUrl"]
        assert url.startswith(f"{public}/wopi/download/")
        response = testapp.get(url[len(PUBLIC) :])  # no X-WOPI-Proof, no X-WOPI-TimeStamp
        assert response.status_int == 200
        assert response.body == b"hello world"
    finally:
        app.extensions["wopihost"].db.dispose()


def test_the_file_url_of_a_deleted_file_is_404(wopi, testapp):
    url = file_url(wopi)
    assert wopi.op("DELETE").status_int == 200
    response = download(testapp, url)
    assert response.status_int == 404
    assert response.headers["X-WOPI-FailureReason"]
    assert response.body == b""
