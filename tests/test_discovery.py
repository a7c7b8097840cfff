"""WOPI discovery (wopihost.discovery): parsing, action URLs, and the fetching cache."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from datetime import datetime

import pytest

from wopihost.clock import FrozenClock
from wopihost.discovery import (
    ActionNotFound,
    Discovery,
    DiscoveryCache,
    DiscoveryError,
    action_url,
    fetch_source,
    parse_discovery,
    transform_urlsrc,
)
from wopihost.proof import ProofKeys, verify

from .helpers import FIXTURES_DIR

VECTORS = FIXTURES_DIR / "proof-keys" / "vectors.json"
VECTOR_DATA = json.loads(VECTORS.read_text())
KEYS = VECTOR_DATA["discovery"]  # Microsoft's sample key pair: value/modulus/exponent and old*

WOPI_SRC = "https://host.example/wopi/files/abc123"
WOPI_SRC_ENCODED = "https%3A%2F%2Fhost.example%2Fwopi%2Ffiles%2Fabc123"

WORD_VIEW = (
    "https://word-view.office.example/wv/wordviewerframe.aspx?<ui=UI_LLCC&><rs=DC_LLCC&>"
    "<dchat=DISABLE_CHAT&><hid=HOST_SESSION_ID&><sc=SESSION_CONTEXT&><wopisrc=WOPI_SOURCE&>"
    "<IsLicensedUser=BUSINESS_USER&><actnavid=ACTIVITY_NAVIGATION_ID&>"
)
WORD_EDIT = (
    "https://word-edit.office.example/we/wordeditorframe.aspx?<ui=UI_LLCC&><rs=DC_LLCC&>"
    "<wopisrc=WOPI_SOURCE&><IsLicensedUser=BUSINESS_USER&>"
)
EXCEL = "https://excel.office.example/x/_layouts/xlviewerinternal.aspx"
EXCEL_VIEW = EXCEL + "?<ui=UI_LLCC&><rs=DC_LLCC&>"
EXCEL_EDIT = EXCEL + "?edit=1&<ui=UI_LLCC&>"
WOPITEST_VIEW = (
    "https://word-view.office.example/wv/wordviewerframe.aspx?<ui=UI_LLCC&><testcategory=VALIDATOR_TEST_CATEGORY>"
)
E = WOPI_SRC_ENCODED


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def proof_key_element(**attrs: str) -> str:
    return "<proof-key " + " ".join(f'{name}="{value}"' for name, value in attrs.items()) + "/>"


ALL_KEY_ATTRS = {name: KEYS[name] for name in ("oldvalue", "oldmodulus", "oldexponent", "value", "modulus", "exponent")}


def office_discovery(proof_key: str | None = None, internal_host: str = "internal.office.example") -> bytes:
    """A small discovery document shaped like Office for the web's."""
    if proof_key is None:
        proof_key = proof_key_element(**ALL_KEY_ATTRS)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<wopi-discovery>
  <net-zone name="external-https">
    <app name="Word" favIconUrl="https://word-view.office.example/wv/resources/1033/FavIcon_Word.ico"
         checkLicense="true">
      <action name="view" ext="doc" default="true" urlsrc="{esc(WORD_VIEW)}"/>
      <action name="view" ext="docx" default="true" urlsrc="{esc(WORD_VIEW)}"/>
      <action name="edit" ext="docx" requires="locks,update" urlsrc="{esc(WORD_EDIT)}"/>
      <action name="editnew" ext="docx" requires="locks, update" urlsrc="{esc(WORD_EDIT + "<new=1&>")}"/>
    </app>
    <app name="Excel" favIconUrl="https://excel.office.example/x/_layouts/resources/FavIcon_Excel.ico"
         checkLicense="true">
      <action name="view" ext="XLSX" default="true"
              urlsrc="{esc(EXCEL_VIEW)}"/>
      <action name="edit" ext=".xlsx" requires="update"
              urlsrc="{esc(EXCEL_EDIT)}"/>
    </app>
    <app name="OneNote" checkLicense="true">
      <action name="view" ext="" progid="OneNote.Notebook"
              urlsrc="https://onenote.office.example/o/onenoteframe.aspx?&lt;wopisrc=WOPI_SOURCE&amp;&gt;"/>
    </app>
    <app name="WopiTest" favIconUrl="https://word-view.office.example/wv/resources/1033/FavIcon_Word.ico"
         checkLicense="false">
      <action name="view" ext="wopitest" default="true"
              urlsrc="{esc(WOPITEST_VIEW)}"/>
      <action name="getinfo" ext="wopitest" urlsrc="https://word-view.office.example/wv/wopitest.aspx"/>
      <action ext="broken" urlsrc="https://nowhere.example/"/>
    </app>
  </net-zone>
  <net-zone name="internal-http">
    <app name="Word" checkLicense="false">
      <action name="view" ext="docx"
              urlsrc="http://{internal_host}/wv/wordviewerframe.aspx?&lt;wopisrc=WOPI_SOURCE&amp;&gt;"/>
    </app>
  </net-zone>
  {proof_key}
