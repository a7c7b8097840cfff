"""Proof keys on real requests: a discovery file with keys we generate, requests signed as a WOPI client would."""

from __future__ import annotations

from datetime import timedelta

import pytest
import webtest
from cryptography.hazmat.primitives.asymmetric import rsa

from wopihost.app import create_app
from wopihost.config import ConfigError, Settings
from wopihost.cspp.wire import put_chunked_body
from wopihost.proof import ticks_from_datetime

from .cspp_helpers import full_file
from .helpers import WopiClient
from .proof_helpers import discovery_xml, sign

PUBLIC = "https://wopi.example.test/office"


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("a", "b", "c")}


@pytest.fixture
def discovery_file(tmp_path, keys):
    path = tmp_path / "discovery.xml"
    path.write_bytes(discovery_xml(keys["a"].public_key(), keys["b"].public_key()))  # current a, old b
    return path


@pytest.fixture
def host(settings, clock, make_file, discovery_file):
    """Build a host with a proof mode; returns a client for a fresh file and the URL it calls."""
    apps = []

    def build(mode: str, discovery: str | None = None, **changes) -> WopiClient:
        app = create_app(
            settings.with_changes(
                public_url=PUBLIC,
                proof_keys=mode,
                discovery_url=str(discovery_file) if discovery is None else discovery,
                **changes,
            ),
            clock,
        )
        apps.append(app)
        file = make_file()
        token = app.extensions["wopihost"].issue_token(file.id, "alice", True).token
        return WopiClient(webtest.TestApp(app), file.id, token)

    yield build
    for app in apps:
        app.extensions["wopihost"].db.dispose()


def signed_headers(
    wopi: WopiClient, clock, proof_key=None, proof_old_key=None, url: str | None = None, age=timedelta(0)
) -> dict:
    url = url or f"{PUBLIC}/wopi/files/{wopi.file_id}?access_token={wopi.token}"
    ticks = ticks_from_datetime(clock.now() - age)
    headers = {"X-WOPI-TimeStamp": str(ticks)}
    if proof_key is not None:
        headers["X-WOPI-Proof"] = sign(proof_key, wopi.token, url, ticks)
    if proof_old_key is not None:
        headers["X-WOPI-ProofOld"] = sign(proof_old_key, wopi.token, url, ticks)
    return headers


def check_file_info(wopi: WopiClient, headers: dict, path_prefix: str = "/office", peer: str = "127.0.0.1"):
    return wopi.testapp.get(
        f"{path_prefix}/wopi/files/{wopi.file_id}?access_token={wopi.token}",
        headers=headers,
        extra_environ={"REMOTE_ADDR": peer},
        expect_errors=True,
    )


def test_valid_with_the_current_key(host, keys, clock):
    wopi = host("verify")
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["a"], keys["b"])).status_int == 200


def test_valid_through_the_old_key(host, keys, clock):
    wopi = host("verify")
    assert check_file_info(wopi, signed_headers(wopi, clock, proof_key=keys["b"])).status_int == 200


def test_valid_through_proof_old(host, keys, clock):
    wopi = host("verify")
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["c"], keys["a"])).status_int == 200


def test_proof_old_with_the_old_key_alone_is_refused(host, keys, clock):
    wopi = host("verify")
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["c"], keys["b"])).status_int == 500


def test_corrupted_signature_is_500(host, keys, clock):
    wopi = host("verify")
    headers = signed_headers(wopi, clock, keys["a"])
    headers["X-WOPI-Proof"] = headers["X-WOPI-Proof"][:-6] + "AAAAA="
    response = check_file_info(wopi, headers)
    assert response.status_int == 500
    assert "proof" in response.headers["X-WOPI-FailureReason"]
    assert response.headers["X-WOPI-ServerError"] == "proof check failed"


