"""CheckFileInfo (docs/wopi.md §3.1, §5, §7 item 1)."""

import base64
import hashlib
import io
import re

import pytest
import webtest

from wopihost.app import create_app
from wopihost.clock import to_epoch_ms

from .helpers import WopiClient, statements_sent

# The CSPP schema rejects these; a plain host must never send them (docs/wopi.md §5 "schema trap").
WOPI_PLUS_ONLY = {
    "SupportsCoauth",
    "SequenceNumber",
    "OfficeCollaborationServiceEndpointUrl",
    "RealTimeChannelEndpointUrl",
    "AccessTokenExpiry",
    "ServerTime",
    "SharingStatus",
    "FileGeoLocationCode",
}


def test_required_properties_have_the_right_types(wopi):
    info = wopi.check_file_info().json
    assert info["BaseFileName"] == "Doc.docx"
    assert info["OwnerId"] == "alice"
    assert info["Size"] == 11 and type(info["Size"]) is int
    assert info["UserId"] == "alice"
    assert info["Version"] == "1" and isinstance(info["Version"], str)


def test_capabilities_and_write_permissions(wopi):
    info = wopi.check_file_info().json
    for flag in (
        "SupportsLocks",
        "SupportsGetLock",
        "SupportsExtendedLockLength",
        "SupportsUpdate",
        "SupportsRename",
        "SupportsDeleteFile",
        "SupportsUserInfo",
        "UserCanWrite",
        "UserCanRename",
    ):
        assert info[flag] is True, flag
    for flag in ("ReadOnly", "UserCanNotWriteRelative", "IsAnonymousUser"):
        assert info[flag] is False, flag


def test_read_only_token_is_reflected(make_file, client_for):
    info = client_for(make_file(), can_write=False).check_file_info().json
    assert info["ReadOnly"] is True
    assert info["UserCanWrite"] is False
    assert info["UserCanRename"] is False
    assert info["UserCanNotWriteRelative"] is True
    assert "HostEditUrl" not in info and "HostViewUrl" in info  # a reader's edit link would open nothing


def test_metadata_properties(wopi, clock):
    info = wopi.check_file_info().json
    assert info["FileExtension"] == ".docx"
    assert info["FileNameMaxLength"] == 250
    assert info["UserFriendlyName"] == "alice"
    assert info["SHA256"] == base64.b64encode(hashlib.sha256(b"hello world").digest()).decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", info["LastModifiedTime"])
    assert info["LastModifiedTime"].startswith(clock.now().strftime("%Y-%m-%dT%H:%M:%S"))


def test_host_urls_are_launch_links_of_this_hosts_page(wopi):
    info = wopi.check_file_info().json
    assert info["HostViewUrl"].startswith("https://wopi.example.test/host/view/")
    assert info["HostEditUrl"].startswith("https://wopi.example.test/host/edit/")
    assert info["PostMessageOrigin"] == "https://wopi.example.test"
    # the link opens the page (which says no client is configured: there is no discovery here) ...
    page = wopi.testapp.get(info["HostViewUrl"].removeprefix("https://wopi.example.test"), status=503)
    assert "WOPIHOST_DISCOVERY_URL" in page.text
    # ... and the file's id alone opens nothing
    page = wopi.testapp.get(f"/host/view/{wopi.file_id}", status=403)
    assert "Doc.docx" not in page.text


def test_host_urls_name_the_integrators_page_when_one_is_set(settings, clock, make_file):
    app = create_app(
        settings.with_changes(host_page_url="https://portal.example.test/open?f={file_id}&a={action}"), clock
    )
    services = app.extensions["wopihost"]
    file = services.add_file("alice", "Doc.docx", io.BytesIO(b"x"))
    client = WopiClient(webtest.TestApp(app), file.id, services.issue_token(file.id, "alice", True).token)
    info = client.check_file_info().json
    assert info["HostViewUrl"] == f"https://portal.example.test/open?f={file.id}&a=view"
    assert info["HostEditUrl"] == f"https://portal.example.test/open?f={file.id}&a=edit"
    assert info["PostMessageOrigin"] == "https://portal.example.test"
    services.db.dispose()


@pytest.fixture
def plain_cspp(settings, clock, wopi):
    """The same file and token, served by a host with CSPP Plus switched off."""
    app = create_app(settings.with_changes(cspp_plus=False), clock)
    yield WopiClient(webtest.TestApp(app), wopi.file_id, wopi.token)
    app.extensions["wopihost"].db.dispose()


def test_no_null_values_and_no_wopi_plus_properties_without_cspp_plus(plain_cspp):
    info = plain_cspp.check_file_info().json
    assert None not in info.values()
    assert not WOPI_PLUS_ONLY & info.keys()
    assert "SupportsResumableFileTransfer" not in info
    assert "UserInfo" not in info  # omitted, not null, until PutUserInfo stores one


def test_cspp_plus_properties_are_all_there_and_typed(wopi, services, clock):
    info = wopi.check_file_info().json
    assert WOPI_PLUS_ONLY <= info.keys()
    assert info["SupportsCoauth"] is True and info["SupportsResumableFileTransfer"] is True
    assert info["SequenceNumber"] == 1
    assert info["ServerTime"] == to_epoch_ms(clock.now())
    with services.db.read() as s:
        grant = services.tokens.verify(s, wopi.token, wopi.file_id)
    assert info["AccessTokenExpiry"] == to_epoch_ms(grant.expires_at)
    assert info["SharingStatus"] == "Private"
    assert info["OfficeCollaborationServiceEndpointUrl"].startswith("https://")
    assert info["RealTimeChannelEndpointUrl"].startswith("https://")
    assert info["FileGeoLocationCode"] == "US"
    assert None not in info.values()


def test_cspp_plus_operations_are_501_when_switched_off(plain_cspp):
    for override in ("GET_SEQUENCE_NUMBER", "GET_CHUNKED_FILE", "CREATE_UPLOAD_SESSION", "GET_COAUTH_TABLE"):
        response = plain_cspp.op(override)
        assert response.status_int == 501
        assert "CSPP Plus" in response.headers["X-WOPI-FailureReason"]


def test_file_without_extension_has_no_file_extension(make_file, client_for):
    info = client_for(make_file(name="README")).check_file_info().json
    assert info["BaseFileName"] == "README"
    assert "FileExtension" not in info


def test_wopitest_file_behaves_like_any_other(make_file, client_for):
    wopi = client_for(make_file(b"", name="test.wopitest"))
    info = wopi.check_file_info().json
    assert info["BaseFileName"] == "test.wopitest"
    assert info["FileExtension"] == ".wopitest"
    assert wopi.put_file(b"filled").status_int == 200  # unlocked 0-byte file
    assert wopi.get_file().body == b"filled"


def test_content_type_and_length(wopi):
    response = wopi.check_file_info()
    assert response.content_type == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.body)


@pytest.mark.parametrize("header", ["X-WOPI-SessionContext", "X-WOPI-CorrelationId", "X-Request-ID"])
def test_standard_request_headers_are_accepted(wopi, header):
    assert wopi.check_file_info(**{header: "some value"}).status_int == 200


@pytest.mark.parametrize("suffix", ["", "/contents"])
def test_checkfileinfo_and_getfile_read_the_database_once(wopi, services, suffix, tmp_path):
    """The token's row, the file and its user come in one statement (issue 13's one round trip), with no
    transaction around it."""
    with statements_sent(services, tmp_path) as sent:
        response = wopi.testapp.get(wopi.url(suffix))
    assert response.status_int == 200
    assert sent == ["SELECT"]
