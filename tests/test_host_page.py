"""The built-in host page and its launch links (wopihost/hostpage.py, wopihost/launches.py), in-process.

A browser runs the page against a stand-in WOPI client in tests/e2e/test_host_page_e2e.py; here: what the page
says, to whom, and what it refuses.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
import webtest

from wopihost.app import create_app
from wopihost.body import MAX_JSON
from wopihost.clock import to_epoch_ms
from wopihost.discovery import DiscoveryCache
from wopihost.errors import WopiError
from wopihost.faults import RETRY_AFTER, Unavailable
from wopihost.models import AccessToken
from wopihost.prepared import Statements

from .helpers import FIXTURES_DIR, WopiClient, wait_until, waits_for_another_writer

PUBLIC = "https://wopi.example.test"
CLIENT = "https://word.client.test"
DISCOVERY = f"""<?xml version="1.0" encoding="utf-8"?>
<wopi-discovery><net-zone name="external-https">
 <app name="Word" favIconUrl="{CLIENT}/wv/resources/1033/FavIcon_Word.ico" checkLicense="true">
  <action name="view" ext="docx" default="true"
          urlsrc="{CLIENT}/wv/wordviewerframe.aspx?&lt;ui=UI_LLCC&amp;&gt;&lt;rs=DC_LLCC&amp;&gt;&lt;dchat=DISABLE_CHAT&amp;&gt;&lt;hid=HOST_SESSION_ID&amp;&gt;&lt;sc=SESSION_CONTEXT&amp;&gt;&lt;wopisrc=WOPI_SOURCE&amp;&gt;"/>
  <action name="edit" ext="docx" requires="locks,update"
          urlsrc="{CLIENT}/we/wordeditorframe.aspx?&lt;ui=UI_LLCC&amp;&gt;&lt;rs=DC_LLCC&amp;&gt;&lt;hid=HOST_SESSION_ID&amp;&gt;&lt;wopisrc=WOPI_SOURCE&amp;&gt;"/>
  <action name="editnew" ext="docx" requires="locks,update"
          urlsrc="{CLIENT}/we/wordeditorframe.aspx?new=1&amp;&lt;ui=UI_LLCC&amp;&gt;&lt;wopisrc=WOPI_SOURCE&amp;&gt;"/>
 </app>