</wopi-discovery>""".encode()


def vector_keys() -> ProofKeys:
    return ProofKeys.from_modulus_exponent(KEYS["modulus"], KEYS["exponent"], KEYS["oldmodulus"], KEYS["oldexponent"])


# ------------------------------------------------------------------------------------------ parsing


def test_parse_realistic_document():
    discovery = parse_discovery(office_discovery())
    assert isinstance(discovery, Discovery)
    assert len(discovery.actions) == 10  # the action without a name is skipped
    assert discovery.extensions == {"doc", "docx", "xlsx", "wopitest"}

    edit = discovery.find(ext="docx", name="edit")
    assert len(edit) == 1
    assert edit[0].app == "Word" and edit[0].net_zone == "external-https"
    assert edit[0].requires == ("locks", "update") and edit[0].default is False
    assert edit[0].urlsrc == WORD_EDIT  # entities decoded
    assert discovery.find(ext="docx", name="editnew")[0].requires == ("locks", "update")

    views = discovery.find(ext="DOCX", name="view")
    assert [(a.net_zone, a.default) for a in views] == [("external-https", True), ("internal-http", False)]

    excel = discovery.find(ext="xlsx")
    assert [a.name for a in excel] == ["view", "edit"]  # "XLSX" and ".xlsx" both normalised
    assert all(a.ext == "xlsx" and a.app == "Excel" for a in excel)

    onenote = discovery.find(progid="onenote.notebook")
    assert len(onenote) == 1 and onenote[0].ext == "" and onenote[0].progid == "OneNote.Notebook"

    wopitest = discovery.find(ext="wopitest")
    assert {a.name for a in wopitest} == {"view", "getinfo"}


def test_parse_proof_keys_from_modulus_and_value():
    keys = parse_discovery(office_discovery()).proof_keys
    assert keys is not None and keys.same_as(vector_keys())


def test_parsed_keys_verify_microsoft_vectors():
    keys = parse_discovery(office_discovery()).proof_keys
    for case in VECTOR_DATA["cases"]:
        verdict = verify(
            keys,
            access_token_raw=case["access_token"],
            url=case["url"],
            timestamp_header=str(case["timestamp"]),
            proof=case["proof"],
            proof_old=case["proof_old"],
            now=None,
            check_freshness=False,
        )
        assert verdict.ok is case["valid"], case["name"]


def test_value_blob_alone():
    element = proof_key_element(value=KEYS["value"], oldvalue=KEYS["oldvalue"])
    keys = parse_discovery(office_discovery(element)).proof_keys
    assert keys is not None and keys.same_as(vector_keys())


def test_modulus_exponent_alone():
    element = proof_key_element(modulus=KEYS["modulus"], exponent=KEYS["exponent"])
    keys = parse_discovery(office_discovery(element)).proof_keys
    assert keys is not None and keys.old is None
    assert keys.current.public_numbers() == vector_keys().current.public_numbers()


def test_empty_old_attributes_mean_no_old_key():
    element = proof_key_element(value=KEYS["value"], oldvalue="", oldmodulus="", oldexponent="")
    keys = parse_discovery(office_discovery(element)).proof_keys
    assert keys is not None and keys.old is None


def test_no_proof_key_element():
    assert parse_discovery(office_discovery(proof_key="")).proof_keys is None


@pytest.mark.parametrize(
    "attrs, message",
    [
        (dict(ALL_KEY_ATTRS, value=KEYS["oldvalue"]), "disagree"),
        (dict(ALL_KEY_ATTRS, oldmodulus=KEYS["modulus"]), "disagree"),
        (dict(ALL_KEY_ATTRS, modulus="not base64!"), "base64"),
        (dict(ALL_KEY_ATTRS, value=KEYS["value"][:-8]), "value"),
        ({"modulus": KEYS["modulus"]}, "exponent"),
        ({"oldvalue": KEYS["oldvalue"]}, "no current key"),
    ],
)
def test_bad_proof_keys_are_rejected(attrs, message):
    with pytest.raises(DiscoveryError, match=message):
        parse_discovery(office_discovery(proof_key_element(**attrs)))


def test_two_proof_key_elements_are_rejected():
    element = proof_key_element(**ALL_KEY_ATTRS)
    with pytest.raises(DiscoveryError):
        parse_discovery(office_discovery(element + element))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<wopi-discovery><net-zone name="&lol3;"/></wopi-discovery>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE wopi-discovery [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<wopi-discovery><net-zone name="&xxe;"/></wopi-discovery>"""

