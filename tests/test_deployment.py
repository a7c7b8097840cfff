"""Behind a reverse proxy: path-prefix mounting, the URL a client signed, trusted proxies, /healthz."""

import pytest
import webtest

from wopihost.app import create_app
from wopihost.doctor import instance_fingerprint
from wopihost.requesturl import called_url

PUBLIC = "https://wopi.example.test/office"


@pytest.fixture
def prefixed(settings, clock, make_file, services):
    app = create_app(settings.with_changes(public_url=PUBLIC, host_page_url=PUBLIC + "/host/{action}/{file_id}"),
                     clock)
    file = make_file()
    token = app.extensions["wopihost"].issue_token(file.id, "alice", True).token
    yield webtest.TestApp(app), file.id, token
    app.extensions["wopihost"].db.dispose()


@pytest.mark.parametrize("path", ["/office/wopi/files/{id}", "/wopi/files/{id}"], ids=["kept", "stripped"])
def test_served_under_the_prefix_whether_or_not_the_proxy_strips_it(prefixed, path):
    testapp, file_id, token = prefixed
    response = testapp.get(path.format(id=file_id) + f"?access_token={token}")
    assert response.json["BaseFileName"] == "Doc.docx"
    assert response.json["HostEditUrl"] == f"{PUBLIC}/host/edit/{file_id}"


def test_urls_handed_out_carry_the_prefix(prefixed):
    testapp, file_id, token = prefixed
    response = testapp.post(f"/office/wopi/files/{file_id}?access_token={token}",
                            headers={"X-WOPI-Override": "PUT_RELATIVE", "X-WOPI-SuggestedTarget": ".pdf"})
    assert response.json["Url"].startswith(f"{PUBLIC}/wopi/files/")


def environ(raw_uri=None, **extra):
    env = {"wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8000", "SERVER_NAME": "127.0.0.1",
           "SCRIPT_NAME": "", "PATH_INFO": "/wopi/files/abc", "QUERY_STRING": "access_token=t%2Fx&access_token_ttl=0"}
    if raw_uri is not None:
        env["RAW_URI"] = raw_uri
    env.update(extra)
    return env


@pytest.mark.parametrize("raw", [None, "/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0",
                                 "/office/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0"])
def test_called_url_is_the_public_url_plus_the_raw_path_and_query(raw):
    assert called_url(environ(raw), PUBLIC, 0) == \
        "https://wopi.example.test/office/wopi/files/abc?access_token=t%2Fx&access_token_ttl=0"


def test_forwarded_headers_are_ignored_without_trusted_proxies():
    env = environ(HTTP_X_FORWARDED_PROTO="http", HTTP_X_FORWARDED_HOST="evil.example")
    assert called_url(env, PUBLIC, 0).startswith("https://wopi.example.test/office/")


def test_forwarded_origin_is_used_with_trusted_proxies(settings, clock, make_file):
    app = create_app(settings.with_changes(public_url=PUBLIC, trusted_proxies=1), clock)
    seen = {}

    @app.route("/probe")
    def probe():
        from flask import request

        seen["url"] = called_url(request.environ, PUBLIC, 1)
        return "", 204

    webtest.TestApp(app).get("/office/probe?x=1", headers={"X-Forwarded-Proto": "https",
                                                           "X-Forwarded-Host": "docs.example.org"})
    assert seen["url"] == "https://docs.example.org/office/probe?x=1"
    webtest.TestApp(app).get("/office/probe?x=1", headers={"Host": "chosen-by-caller.example"})
    assert seen["url"] == "https://wopi.example.test/office/probe?x=1"  # not through the proxy: the public URL
    app.extensions["wopihost"].db.dispose()


def test_query_string_is_kept_as_sent():
    env = environ("/wopi/files/abc?b=2&a=%41&access_token=t")
    assert called_url(env, "https://h", 0) == "https://h/wopi/files/abc?b=2&a=%41&access_token=t"


# -- /healthz ------------------------------------------------------------------------------------

def test_healthz_reports_database_and_storage(testapp):
    response = testapp.get("/healthz")
    assert response.json == {"database": "ok", "storage": "ok", "instance": instance_fingerprint("test-secret")}
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_is_503_when_storage_is_broken(testapp, settings):
    settings.tmp_dir.rmdir()
    settings.tmp_dir.write_text("not a directory any more")
    response = testapp.get("/healthz", expect_errors=True)
    assert response.status_int == 503
    assert response.json["database"] == "ok" and response.json["storage"] == "not writable"


def test_healthz_is_503_when_the_database_is_gone(settings, clock, tmp_path):
    app = create_app(settings.with_changes(database_url=f"sqlite:///{tmp_path}/missing/dir/db.sqlite3"), clock)
    response = webtest.TestApp(app).get("/healthz", expect_errors=True)
    assert response.status_int == 503
    assert response.json["database"] == "unreachable"