</net-zone></wopi-discovery>
"""


class Page(HTMLParser):
    """The parts of the host page a browser acts on."""

    def __init__(self, html: str):
        super().__init__()
        self.form: dict = {}
        self.fields: dict[str, str] = {}
        self.icons: list[str] = []
        self.nonces: list[str] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.form = attrs
        elif tag == "input":
            self.fields[attrs["name"]] = attrs["value"]
        elif tag == "link" and "icon" in attrs.get("rel", ""):
            self.icons.append(attrs["href"])
        elif tag in ("script", "style"):
            self.nonces.append(attrs.get("nonce"))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


@pytest.fixture
def host(settings, clock, tmp_path):
    """An app whose WOPI client is the discovery above (proofs off: no client signs these tests' requests)."""
    path = tmp_path / "discovery.xml"
    path.write_text(DISCOVERY)
    app = create_app(settings.with_changes(discovery_url=str(path), proof_keys="off"), clock)
    yield app
    app.extensions["wopihost"].db.dispose()


@pytest.fixture
def host_services(host):
    return host.extensions["wopihost"]


@pytest.fixture
def browser(host) -> webtest.TestApp:
    return webtest.TestApp(host)


@pytest.fixture
def doc(host_services):
    return host_services.add_file("alice", "R&D's plan.docx", io.BytesIO(b"x"))


def launch(services, file, action="view", user="alice", can_write=True, ttl=timedelta(minutes=5)) -> str:
    link = services.launches.issue(file.id, user, action, can_write=can_write, ttl=ttl, token_ttl=timedelta(hours=10))
    return services.launch_url(link.action, link.ticket).removeprefix(PUBLIC)


def test_the_page_posts_the_token_to_the_clients_action_url_in_a_frame(host_services, browser, doc, clock):
    response = browser.get(launch(host_services, doc, "edit"), headers={"Accept-Language": "de-DE,de;q=0.9"})
    page = Page(response.text)
    action = urlsplit(page.form["action"])
    query = parse_qs(action.query)
    assert f"{action.scheme}://{action.netloc}{action.path}" == f"{CLIENT}/we/wordeditorframe.aspx"
    assert query["wopisrc"] == [f"{PUBLIC}/wopi/files/{doc.id}"]
    assert query["ui"] == query["rs"] == ["de-DE"]  # the browser's language
    assert re.fullmatch(r"[A-Za-z0-9]{16}", query["hid"][0])  # a host session id, new for each page
    assert set(query) == {"wopisrc", "ui", "rs", "hid"}  # placeholders the host does not fill are dropped
    assert page.form["method"] == "post" and page.form["target"] == "office_frame"
    assert set(page.fields) == {"access_token", "access_token_ttl"}
    assert page.fields["access_token_ttl"] == str(to_epoch_ms(clock.now().replace(microsecond=0) + timedelta(hours=10)))
    # the token the client gets works for this file, for this user, with the link's rights
    info = WopiClient(browser, doc.id, page.fields["access_token"]).check_file_info().json
    assert (info["UserId"], info["UserCanWrite"], info["BaseFileName"]) == ("alice", True, "R&D's plan.docx")
    assert page.title == "R&D's plan.docx"  # escaped in the HTML, read back whole
    assert page.icons == [f"{CLIENT}/wv/resources/1033/FavIcon_Word.ico"]


def test_the_pages_headers_keep_it_out_of_caches_and_referers_and_confine_it(host_services, browser, doc):
    response = browser.get(launch(host_services, doc))
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-cache, no-store"
    assert response.headers["Expires"] == "-1" and response.headers["Pragma"] == "no-cache"
    assert response.headers["Referrer-Policy"] == "no-referrer"  # the link is a credential
    csp = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    nonce = Page(response.text).nonces[0]
    assert set(Page(response.text).nonces) == {nonce}  # every script and style carries this page's nonce
    assert csp == {
        "default-src": "'none'",
        "script-src": f"'nonce-{nonce}'",
        "style-src": f"'nonce-{nonce}'",
        "frame-src": f"{CLIENT} https:",
        "form-action": f"{CLIENT} https:",
        "img-src": CLIENT,
        "base-uri": "'none'",
        "frame-ancestors": "'self'",
    }
    assert (
        browser.get(launch(host_services, doc)).headers["Content-Security-Policy"]
        != response.headers["Content-Security-Policy"]
    )  # a new nonce each time
    # the page answers the client's PostMessage only from the client's origin or its sibling hosts
    assert f'var clientOrigin = "{CLIENT}", clientScheme = "https",' in response.text
    assert 'siblings = ".client.test";' in response.text
    assert "if (event.source !== frame.contentWindow || !fromClient(event.origin)) return;" in response.text


@pytest.mark.parametrize(
    "client, origin, siblings",
    [
        ("https://Word.Client.test:443", CLIENT, ".client.test"),
        ("https://word.client.test:8443", "https://word.client.test:8443", ".client.test:8443"),
        ("https://wörd.ëxample.test", "https://xn--wrd-sna.xn--xample-ova.test", ".xn--xample-ova.test"),
        ("https://[0:0::1]:8443", "https://[::1]:8443", None),
    ],
    ids=["case-and-default-port", "other-port", "idn", "ipv6"],
)
def test_the_client_origin_is_spelled_as_a_browser_spells_it(settings, clock, tmp_path, client, origin, siblings):
    """MessageEvent.origin is lower case, in ASCII and without a default port; a header holds only latin-1."""
    path = tmp_path / "discovery.xml"
    path.write_text(DISCOVERY.replace(CLIENT, client))
    app = create_app(settings.with_changes(discovery_url=str(path), proof_keys="off"), clock)
    try:
        services = app.extensions["wopihost"]
        response = webtest.TestApp(app).get(launch(services, services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))))
        assert f'var clientOrigin = "{origin}",' in response.text
        assert f"siblings = {json.dumps(siblings)};" in response.text
        csp = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
        assert csp["frame-src"] == f"{origin} https:" and csp["img-src"] == origin
    finally:
        app.extensions["wopihost"].db.dispose()