PLAIN_DOCTYPE = b"""<?xml version="1.0"?>
<!DOCTYPE wopi-discovery SYSTEM "http://attacker.example/discovery.dtd">
<wopi-discovery/>"""


@pytest.mark.parametrize(
    "document", [BILLION_LAUGHS, EXTERNAL_ENTITY, PLAIN_DOCTYPE], ids=["billion-laughs", "external-entity", "doctype"]
)
def test_doctype_and_entities_are_rejected(document):
    with pytest.raises(DiscoveryError, match="DOCTYPE"):
        parse_discovery(document)


def test_doctype_in_utf16_is_rejected():
    document = EXTERNAL_ENTITY.replace(b'version="1.0"', b'version="1.0" encoding="utf-16"').decode()
    with pytest.raises(DiscoveryError, match="DOCTYPE"):
        parse_discovery(document.encode("utf-16"))


def test_utf16_document_parses():
    document = office_discovery().decode().replace('encoding="utf-8"', 'encoding="utf-16"')
    discovery = parse_discovery(document.encode("utf-16"))
    assert len(discovery.find(ext="docx")) == 4 and discovery.proof_keys is not None


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"   ",
        b"not xml at all",
        b"<wopi-discovery>",
        b"<wopi-discovery></net-zone>",
        b"<wopi-discovery/><trailing/>",
        b"\xff\xfe\x00garbage",
        b"<a>&undefined;</a>",
        b"<html><body>502 Bad Gateway</body></html>",
    ],
)
def test_malformed_xml_raises_discovery_error(document):
    with pytest.raises(DiscoveryError):
        parse_discovery(document)


def test_empty_discovery_has_no_actions():
    discovery = parse_discovery(b"<wopi-discovery/>")
    assert discovery.actions == () and discovery.proof_keys is None


# -------------------------------------------------------------------------------------- action URLs


def test_office_view_url():
    url = transform_urlsrc(WORD_VIEW, WOPI_SRC, {"UI_LLCC": "en-US", "DC_LLCC": "de-DE"})
    assert url == (
        f"https://word-view.office.example/wv/wordviewerframe.aspx?ui=en-US&rs=de-DE&wopisrc={WOPI_SRC_ENCODED}"
    )


def test_unknown_placeholders_are_removed_and_known_ones_kept():
    url = transform_urlsrc(WORD_VIEW, WOPI_SRC, {"SESSION_CONTEXT": "ctx 1&2", "BUSINESS_USER": "1"})
    assert url == (
        "https://word-view.office.example/wv/wordviewerframe.aspx?sc=ctx%201%262"
        f"&wopisrc={WOPI_SRC_ENCODED}&IsLicensedUser=1"
    )
    assert "<" not in url and ">" not in url and "UI_LLCC" not in url