@pytest.mark.parametrize(
    "signed_url",
    [
        "http://wopi.example.test/office/wopi/files/{id}?access_token={token}",  # what the app saw behind TLS
        "https://wopi.example.test/wopi/files/{id}?access_token={token}",  # without the prefix
        "https://other.example/office/wopi/files/{id}?access_token={token}",
        "https://wopi.example.test/office/wopi/files/{id}?access_token={token}&x=1",
    ],
)
def test_a_signature_for_another_url_is_500(host, keys, clock, signed_url):
    wopi = host("verify")
    url = signed_url.format(id=wopi.file_id, token=wopi.token)
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["a"], url=url)).status_int == 500


@pytest.mark.parametrize("path_prefix", ["/office", ""], ids=["proxy-keeps-prefix", "proxy-strips-prefix"])
def test_the_public_url_is_what_counts_behind_the_proxy(host, keys, clock, path_prefix):
    wopi = host("verify")
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["a"]), path_prefix).status_int == 200


@pytest.mark.parametrize(
    "port, signed_origin",
    [("443", "https://wopi.example.test"), ("8443", "https://wopi.example.test:8443")],
    ids=["default-port", "other-port"],
)
def test_the_forwarded_origin_is_the_url_the_client_signed(host, keys, clock, port, signed_origin):
    """A proxy may send X-Forwarded-Port even when it is the scheme's default, which the URL a client calls and
    signs leaves out."""
    wopi = host("verify", trusted_proxies=1)
    url = f"{signed_origin}/office/wopi/files/{wopi.file_id}?access_token={wopi.token}"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "wopi.example.test", "X-Forwarded-Port": port}
    response = check_file_info(wopi, signed_headers(wopi, clock, keys["a"], url=url) | forwarded)
    assert response.status_int == 200, response.headers.get("X-WOPI-FailureReason")


@pytest.mark.parametrize(
    "allowed, peer, forwarded_origin_counts",
    [
        (None, "127.0.0.1", True),  # the default: the proxy on this machine
        (None, "10.0.0.9", False),  # anyone else who reaches a node listening on its own address
        ("10.0.0.0/24, 10.0.1.5", "10.0.0.9", True),
        ("10.0.0.0/24, 10.0.1.5", "10.0.1.6", False),
        ("10.0.0.0/24", "::ffff:10.0.0.9", True),  # an IPv4 peer of a listener on [::]
        ("10.0.0.0/24", "::ffff:10.0.1.9", False),
        ("*", "192.0.2.1", True),
        ("10.0.0.5, *,", "2001:db8::1", True),  # as gunicorn reads the same variable
    ],
)
def test_forwarded_headers_count_only_from_the_proxies_named(
    host, keys, clock, monkeypatch, allowed, peer, forwarded_origin_counts
):
    """With WOPIHOST_TRUSTED_PROXIES, X-Forwarded-* name the URL a signature is checked against: taken from anyone,
    a client would choose it (and replay a signature made for another host). From a peer that
    WOPIHOST_FORWARDED_ALLOW_IPS does not name they are dropped, and the public URL counts."""
    if allowed is not None:
        monkeypatch.setenv("WOPIHOST_FORWARDED_ALLOW_IPS", allowed)
    proxies = Settings.from_env().forwarded_allow_ips
    wopi = host("verify", trusted_proxies=1, forwarded_allow_ips=proxies)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "elsewhere.example.test"}
    elsewhere = f"https://elsewhere.example.test/office/wopi/files/{wopi.file_id}?access_token={wopi.token}"
    for url, counts in ((elsewhere, forwarded_origin_counts), (None, not forwarded_origin_counts)):
        headers = signed_headers(wopi, clock, keys["a"], url=url) | forwarded
        assert check_file_info(wopi, headers, peer=peer).status_int == (200 if counts else 500)


@pytest.mark.parametrize("value", ["10.0.0.256", "nginx", "10.0.0.5, localhost", "", "10.0.0.5,"])
def test_forwarded_allow_ips_that_names_no_address_is_refused(monkeypatch, value):
    monkeypatch.setenv("WOPIHOST_FORWARDED_ALLOW_IPS", value)
    if value in ("", "10.0.0.5,"):  # empty is unset, as for every setting; an empty entry is skipped, as gunicorn does
        expected = ["127.0.0.1/32"] if value == "" else ["10.0.0.5/32"]
        assert [str(n) for n in Settings.from_env().forwarded_allow_ips] == expected
        return
    with pytest.raises(ConfigError, match="WOPIHOST_FORWARDED_ALLOW_IPS.*not an IP address or network"):
        Settings.from_env()


