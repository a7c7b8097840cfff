"""WOPIHOST_S3_DOWNLOAD_URL: with content in an object store that clients can reach, Graph's
@microsoft.graph.downloadUrl of a file stored as one whole object is the store's own presigned GET, which a plain
HTTP client fetches from the store (the session's real Ceph RGW) without the host; content kept as extents of
several objects, and every file without the setting, keep the host's own download URL."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import webtest

from wopihost.app import create_app
from wopihost.clock import Clock
from wopihost.config import Settings

from .helpers import TEST_SECRET, GraphClient

HOST_DOWNLOADS = "https://wopi.example.test/v1.0/downloads/"


@pytest.fixture
def graph_on_s3(ceph_rgw, s3, database, tmp_path, monkeypatch):
    """A Graph client of a host on a fresh bucket; `download_url` is the setting (None: unset)."""
    for name, value in ceph_rgw.env().items():
        monkeypatch.setenv(name, value)
    made = []

    def make(download_url: str | None, expires_at: datetime | None = None) -> GraphClient:
        bucket = f"presign-{secrets.token_hex(6)}"
        s3.create_bucket(Bucket=bucket)
        settings = Settings.from_env(
            {
                "WOPIHOST_DATA_DIR": str(tmp_path / bucket),
                "WOPIHOST_DATABASE_URL": database,
                "WOPIHOST_PUBLIC_URL": "https://wopi.example.test",
                "WOPIHOST_SECRET_KEY": TEST_SECRET,
                "WOPIHOST_SWEEP_INTERVAL": "0",
                "WOPIHOST_STORAGE_URL": f"s3://{bucket}/files",
                "WOPIHOST_S3_ADDRESSING_STYLE": "path",
                **({"WOPIHOST_S3_DOWNLOAD_URL": download_url} if download_url else {}),
            }
        )
        app = create_app(settings)
        made.append(app)
        services = app.extensions["wopihost"]
        issued, drive_id = services.issue_api_token("alice", True, expires_at)
        return GraphClient(webtest.TestApp(app), issued.token, drive_id, "/v1.0")

    yield make
    for app in made:
        app.extensions["wopihost"].db.dispose()


def test_a_whole_object_is_downloaded_from_the_store_itself(graph_on_s3, ceph_rgw):
    graph = graph_on_s3(ceph_rgw.endpoint)
    content = b"%PDF-1.7 " + secrets.token_bytes(5000)
    assert graph.put("me/drive/root:/Quarterly report.pdf:/content", content).status_int == 201
    url = graph.get("me/drive/root:/Quarterly report.pdf").json["@microsoft.graph.downloadUrl"]
    assert url.startswith(ceph_rgw.endpoint + "/")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["3600"]  # as long as the host's own download tickets last
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == content
    assert fetched.headers["Content-Disposition"] == "attachment; filename*=UTF-8''Quarterly%20report.pdf"
    assert fetched.headers["Content-Type"] == "application/pdf"
    tampered = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=360000")
    assert requests.get(tampered, timeout=10).status_code == 403  # the signature covers what it grants


def test_a_presigned_url_expires_with_the_token_it_was_issued_under(graph_on_s3, ceph_rgw):
    """A presigned URL lasted an hour whatever the token it was issued under had left: a token about to expire
    handed out URLs that served the file for an hour more. It lasts what the token has left, as the host's own
    download URLs do."""
    graph = graph_on_s3(ceph_rgw.endpoint, Clock().now() + timedelta(seconds=120))
    assert graph.put("me/drive/root:/a.txt:/content", b"plain").status_int == 201
    url = graph.get("me/drive/root:/a.txt").json["@microsoft.graph.downloadUrl"]
    assert url.startswith(ceph_rgw.endpoint + "/")
    assert 110 <= int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) <= 120


def test_content_kept_as_extents_is_downloaded_through_the_host(graph_on_s3, ceph_rgw):
    graph = graph_on_s3(ceph_rgw.endpoint)
    session = graph.post_json("me/drive/root:/pieces.bin:/createUploadSession", {}).json
    first, second = secrets.token_bytes(3000), secrets.token_bytes(2000)
    assert graph.upload(session["uploadUrl"], first, 0, 5000).status_int == 202
    done = graph.upload(session["uploadUrl"], second, 3000, 5000)
    assert done.status_int == 201
    url = graph.get(f"me/drive/items/{done.json['id']}").json["@microsoft.graph.downloadUrl"]
    assert url.startswith(HOST_DOWNLOADS)
    assert graph.testapp.get(graph.url(url)).body == first + second


def test_without_the_setting_every_download_goes_through_the_host(graph_on_s3):
    graph = graph_on_s3(None)
    assert graph.put("me/drive/root:/a.txt:/content", b"plain").status_int == 201
    url = graph.get("me/drive/root:/a.txt").json["@microsoft.graph.downloadUrl"]
    assert url.startswith(HOST_DOWNLOADS)
    assert graph.testapp.get(graph.url(url)).body == b"plain"