@pytest.mark.parametrize(
    "urlsrc, expected",
    [
        # no WOPI_SOURCE placeholder: WOPISrc= appended
        ("https://c.example/browser/h/cool.html?", f"https://c.example/browser/h/cool.html?WOPISrc={E}"),
        ("https://c.example/edit", f"https://c.example/edit?WOPISrc={E}"),
        ("https://c.example/edit?a=1", f"https://c.example/edit?a=1&WOPISrc={E}"),
        ("https://c.example/edit?a=1&<ui=UI_LLCC&>", f"https://c.example/edit?a=1&WOPISrc={E}"),
        # last placeholder without "&", and trailing "&" dropped
        ("https://o.example/v.aspx?<ui=UI_LLCC&><wopisrc=WOPI_SOURCE>", f"https://o.example/v.aspx?wopisrc={E}"),
        ("https://o.example/v.aspx?<wopisrc=WOPI_SOURCE&><ui=UI_LLCC&>", f"https://o.example/v.aspx?wopisrc={E}"),
        # ONLYOFFICE style: "?&" and "&&" leftovers
        (
            "https://oo.example/hosting/wopi/word/view?&<rs=DC_LLCC&><wopisrc=WOPI_SOURCE&>&",
            f"https://oo.example/hosting/wopi/word/view?wopisrc={E}",
        ),
        # something else in angle brackets is not a URL part
        ("https://o.example/v.aspx?<junk><wopisrc=WOPI_SOURCE&>", f"https://o.example/v.aspx?wopisrc={E}"),
        # a fragment stays at the end
        ("https://o.example/v.aspx?<wopisrc=WOPI_SOURCE&>#frag", f"https://o.example/v.aspx?wopisrc={E}#frag"),
        # and an appended WOPISrc goes into the query, before it
        ("https://c.example/cool.html?lang=en#start", f"https://c.example/cool.html?lang=en&WOPISrc={E}#start"),
    ],
)
def test_transform_examples(urlsrc, expected):
    assert transform_urlsrc(urlsrc, WOPI_SRC) == expected


def test_wopi_src_is_fully_url_encoded():
    url = transform_urlsrc("https://o.example/v?<wopisrc=WOPI_SOURCE&>", "https://h:8443/wopi/files/a b?x=1&y")
    assert url == "https://o.example/v?wopisrc=https%3A%2F%2Fh%3A8443%2Fwopi%2Ffiles%2Fa%20b%3Fx%3D1%26y"


def test_action_url_picks_net_zone_by_preference():
    discovery = parse_discovery(office_discovery())
    assert action_url(discovery, "docx", "view", WOPI_SRC).startswith("https://word-view.office.example/")
    internal = action_url(discovery, ".DOCX", "view", WOPI_SRC, net_zones=("internal-http",))
    assert internal == f"http://internal.office.example/wv/wordviewerframe.aspx?wopisrc={WOPI_SRC_ENCODED}"
    # no action in the preferred zone: any zone will do
    assert action_url(discovery, "docx", "edit", WOPI_SRC, net_zones=("internal-http",)).startswith(
        "https://word-edit.office.example/"
    )


def test_action_url_with_values_and_progid():
    discovery = parse_discovery(office_discovery())
    url = action_url(discovery, "xlsx", "edit", WOPI_SRC, values={"UI_LLCC": "fr-FR"})
    assert url == f"{EXCEL}?edit=1&ui=fr-FR&WOPISrc={E}"
    onenote = action_url(discovery, None, "view", WOPI_SRC, progid="OneNote.Notebook")
    assert onenote == f"https://onenote.office.example/o/onenoteframe.aspx?wopisrc={WOPI_SRC_ENCODED}"
    validator = action_url(discovery, "wopitest", "view", WOPI_SRC, values={"VALIDATOR_TEST_CATEGORY": "OfficeOnline"})
    assert validator.endswith(f"?testcategory=OfficeOnline&WOPISrc={WOPI_SRC_ENCODED}")