@pytest.mark.parametrize("minutes, status", [(19, 200), (21, 500)])
def test_timestamps_older_than_20_minutes_are_refused(host, keys, clock, minutes, status):
    wopi = host("verify")
    headers = signed_headers(wopi, clock, keys["a"], age=timedelta(minutes=minutes))
    assert check_file_info(wopi, headers).status_int == status


@pytest.mark.parametrize(
    "mode, discovery, status",
    [
        ("off", None, 200),
        ("verify", None, 500),  # the discovery publishes keys: the signature is required
        ("require", None, 500),
        ("verify", "no-keys", 200),  # a client without proof keys: nothing to verify
        ("require", "no-keys", 500),
        ("verify", "missing", 200),  # discovery unreachable and never fetched: keys unknown
        ("require", "missing", 500),
    ],
)
def test_missing_proof_headers_in_each_mode(host, tmp_path, mode, discovery, status):
    if discovery == "no-keys":
        path = tmp_path / "nokeys.xml"
        path.write_bytes(b'<?xml version="1.0"?><wopi-discovery><net-zone name="external-https"/></wopi-discovery>')
        discovery = str(path)
    elif discovery == "missing":
        discovery = str(tmp_path / "nowhere.xml")
    wopi = host(mode, discovery)
    assert check_file_info(wopi, {}).status_int == status


def test_off_ignores_even_bad_signatures(host, keys, clock):
    wopi = host("off")
    headers = signed_headers(wopi, clock, keys["c"])
    assert check_file_info(wopi, headers).status_int == 200


def test_rotated_keys_are_picked_up_by_one_refetch(host, keys, clock, discovery_file):
    wopi = host("verify")
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["a"])).status_int == 200  # discovery cached
    discovery_file.write_bytes(discovery_xml(keys["c"].public_key(), keys["a"].public_key()))  # client rotated
    clock.advance(minutes=2)
    response = check_file_info(wopi, signed_headers(wopi, clock, keys["c"], keys["a"]))
    assert response.status_int == 200
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["c"])).status_int == 200


def test_refetches_are_rate_limited(host, keys, clock, discovery_file):
    wopi = host("verify")
    check_file_info(wopi, signed_headers(wopi, clock, keys["a"]))
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["c"])).status_int == 500  # refetched: still a
    discovery_file.write_bytes(discovery_xml(keys["c"].public_key(), keys["a"].public_key()))
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["c"])).status_int == 500  # too soon to refetch
    clock.advance(seconds=61)
    assert check_file_info(wopi, signed_headers(wopi, clock, keys["c"])).status_int == 200


def test_every_operation_is_checked(host, keys, clock):
    wopi = host("verify")
    for response in (wopi.lock("L"), wopi.get_file(), wopi.op("GET_LOCK"), wopi.put_file(b"x", lock="L")):
        assert response.status_int == 500


def test_put_chunked_file_with_editors_and_a_bad_proof_is_400(host, keys, clock):
    wopi = host("verify")
    signature, chunks = full_file(b"hello")
    url = f"{PUBLIC}/wopi/files/{wopi.file_id}/contents?access_token={wopi.token}"
    good = signed_headers(wopi, clock, keys["a"], url=url)
    bad = signed_headers(wopi, clock, keys["c"], url=url)

    def save(headers, editors):
        return wopi.testapp.post(
            f"/office/wopi/files/{wopi.file_id}/contents?access_token={wopi.token}",
            put_chunked_body({"MainContent": signature}, chunks),
            headers={
                "X-WOPI-Override": "PUT_CHUNKED_FILE",
                "X-WOPI-SequenceNumber": "1",
                "X-WOPI-Editors": editors,
                **headers,
            },
            expect_errors=True,
        )

    assert save(bad, "alice,bob").status_int == 400
    assert save(bad, "").status_int == 500
    assert save(good, "alice,bob").status_int == 409  # past the proof: the file is unlocked and not empty
