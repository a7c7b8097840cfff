"""The request fuzz test once more, over HTTP against gunicorn: the server's own parsing and body readers
take part, and no request may end in a 500 or a traceback in the server's log."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wopihost.localserver import LocalServer
from wopihost.validator.httpclient import Client

from ..fuzz import OVERRIDES, bodies, headers

pytestmark = pytest.mark.e2e


@pytest.fixture
def target(tmp_path, database):
    """A served document (CSPP Plus on) and a keep-alive client; the log is checked when the run ends."""
    server = LocalServer.start(tmp_path, database, extra_env={"WOPIHOST_CSPP_PLUS": "on"})
    (tmp_path / "Doc.docx").write_bytes(b"hello world")
    file_id = server.add_file(tmp_path / "Doc.docx")["id"]
    with Client() as http:
        yield server, server.url(file_id, server.token(file_id)), http
    server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log[-20000:]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(override=st.sampled_from(OVERRIDES), contents=st.booleans(), body=bodies, headers=headers)
def test_random_requests_against_gunicorn_never_cause_a_server_error(target, override, contents, body, headers):
    server, url, http = target
    headers = {name: value.strip() for name, value in headers.items()}  # what an HTTP client can send
    url = url.replace("?", "/contents?") if contents else url
    response = http.post(url, data=body, headers={"X-WOPI-Override": override, **headers}, timeout=30)
    assert response.status_code < 500 or response.status_code == 501, response.headers
    got = http.get(url.replace("?", "/contents?") if not contents else url, headers=headers, timeout=30)
    assert got.status_code < 500, got.headers
