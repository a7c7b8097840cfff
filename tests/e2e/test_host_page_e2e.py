"""The host page in a real browser: headless Chromium opens a launch link of a real gunicorn server whose WOPI
client is a stand-in, served by this test from a real published discovery (Office for the web, Collabora Online,
ONLYOFFICE) with its URLs pointed at the stand-in.

The stand-in records what the browser POSTed into the frame, calls CheckFileInfo with the token it got (as a
real client would, and so proving the token works), then plays the client's side of PostMessage:
App_LoadingStatus to the PostMessageOrigin CheckFileInfo named, and a report of whether the host page answered
Host_PostmessageReady. Chromium is Debian's (`.ci/run` installs it); without it these tests are skipped.
Screenshots land in test-artifacts/ (or $WOPIHOST_TEST_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import pytest
import requests

from wopihost.localserver import LocalServer, free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "discovery"
ARTIFACTS = Path(os.environ.get("WOPIHOST_TEST_ARTIFACTS", Path(__file__).parent.parent.parent / "test-artifacts"))
_ORIGIN = re.compile(r"""(urlsrc|favIconUrl)="https?://[^/"]+""")

_CLIENT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>stand-in client</title>
<style>body{font:20px sans-serif;background:#e8f0fe;margin:0;padding:40px}</style></head>
<body><h1>Stand-in WOPI client (%(client)s)</h1><p>%(action)s of <b>%(name)s</b> for user %(user)s</p>
<p id="status">waiting for the host page</p>
<script>
var hostOrigin = %(host_origin)s;
window.addEventListener("message", function (event) {
  var message = JSON.parse(event.data);
  if (event.origin === hostOrigin && message.MessageId === "Host_PostmessageReady") {
    document.getElementById("status").textContent = "the host page answered " + message.MessageId;
    fetch("/report?message=" + encodeURIComponent(message.MessageId));
  }
});
window.parent.postMessage(JSON.stringify({MessageId: "App_LoadingStatus", SendTime: Date.now(),
                                          Values: {DocumentLoadedTime: Date.now()}}), hostOrigin);
fetch("/report?message=App_LoadingStatus");
</script></body></html>"""