@pytest.mark.parametrize("ext, action", [("pdf", "view"), ("docx", "embedview"), ("wopitest", "edit")])
def test_action_url_for_missing_action(ext, action):
    discovery = parse_discovery(office_discovery())
    with pytest.raises(ActionNotFound) as info:
        action_url(discovery, ext, action, WOPI_SRC)
    assert isinstance(info.value, DiscoveryError) and isinstance(info.value, LookupError)


# ------------------------------------------------------------------------------------------- cache

START = datetime(2026, 1, 1, 12, 0, 0)
ROTATED_BEFORE = proof_key_element(value=KEYS["oldvalue"])  # the client's key before it rotated
ROTATED_AFTER = proof_key_element(value=KEYS["value"], oldvalue=KEYS["oldvalue"])


class FakeFetch:
    """Stands in for the network: returns the queued documents (or raises the queued errors)."""

    def __init__(self, *responses):
        self.responses = list(responses)
        self.calls: list[str] = []

    def __call__(self, source: str) -> bytes:
        self.calls.append(source)
        response = self.responses[0] if len(self.responses) == 1 else self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response


def make_cache(fetch, **kwargs) -> tuple[DiscoveryCache, FrozenClock]:
    clock = FrozenClock(START)
    kwargs.setdefault("ttl_seconds", 3600)
    kwargs.setdefault("retry_seconds", 60)
    return DiscoveryCache("https://office.example/hosting/discovery", fetch, clock=clock, **kwargs), clock


def test_cache_fetches_once_within_ttl():
    fetch = FakeFetch(office_discovery())
    cache, clock = make_cache(fetch)
    first = cache.get()
    clock.advance(seconds=3599)
    assert cache.get() is first
    assert fetch.calls == ["https://office.example/hosting/discovery"]
    assert cache.fetched_at == START


def test_cache_refreshes_after_ttl():
    fetch = FakeFetch(office_discovery(), office_discovery(internal_host="moved.example"))
    cache, clock = make_cache(fetch)
    first = cache.get()
    clock.advance(seconds=3600)
    second = cache.get()
    assert second is not first and len(fetch.calls) == 2
    assert "moved.example" in second.find(net_zone="internal-http")[0].urlsrc
    assert cache.fetched_at == START.replace(hour=13)


def test_failed_refresh_keeps_last_good_copy_and_logs(caplog):
    fetch = FakeFetch(
        office_discovery(),
        OSError("connection refused"),
        b"<html>oops</html>",
        office_discovery(internal_host="back.example"),
    )
    cache, clock = make_cache(fetch)
    good = cache.get()
    clock.advance(seconds=3600)
    with caplog.at_level(logging.WARNING, logger="wopihost.discovery"):
        assert cache.get() is good
    assert "connection refused" in caplog.text and "keeping" in caplog.text
    assert any(r.name == "wopihost.discovery" and r.levelno == logging.WARNING for r in caplog.records)
    assert "connection refused" in cache.last_error
    assert len(fetch.calls) == 2

    # within the retry interval nobody asks again
    clock.advance(seconds=59)
    assert cache.get() is good and len(fetch.calls) == 2
    # a broken document is a failure too
    clock.advance(seconds=1)
    assert cache.get() is good and len(fetch.calls) == 3 and "DiscoveryError" in cache.last_error
    clock.advance(seconds=60)
    recovered = cache.get()
    assert recovered is not good and len(fetch.calls) == 4 and cache.last_error is None
    assert "back.example" in recovered.find(net_zone="internal-http")[0].urlsrc


def test_never_fetched_raises():
    fetch = FakeFetch(OSError("no route to host"), OSError("no route to host"), office_discovery())
    cache, clock = make_cache(fetch)
    with pytest.raises(DiscoveryError, match="no route to host"):
        cache.get()
    with pytest.raises(DiscoveryError):
        cache.refresh()
    assert len(fetch.calls) == 2
    clock.advance(seconds=30)
    with pytest.raises(DiscoveryError):  # still backing off
        cache.get()
    assert len(fetch.calls) == 2
    clock.advance(seconds=60)
    assert cache.get().proof_keys is not None