def test_a_discovery_host_that_is_no_host_name_writes_no_directive_into_the_policy(settings, clock, tmp_path):
    """The IDNA codec checks only label lengths: a `;` in the icon's host ended img-src and began a directive of
    the discovery's choosing (a second frame-ancestors, say). Such an icon is shown as none."""
    path = tmp_path / "discovery.xml"
    path.write_text(DISCOVERY.replace(f'favIconUrl="{CLIENT}/', 'favIconUrl="https://x.test;frame-ancestors */'))
    app = create_app(settings.with_changes(discovery_url=str(path), proof_keys="off"), clock)
    try:
        services = app.extensions["wopihost"]
        response = webtest.TestApp(app).get(launch(services, services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))))
        policy = response.headers["Content-Security-Policy"]
        assert "img-src 'none';" in policy and policy.count("frame-ancestors") == 1
    finally:
        app.extensions["wopihost"].db.dispose()


def test_a_head_of_a_link_opens_no_session_and_leaves_the_link_to_its_person(host_services, browser, doc, caplog):
    """A chat client previews a link with HEAD (or GET): a HEAD answered the whole page and logged a host session
    for the link's user, as if they had opened the file; it must not use up the link either."""
    link = launch(host_services, doc, "edit", ttl=timedelta(seconds=30))
    with caplog.at_level(logging.INFO, logger="wopihost.hostpage"):
        head = browser.head(link)
        assert head.body == b"" and head.headers["Content-Type"] == "text/html; charset=utf-8"
        assert (
            head.headers["Cache-Control"] == "no-cache, no-store" and head.headers["Referrer-Policy"] == "no-referrer"
        )
        assert "frame-ancestors 'self'" in head.headers["Content-Security-Policy"]
        assert "host session" not in caplog.text
        for _ in range(2):  # the person's browser after the preview, and a reload
            page = Page(browser.get(link).text)
            assert page.fields["access_token"] and page.form["action"].startswith(CLIENT)
    assert caplog.text.count("host page: edit of file") == 2
    bad = browser.head(link[:-2] + ("AA" if not link.endswith("AA") else "BB"), status=403)
    assert bad.body == b""  # a HEAD is refused as a GET


def test_each_action_opens_its_own_url_and_wd_parameters_pass_through(host_services, browser, doc):
    view = Page(browser.get(launch(host_services, doc, "view") + "?wdPreviousSession=abc&other=1").text)
    assert view.form["action"].startswith(f"{CLIENT}/wv/wordviewerframe.aspx?")
    assert parse_qs(urlsplit(view.form["action"]).query)["wdPreviousSession"] == ["abc"]
    assert "other" not in parse_qs(urlsplit(view.form["action"]).query)
    new = Page(browser.get(launch(host_services, doc, "editnew")).text)
    assert new.form["action"].startswith(f"{CLIENT}/we/wordeditorframe.aspx?new=1&ui=en-US&wopisrc=")


def test_a_links_rights_are_its_tokens_whatever_the_action(host_services, browser, doc):
    link = launch(host_services, doc, "view", can_write=False)
    page = Page(browser.get(link).text)
    info = WopiClient(browser, doc.id, page.fields["access_token"]).check_file_info().json
    assert info["UserCanWrite"] is False
    refused_alike(browser, link.replace("/view/", "/edit/"))  # a read-only token opens no edit ...
    writer = launch(host_services, doc, "view")
    assert (
        Page(browser.get(writer.replace("/view/", "/edit/")).text).form["action"].startswith(f"{CLIENT}/we/")
    )  # ... a read-write one may (its holder could switch to editing in the client anyway)
    with pytest.raises(WopiError) as refused:
        launch(host_services, doc, "edit", can_write=False)
    assert refused.value.status == 403


def refused_alike(browser, path: str) -> None:
    response = browser.get(path, status=403)
    assert "This link is not valid or has expired" in response.text
    assert "plan" not in response.text and "docx" not in response.text  # nothing about the file
    assert response.headers["Cache-Control"] == "no-cache, no-store"