class StandIn:
    """A WOPI client's web front end, as far as the host page can tell."""

    def __init__(self, client: str, moved: bool = False):
        """`moved`: the action URL answers with a redirect to another origin (localhost for 127.0.0.1)."""
        self.client, self.posts, self.reports, self.redirects = client, [], [], 0
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                if moved and self.headers["Host"].startswith("127.0.0.1"):
                    stand_in.redirects += 1
                    self.send_response(307)
                    self.send_header("Location", f"http://localhost:{stand_in.port}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                fields = {key: values[0] for key, values in form.items()}
                query = {key.lower(): values[0] for key, values in parse_qs(urlsplit(self.path).query).items()}
                info = requests.get(
                    query["wopisrc"], params={"access_token": fields.get("access_token", "")}, timeout=10
                )
                stand_in.posts.append(
                    {
                        "path": self.path,
                        "fields": fields,
                        "check_file_info": info.status_code,
                        "referer": self.headers.get("Referer"),
                    }
                )
                info = info.json() if info.ok else {}
                self._send(
                    _CLIENT_PAGE
                    % {
                        "client": stand_in.client,
                        "action": urlsplit(self.path).path,
                        "name": info.get("BaseFileName"),
                        "user": info.get("UserId"),
                        "host_origin": json.dumps(info.get("PostMessageOrigin", "")),
                    }
                )

            def do_GET(self):
                if self.path.startswith("/report?"):
                    stand_in.reports.append(parse_qs(urlsplit(self.path).query)["message"][0])
                self._send("", "text/plain")

            def _send(self, text, mimetype="text/html"):
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", f"{mimetype}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def discovery(self, fixture: Path, into: Path) -> Path:
        """The fixture with every client URL pointed at this stand-in."""
        into.write_text(_ORIGIN.sub(lambda m: f'{m.group(1)}="{self.origin}', fixture.read_text()))
        return into

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def expected_urlsrc(fixture: Path, ext: str, action: str) -> str:
    """The urlsrc the host page must use: the action for the extension in the preferred net zone."""
    zones = {zone.get("name"): zone for zone in ET.parse(fixture).getroot()}
    for zone_name in ("external-https", "internal-https", "external-http", "internal-http"):
        for element in zones[zone_name].iter("action") if zone_name in zones else ():
            if element.get("name") == action and element.get("ext") == ext:
                return element.get("urlsrc")
    raise AssertionError(f"{fixture.name} has no {action} action for .{ext}")


def chromium(url: str, screenshot: Path, profile: Path) -> None:
    """Open `url` headless until the page has settled, and take a screenshot of it."""
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1200,800",
            "--lang=en-US",
            "--virtual-time-budget=15000",
            f"--screenshot={screenshot}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "Quarterly plan.docx"
    path.write_bytes(b"PK\x03\x04 a document")
    return path


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize(
    "client, fixture, action",
    [
        ("Office for the web", "office.xml", "edit"),
        ("Collabora Online", "collabora.xml", "edit"),
        ("ONLYOFFICE", "onlyoffice.xml", "view"),
    ],
)
def test_a_launch_link_opens_the_client_with_the_token_posted_into_its_frame(
    tmp_path, database, doc, client, fixture, action
):
    stand_in = StandIn(client)
    discovery = stand_in.discovery(FIXTURES / fixture, tmp_path / "discovery.xml")
    server = LocalServer.start(
        tmp_path, database, extra_env={"WOPIHOST_DISCOVERY_URL": str(discovery), "WOPIHOST_PROOF_KEYS": "off"}
    )
    try:
        file_id = server.add_file(doc)["id"]
        link = server.cli("open", file_id, "--user", "alice", "--action", action).strip()
        assert link.startswith(f"{server.base}/host/{action}/") and "\n" not in link

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / f"host-page-{fixture.removesuffix('.xml')}.png"
        chromium(link, screenshot, tmp_path / "profile")
        assert wait_for(lambda: stand_in.posts), "the host page never posted into the client's frame"
        post = stand_in.posts[0]

        # the action URL: the discovery's, placeholders filled or dropped, WOPISrc naming the file
        urlsrc = expected_urlsrc(discovery, "docx", action)
        sent = urlsplit(post["path"])
        assert sent.path == urlsplit(urlsrc).path
        query = parse_qs(sent.query)
        assert {key.lower(): value for key, value in query.items()}["wopisrc"] == [
            f"{server.base}/wopi/files/{file_id}"
        ]
        assert "<" not in post["path"] and ">" not in post["path"]
        if "UI_LLCC" in urlsrc:
            assert query["ui"] == ["en-US"]
        if "HOST_SESSION_ID" in urlsrc:
            assert re.fullmatch(r"[A-Za-z0-9]{16}", query["hid"][0])
        # the form: the token (which works: the stand-in's CheckFileInfo) and its expiry, nothing else
        assert set(post["fields"]) == {"access_token", "access_token_ttl"}
        assert post["check_file_info"] == 200
        assert int(post["fields"]["access_token_ttl"]) > time.time() * 1000 + 9 * 3600 * 1000
        assert post["referer"] is None  # the launch link never reaches the client
        # PostMessage: the page answered the client, from and to the right origins
        assert wait_for(lambda: len(stand_in.reports) == 2)
        assert sorted(stand_in.reports) == ["App_LoadingStatus", "Host_PostmessageReady"]
        assert screenshot.stat().st_size > 0
    finally:
        server.stop()
        stand_in.stop()
    assert "Traceback" not in server.log_text()
    assert post["fields"]["access_token"] not in server.log_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_frame_cannot_be_taken_to_another_origin(tmp_path, database, doc):
    """The page's Content-Security-Policy lets its frame load the client's origin only, redirects included:
    so the PostMessage the page answers can only come from there."""
    stand_in = StandIn("elsewhere", moved=True)
    discovery = stand_in.discovery(FIXTURES / "office.xml", tmp_path / "discovery.xml")
    server = LocalServer.start(
        tmp_path, database, extra_env={"WOPIHOST_DISCOVERY_URL": str(discovery), "WOPIHOST_PROOF_KEYS": "off"}
    )
    try:
        link = server.cli("open", server.add_file(doc)["id"], "--user", "alice").strip()
        chromium(link, tmp_path / "screenshot.png", tmp_path / "profile")
        assert wait_for(lambda: stand_in.redirects == 1)  # the form was posted to the client's origin ...
        time.sleep(1)
        assert stand_in.posts == [] and stand_in.reports == []  # ... and its redirect elsewhere was not followed
    finally:
        server.stop()
        stand_in.stop()