def test_refresh_picks_up_rotated_keys():
    fetch = FakeFetch(office_discovery(ROTATED_BEFORE), office_discovery(ROTATED_AFTER))
    cache, clock = make_cache(fetch)
    before = cache.get().proof_keys
    assert before.old is None
    assert before.current.public_numbers() == vector_keys().old.public_numbers()
    clock.advance(seconds=10)
    after = cache.refresh().proof_keys  # forced, well within the ttl
    assert after.same_as(vector_keys())
    assert cache.get().proof_keys is after and len(fetch.calls) == 2


def test_proof_failure_refresh_is_rate_limited():
    fetch = FakeFetch(office_discovery(ROTATED_BEFORE), office_discovery(ROTATED_AFTER))
    cache, clock = make_cache(fetch)
    cache.get()
    clock.advance(seconds=5)
    assert cache.refresh_if_older_than(60).proof_keys.old is None
    assert len(fetch.calls) == 1
    clock.advance(seconds=55)
    assert cache.refresh_if_older_than(60).proof_keys.same_as(vector_keys())
    assert len(fetch.calls) == 2


def test_cold_cache_fetches_once_for_concurrent_callers():
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow_fetch(source):
        calls.append(source)
        started.set()
        release.wait(5)
        return office_discovery()

    cache, _ = make_cache(slow_fetch)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(30)
    time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)


def test_stale_copy_is_served_while_another_thread_refreshes():
    release = threading.Event()
    fetch_count = []

    def fetch(source):
        fetch_count.append(source)
        if len(fetch_count) == 2:
            release.wait(5)
        return office_discovery()

    cache, clock = make_cache(fetch)
    first = cache.get()
    clock.advance(seconds=3600)
    refresher = threading.Thread(target=cache.get)
    refresher.start()
    while len(fetch_count) < 2:
        time.sleep(0.001)
    assert cache.get() is first  # does not wait for the slow fetch
    release.set()
    refresher.join(30)
    assert cache.get() is not first and len(fetch_count) == 2


def test_file_source(tmp_path):
    path = tmp_path / "discovery.xml"
    path.write_bytes(office_discovery())
    cache = DiscoveryCache(str(path))
    assert cache.get().proof_keys.same_as(vector_keys())
    with pytest.raises(DiscoveryError, match="cannot fetch"):
        DiscoveryCache(str(tmp_path / "missing.xml")).get()


@pytest.mark.parametrize("source", ["", "ftp://office.example/discovery", "file:///etc/discovery.xml"])
def test_unsupported_source(source):
    with pytest.raises(ValueError):
        DiscoveryCache(source)


@pytest.fixture
def http_server():
    """A real local HTTP server, to exercise the default urllib fetch."""
    document = office_discovery()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":  # a byte every 0.2 s: each read is within a 1 s timeout, the whole is not
                self.send_response(200)
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                for byte in document[:40]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            elif self.path == "/hosting/discovery":
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                self.wfile.write(document)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_source(http_server):
    cache = DiscoveryCache(http_server + "/hosting/discovery", timeout=5)
    assert cache.get().proof_keys.same_as(vector_keys())
    with pytest.raises(DiscoveryError, match="404"):
        fetch_source(http_server + "/elsewhere", timeout=5)


def test_a_source_that_cannot_be_parsed_is_a_discovery_error_that_shows_none_of_it():
    """urlsplit's ValueError was raised again as the failure was put in words: a 500 on every proof check."""
    with pytest.raises(DiscoveryError, match="a URL that cannot be parsed") as failed:
        fetch_source("http://[::1/hosting/discovery?access_token=s3cret", timeout=1)
    assert "s3cret" not in str(failed.value)


def test_fetch_size_limit(tmp_path):
    path = tmp_path / "big.xml"
    path.write_bytes(b"<wopi-discovery>" + b" " * 2000 + b"</wopi-discovery>")
    with pytest.raises(DiscoveryError, match="larger"):
        fetch_source(str(path), max_bytes=1000)
    assert fetch_source(str(path), max_bytes=5000).startswith(b"<wopi-discovery>")


def test_a_discovery_that_trickles_in_fails_after_the_timeout_not_when_the_server_is_done(http_server):
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="longer than the timeout"):
        fetch_source(http_server + "/slow", timeout=1)
    assert time.monotonic() - started < 4  # the server would send for 8 s