def test_without_a_valid_link_the_page_reveals_nothing(host_services, browser, doc, clock):
    good = launch(host_services, doc)
    ticket = good.rsplit("/", 1)[1]
    refused_alike(browser, f"/host/view/{doc.id}")  # the file id is not a link
    refused_alike(browser, good[:-2] + ("AA" if not good.endswith("AA") else "BB"))  # tampered
    refused_alike(browser, "/host/view/x.y.1.%s" % ("A" * 43))
    refused_alike(browser, "/host/view/" + "a" * 300)
    clock.advance(minutes=6)
    refused_alike(browser, good)  # expired
    assert browser.get("/host/print/" + ticket, status=404)


def test_revoking_the_token_or_deleting_the_file_closes_the_link(host_services, browser, doc, make_file):
    link = launch(host_services, doc)
    token = Page(browser.get(link).text).fields["access_token"]
    with host_services.db.write() as s:
        assert host_services.tokens.revoke(s, file_id=doc.id) == 1
    refused_alike(browser, link)
    assert WopiClient(browser, doc.id, token).check_file_info().status_int == 401  # and the client's token

    other = host_services.add_file("alice", "Other.docx", io.BytesIO(b"x"))
    link = launch(host_services, other)
    host_services.files.delete(other.id)
    refused_alike(browser, link)


@pytest.mark.parametrize("file_token_writes", [True, False])
def test_create_child_files_host_urls_open_with_the_write_token_its_url_carries(
    host_services, browser, file_token_writes
):
    """A container token that may create ("c") but not write ("w") gets a write token for what it creates, and
    the new file's host page links open with that, not with the container's rights; nor with those of the
    read-only file token it came from (its edit link opened "Link not valid": the ticket's w was taken back by
    that token's row)."""
    file = host_services.add_file("alice", "Doc.docx", io.BytesIO(b"x"), ["Team"])
    token = host_services.issue_token(file.id, "alice", file_token_writes, folders="lc").token
    team = browser.get(f"/wopi/files/{file.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    made = browser.post(
        team["Url"].removeprefix(PUBLIC),
        b"",
        headers={"X-WOPI-Override": "CREATE_CHILD_FILE", "X-WOPI-SuggestedTarget": "New.docx"},
    ).json
    new_id = urlsplit(made["Url"]).path.rsplit("/", 1)[1]
    for link in (made["HostEditUrl"], made["HostViewUrl"]):
        page = Page(browser.get(link.removeprefix(PUBLIC)).text)
        opened = WopiClient(browser, new_id, page.fields["access_token"]).check_file_info().json
        assert (opened["UserId"], opened["UserCanWrite"]) == ("alice", True)


def test_checkfileinfos_host_urls_open_the_page_with_the_callers_rights(host_services, browser, doc):
    reader = host_services.issue_token(doc.id, "bob", can_write=False).token
    info = WopiClient(browser, doc.id, reader).check_file_info().json
    page = Page(browser.get(info["HostViewUrl"].removeprefix(PUBLIC)).text)
    derived = WopiClient(browser, doc.id, page.fields["access_token"]).check_file_info().json
    assert (derived["UserId"], derived["UserCanWrite"]) == ("bob", False)
    assert page.fields["access_token_ttl"] == str(info["AccessTokenExpiry"])  # the caller's token's expiry
    assert "HostEditUrl" not in info  # a reader is given no edit link, and the view link's ticket opens no editor
    refused_alike(browser, info["HostViewUrl"].removeprefix(PUBLIC).replace("/view/", "/edit/"))
    # revoking the caller's token closes the page it opened
    with host_services.db.write() as s:
        host_services.tokens.revoke(s, token=reader)
    refused_alike(browser, info["HostViewUrl"].removeprefix(PUBLIC))


def test_a_read_only_token_derived_from_a_write_token_opens_read_only_links(host_services, browser):
    """A write token for one file lists its folder and hands out read-only tokens for the others there: the
    links their CheckFileInfo gives keep them read-only, though the row they share says write."""
    mine = host_services.add_file("alice", "Mine.docx", io.BytesIO(b"mine"), ["Docs"])
    sibling = host_services.add_file("alice", "Sibling.docx", io.BytesIO(b"sibling"), ["Docs"])
    token = host_services.issue_token(mine.id, "alice", True, folders="l").token
    docs = browser.get(f"/wopi/files/{mine.id}/ancestry?access_token={token}").json["AncestorsWithRootFirst"][-1]
    children = browser.get(docs["Url"].removeprefix(PUBLIC).replace("?", "/children?")).json["ChildFiles"]
    url = next(child["Url"] for child in children if child["Name"] == "Sibling.docx")
    reader = WopiClient(browser, sibling.id, parse_qs(urlsplit(url).query)["access_token"][0])
    info = reader.check_file_info().json
    assert info["UserCanWrite"] is False
    page = Page(browser.get(info["HostViewUrl"].removeprefix(PUBLIC)).text)
    opened = WopiClient(browser, sibling.id, page.fields["access_token"])
    assert opened.check_file_info().json["UserCanWrite"] is False
    assert opened.lock("L").status_int == reader.lock("L").status_int == 404  # as for any read-only token
    assert opened.put_file(b"overwritten").status_int == 404 and opened.get_file().body == b"sibling"
    assert "HostEditUrl" not in info
    refused_alike(browser, info["HostViewUrl"].removeprefix(PUBLIC).replace("/view/", "/edit/"))


def test_a_file_the_client_cannot_open_and_a_host_without_a_client(host_services, browser, settings, clock):
    odd = host_services.add_file("alice", "Notes.xyz", io.BytesIO(b"x"))
    response = browser.get(launch(host_services, odd), status=404)
    assert "no view action for files like Notes.xyz" in response.text
    plain = create_app(settings, clock)  # no WOPIHOST_DISCOVERY_URL
    try:
        services = plain.extensions["wopihost"]
        file = services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
        response = webtest.TestApp(plain).get(launch(services, file), status=503)
        assert "no WOPI client configured" in response.text
        assert response.headers["Retry-After"] == str(RETRY_AFTER)  # as every 503 of the app
    finally:
        plain.extensions["wopihost"].db.dispose()


def test_an_unreadable_discovery_is_503_not_500(host_services, browser, doc, tmp_path):
    (tmp_path / "broken.xml").write_text("<not-discovery/>")
    # a cache keeps its last good copy when a fetch fails: this one never had one
    host_services.discovery = DiscoveryCache(str(tmp_path / "broken.xml"), clock=host_services.clock)
    response = browser.get(launch(host_services, doc), status=503)
    assert "discovery could not be read" in response.text
    assert response.headers["Retry-After"] == str(RETRY_AFTER)  # as every 503 of the app


@pytest.mark.parametrize(
    "urlsrc",
    ["/we/wordeditorframe.aspx?", "javascript:alert(document.domain)//", "https:///we/wordeditorframe.aspx?"],
    ids=["relative", "javascript", "no-host"],
)
def test_an_action_url_that_is_not_absolute_http_is_503_and_gets_no_token(settings, clock, tmp_path, urlsrc):
    """The page posts the access token to the action URL: only to a client's http(s) origin, never back to this
    host's own pages or into a script."""
    path = tmp_path / "discovery.xml"
    path.write_text(DISCOVERY.replace(f"{CLIENT}/we/wordeditorframe.aspx?", urlsrc))
    app = create_app(settings.with_changes(discovery_url=str(path), proof_keys="off"), clock)
    try:
        services = app.extensions["wopihost"]
        file = services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
        response = webtest.TestApp(app).get(launch(services, file, "edit"), status=503)
        assert "discovery could not be read" in response.text and "access_token" not in response.text
        assert response.headers["Retry-After"] == str(RETRY_AFTER)
    finally:
        app.extensions["wopihost"].db.dispose()


def test_a_database_that_cannot_serve_now_is_503_with_retry_after(host_services, browser, doc, monkeypatch):
    link = launch(host_services, doc)
    token, _ = host_services.issue_api_token("alice", can_write=True)

    def busy(*args, **kwargs):
        raise Unavailable("the database is busy", retry_after=7)

    monkeypatch.setattr(host_services.launches, "open", busy)
    monkeypatch.setattr(host_services.launches, "issue", busy)
    page = browser.get(link, status=503)
    assert "Try again later" in page.text and page.headers["Retry-After"] == "7"
    refused = api(browser, token.token, {"fileId": doc.id}, status=503)
    assert refused.json["error"]["code"] == "serviceNotAvailable" and refused.headers["Retry-After"] == "7"


ERROR_PAGE_CSP = {"default-src": "'none'", "base-uri": "'none'", "frame-ancestors": "'self'"}


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("invalid link", 403, "This link is not valid or has expired. Ask for a new one."),
        ("no such action", 404, "The WOPI client offers no view action for files like Notes.xyz."),
        ("link cut short", 404, "The requested URL was not found on the server."),
        ("link with more", 404, "The requested URL was not found on the server."),
        ("POST", 405, "The method is not allowed for the requested URL."),
        # Flask's automatic OPTIONS was a 200 with none of the page's headers; the page has no CORS to preflight
        ("OPTIONS", 405, "The method is not allowed for the requested URL."),
        ("OPTIONS of the launch API", 405, "The method is not allowed for the requested URL."),
    ],
)
def test_an_error_page_says_what_went_wrong_with_the_pages_headers(host_services, browser, doc, case, status, message):
    """Each refusal of the page is a page saying why, escaped, with the headers that keep the page out of caches
    and Referers and no other site's frames (frame-ancestors: as the page's own); a link cut short or a POST got
    an empty body, a blank page."""
    good = launch(host_services, doc)
    ticket = good.rsplit("/", 1)[1]
    method, path = "GET", good
    if case == "invalid link":
        path = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    elif case == "no such action":
        path = launch(host_services, host_services.add_file("alice", "Notes.xyz", io.BytesIO(b"x")))
    elif case == "link cut short":
        path = "/host/view"
    elif case == "link with more":
        path = good + "/%3Cscript%3E"
    elif case == "OPTIONS of the launch API":
        method, path = "OPTIONS", "/host/links"
    else:
        method = case
    response = browser.request(path + "?wdOrigin=%3Cscript%3E", method=method, expect_errors=True)
    assert response.status_int == status, response.body
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert message in response.text, response.text
    assert (
        "<script" not in response.text.lower() and ticket not in response.text and "access_token" not in response.text
    )
    csp = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert csp == ERROR_PAGE_CSP
    assert response.headers["Cache-Control"] == "no-cache, no-store" and response.headers["Pragma"] == "no-cache"
    assert (
        response.headers["Referrer-Policy"] == "no-referrer" and response.headers["X-Content-Type-Options"] == "nosniff"
    )
    if case in ("POST", "OPTIONS"):
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    elif case == "OPTIONS of the launch API":
        assert response.headers["Allow"] == "POST"


# -- the launch API ------------------------------------------------------------------------------------------


def api(browser, token, body, status=201):
    return browser.post_json(
        "/host/links", body, headers={"Authorization": f"Bearer {token}"} if token else {}, status=status
    )


def test_the_launch_api_makes_a_link_for_the_callers_file(host_services, browser, doc, clock):
    token, _ = host_services.issue_api_token("alice", can_write=True)
    response = api(browser, token.token, {"fileId": doc.id, "action": "edit"})
    body = response.json
    assert set(body) == {"url", "action", "fileId", "expiresAt"}
    assert (body["action"], body["fileId"]) == ("edit", doc.id)
    assert body["url"].startswith(f"{PUBLIC}/host/edit/")
    assert body["expiresAt"] == (clock.now() + timedelta(minutes=5)).replace(microsecond=0).isoformat() + "Z"
    assert response.headers["Cache-Control"] == "no-store"
    page = Page(browser.get(body["url"].removeprefix(PUBLIC)).text)
    assert WopiClient(browser, doc.id, page.fields["access_token"]).check_file_info().json["UserCanWrite"] is True
    # view is the default action
    assert api(browser, token.token, {"fileId": doc.id}).json["action"] == "view"


def test_revoking_an_api_token_revokes_the_links_and_tokens_the_launch_api_made_with_it(host_services, browser, doc):
    """A leaked API token, revoked, left its launch links opening and their 10-hour write tokens writing."""
    token, _ = host_services.issue_api_token("alice", can_write=True)
    other, _ = host_services.issue_api_token("alice", can_write=True)
    opened, spare = (api(browser, token.token, {"fileId": doc.id, "action": "edit"}).json["url"] for _ in range(2))
    kept = api(browser, other.token, {"fileId": doc.id, "action": "edit"}).json["url"]
    wopi = WopiClient(browser, doc.id, Page(browser.get(opened.removeprefix(PUBLIC)).text).fields["access_token"])
    assert wopi.check_file_info().status_int == 200
    with host_services.db.write() as s:
        assert host_services.tokens.revoke(s, token=token.token) == 3  # the API token and its two links' tokens
    assert wopi.check_file_info().status_int == 401 and wopi.lock("L").status_int == 401
    refused_alike(browser, spare.removeprefix(PUBLIC))
    assert Page(browser.get(kept.removeprefix(PUBLIC)).text).fields["access_token"]  # another token's: untouched


def test_an_api_token_revoked_while_the_launch_api_waits_to_write_makes_no_link(host_services, browser, doc, database):
    """The launch API found its caller's token live, then waited for another writer: the revocation that writer
    made lands first, and the link whose token would have outlived it is refused."""
    token, _ = host_services.issue_api_token("alice", can_write=True)
    answers = []
    with host_services.db.write() as s:
        assert host_services.tokens.revoke(s, token=token.token) == 1  # its row held (SQLite: the turn to write)
        asking = threading.Thread(target=lambda: answers.append(api(browser, token.token, {"fileId": doc.id}, "*")))
        asking.start()
        assert wait_until(lambda: waits_for_another_writer(database, asking)), "the launch API never waited"
    asking.join(30)
    assert answers[0].status_int == 401 and answers[0].json["error"]["code"] == "unauthenticated"
    with host_services.db.read() as s:
        assert (
            s.scalar(sa.select(sa.func.count()).select_from(AccessToken).where(AccessToken.parent_jti.is_not(None)))
            == 0
        )


def test_a_revocation_waits_for_a_launch_link_being_made_under_its_token_and_revokes_it_too(
    host_services, browser, doc, database
):
    """What the launch API's transaction does, held open: the API token asked again (its row held, on PostgreSQL)
    and the link's token made under it. A revocation meanwhile waits for it, then revokes the new token too."""
    token, _ = host_services.issue_api_token("alice", can_write=True)
    revoked = []

    def revoke():
        with host_services.db.write() as s:
            revoked.append(host_services.tokens.revoke(s, token=token.token))

    with host_services.db.write() as s:
        with Statements.in_session(s) as t:
            host_services.tokens.require_live(t, token.grant)
        child = host_services.tokens.issue(s, doc.id, "alice", "w", token.grant.expires_at, parent=token.grant.jti)
        revoking = threading.Thread(target=revoke)
        revoking.start()
        assert wait_until(lambda: waits_for_another_writer(database, revoking)), "the revocation never waited"
    revoking.join(30)
    assert revoked == [2]  # the API token and the link's
    assert WopiClient(browser, doc.id, child.token).check_file_info().status_int == 401


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"fileId": "nope"}, 404, "itemNotFound"),
        ({"fileId": None}, 400, "invalidRequest"),
        ("not an object", 400, "invalidRequest"),
        ({"fileId": "{file}", "action": "print"}, 400, "invalidRequest"),
        ({"fileId": "{file}", "action": 3}, 400, "invalidRequest"),
    ],
)
def test_the_launch_api_refuses_bad_requests_in_json(host_services, browser, doc, body, status, code):
    token, _ = host_services.issue_api_token("alice", can_write=True)
    if isinstance(body, dict) and body.get("fileId") == "{file}":
        body = {**body, "fileId": doc.id}
    error = api(browser, token.token, body, status=status).json["error"]
    assert error["code"] == code and error["message"]


def test_the_launch_api_reads_a_json_body_up_to_its_limit(host_services, browser, doc):
    token, _ = host_services.issue_api_token("alice", can_write=True)
    headers = {"Authorization": f"Bearer {token.token}", "Content-Type": "application/json"}
    large = json.dumps({"fileId": doc.id, "padding": "x" * MAX_JSON}).encode()
    error = browser.post("/host/links", large, headers=headers, status=413).json["error"]
    assert str(MAX_JSON) in error["message"]
    assert (
        browser.post("/host/links", b"{not json", headers=headers, status=400).json["error"]["code"] == "invalidRequest"
    )


@pytest.mark.parametrize(
    "path, status, code",
    [("/host/links/", 404, "itemNotFound"), ("/host/links/more", 405, "invalidRequest")],  # that one: a page's path
)
def test_the_launch_api_answers_in_json_where_no_route_matched(host_services, browser, path, status, code):
    """A program that mistypes the launch API's path got the page's HTML error, which it cannot read."""
    token, _ = host_services.issue_api_token("alice", can_write=True)
    response = browser.post(path, b"{}", headers={"Authorization": f"Bearer {token.token}"}, status=status)
    assert response.content_type == "application/json"
    assert response.json["error"]["code"] == code and response.json["error"]["message"]


def test_the_launch_api_answers_404_for_an_id_no_file_can_have(host_services, browser):
    """PostgreSQL refuses a NUL in a text parameter: the id is judged before it reaches the database."""
    token, _ = host_services.issue_api_token("alice", can_write=True)
    assert api(browser, token.token, {"fileId": "ab\u0000cd"}, status=404).json["error"]["code"] == "itemNotFound"


def test_a_client_that_views_through_its_edit_action_opens_view_links_read_only(settings, clock, tmp_path):
    """Collabora's discovery offers `view` only for what it cannot edit (no view for .docx): a view link opens its
    edit URL with a read-only token, so Collabora shows the file read-only, even to a writer's link."""
    app = create_app(
        settings.with_changes(discovery_url=str(FIXTURES_DIR / "discovery" / "collabora.xml"), proof_keys="off"), clock
    )
    try:
        services, browser = app.extensions["wopihost"], webtest.TestApp(app)
        report = services.add_file("alice", "Report.docx", io.BytesIO(b"x"))
        view = Page(browser.get(launch(services, report, "view", can_write=True)).text)
        assert view.form["action"].startswith("https://demo.eu.collaboraonline.com/browser/739da71/cool.html?WOPISrc=")
        viewer = WopiClient(browser, report.id, view.fields["access_token"])
        assert viewer.check_file_info().json["UserCanWrite"] is False
        assert viewer.put_file(b"changed").status_int == 404 and viewer.get_file().body == b"x"
        edit = Page(browser.get(launch(services, report, "edit", can_write=True)).text)  # an edit link still edits
        assert edit.form["action"] == view.form["action"]
        assert WopiClient(browser, report.id, edit.fields["access_token"]).check_file_info().json["UserCanWrite"]
    finally:
        app.extensions["wopihost"].db.dispose()


def test_a_file_without_an_extension_gets_the_cannot_open_page(host_services, browser):
    readme = host_services.add_file("alice", "README", io.BytesIO(b"x"))
    assert "Cannot open this file" in browser.get(launch(host_services, readme), status=404).text


def test_the_launch_api_checks_who_asks(host_services, browser, doc):
    anonymous = api(browser, None, {"fileId": doc.id}, status=401)
    assert anonymous.json["error"]["code"] == "unauthenticated"
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="wopihost"'  # RFC 9110: a 401 says how
    file_token = host_services.issue_token(doc.id, "alice", True).token  # a WOPI token is not an API token
    assert api(browser, file_token, {"fileId": doc.id}, status=401).json["error"]["code"] == "unauthenticated"
    reader, _ = host_services.issue_api_token("alice", can_write=False)
    assert (
        api(browser, reader.token, {"fileId": doc.id, "action": "edit"}, status=403).json["error"]["code"]
        == "accessDenied"
    )
    assert api(browser, reader.token, {"fileId": doc.id}).json["action"] == "view"
    stranger, _ = host_services.issue_api_token("mallory", can_write=True)
    assert api(browser, stranger.token, {"fileId": doc.id}, status=403).json["error"]["code"] == "accessDenied"


def test_a_link_never_outlives_the_api_token_it_came_from(host_services, browser, doc, clock):
    token, _ = host_services.issue_api_token("alice", True, expires_at=clock.now() + timedelta(minutes=2))
    body = api(browser, token.token, {"fileId": doc.id}).json
    assert body["expiresAt"] == (clock.now() + timedelta(minutes=2)).replace(microsecond=0).isoformat() + "Z"
    page = Page(browser.get(body["url"].removeprefix(PUBLIC)).text)
    assert int(page.fields["access_token_ttl"]) <= to_epoch_ms(clock.now() + timedelta(minutes=2))
