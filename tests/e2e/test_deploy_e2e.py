"""The deployment for real: nginx terminating TLS under a path prefix in front of gunicorn, proof keys,
large bodies streamed through, and `wopihost doctor` on good and broken configurations."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from wopihost.cspp.chunkid import chunk_id
from wopihost.cspp.frames import chunk_frame
from wopihost.cspp.signatures import ChunkSignature, Signature
from wopihost.cspp.wire import put_chunked_body
from wopihost.localserver import WOPIHOST, LocalServer, PeakRss, first_answer, free_port
from wopihost.proof import ticks_from_datetime
from wopihost.server import DEFAULTS

from .. import systemd_env
from ..helpers import wait_until
from ..proof_helpers import discovery_xml, sign
from ..test_deployment import ENV_FILE, unit

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BIG = 200 * MIB


def need_nginx() -> str:
    path = shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin:/sbin"))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (.ci/run installs it from Debian packages)")
        pytest.skip("nginx is not installed; `apt-get install nginx-light` to run this test")
    return path


@pytest.fixture(scope="module")
def client_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def nginx_config(directory: Path, https_port: int, http_port: int, upstream_port: int) -> Path:
    """deploy/nginx/wopihost.conf with this machine's ports, certificate and paths, in a main config."""
    cert, key = self_signed(directory)
    site = (REPO / "deploy" / "nginx" / "wopihost.conf").read_text()
    for old, new in [
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("server_name wopi.example.com;", "server_name localhost;"),
        ("/etc/ssl/wopihost/fullchain.pem", str(cert)),
        ("/etc/ssl/wopihost/privkey.pem", str(key)),
        ("/var/log/nginx/wopihost.access.log", str(directory / "access.log")),
    ]:
        assert old in site, f"deploy/nginx/wopihost.conf no longer contains {old!r}"
        site = site.replace(old, new)
    (directory / "site.conf").write_text(site)
    temp = directory / "temp"
    temp.mkdir()
    main = directory / "nginx.conf"
    main.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {directory / "default.access.log"};  # as Debian's nginx.conf has it: what a server logs by default
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    include {directory / "site.conf"};
}}
""")
    return main


@pytest.fixture
def deployment(request, tmp_path, database, client_key, monkeypatch):
    nginx = need_nginx()
    https_port, http_port = free_port(), free_port()
    # the port clients call: nginx's own, or (a container's published port, a TCP balancer) another one passed on to it
    public_port = free_port() if getattr(request, "param", None) == "behind a port mapping" else https_port
    public = f"https://localhost:{public_port}/office"
    discovery = tmp_path / "discovery.xml"
    discovery.write_bytes(discovery_xml(client_key.public_key(), None))
    server = LocalServer.start(
        tmp_path,
        database,
        extra_env={
            "WOPIHOST_PUBLIC_URL": public,
            "WOPIHOST_TRUSTED_PROXIES": "1",
            "WOPIHOST_DISCOVERY_URL": str(discovery),
            "WOPIHOST_PROOF_KEYS": "verify",
            "WOPIHOST_CSPP_PLUS": "on",
            "WOPIHOST_MAX_FILE_SIZE": "512MiB",
        },
    )
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    config = nginx_config(nginx_dir, https_port, http_port, server.port)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(nginx_dir / "cert.pem"))  # trust the throwaway certificate
    subprocess.run([nginx, "-t", "-c", str(config)], check=True, capture_output=True)
    subprocess.run([nginx, "-c", str(config)], check=True, capture_output=True)
    try:
        first_answer(f"https://localhost:{https_port}/office/healthz", 15)
        yield server, public, client_key
    finally:
        subprocess.run([nginx, "-c", str(config), "-s", "stop"], capture_output=True)
        server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()


def signed(key, token: str, url: str) -> dict:
    ticks = ticks_from_datetime(dt.datetime.now(dt.UTC).replace(tzinfo=None))
    return {"X-WOPI-TimeStamp": str(ticks), "X-WOPI-Proof": sign(key, token, url, ticks)}


def new_file(server: LocalServer, tmp_path: Path, content: bytes = b"original") -> tuple[str, str]:
    path = tmp_path / f"doc-{time.monotonic_ns()}.docx"
    path.write_bytes(content)
    file_id = server.add_file(path)["id"]
    return file_id, server.token(file_id)


def nginx_log(tmp_path: Path, *holding: str, name: str = "access.log") -> str:
    """nginx's log `name` once it holds each of `holding` (the line of the test's last request): nginx writes a
    request's line after its answer has gone, so a client that reads the log at once may find that line not yet
    in it, and a check that something is not logged would then pass having seen nothing."""
    path = tmp_path / "nginx" / name
    assert wait_until(lambda: all(text in path.read_text() for text in holding), timeout=10), path.read_text()
    return path.read_text()


def sha256_of(response: requests.Response) -> str:
    digest = hashlib.sha256()
    for piece in response.iter_content(MIB):
        digest.update(piece)
    return digest.hexdigest()


def test_signed_requests_verify_through_nginx_and_not_around_it(deployment, tmp_path):
    server, public, key = deployment
    file_id, token = new_file(server, tmp_path)
    url = f"{public}/wopi/files/{file_id}?access_token={token}"
    through = requests.get(url, headers=signed(key, token, url))
    assert through.status_code == 200, through.headers
    assert through.json()["BaseFileName"].endswith(".docx")

    direct = f"{server.base}/office/wopi/files/{file_id}?access_token={token}"
    around = requests.get(direct, headers=signed(key, token, direct))
    assert around.status_code == 500  # signed for a URL that is not the public one
    assert "proof" in around.headers["X-WOPI-FailureReason"]
    unsigned = requests.get(url)
    assert unsigned.status_code == 500
    assert "access_token" not in nginx_log(tmp_path, f'/office/wopi/files/{file_id} HTTP/1.1" 500')


@pytest.mark.parametrize("deployment", ["behind a port mapping"], indirect=True)
def test_signed_requests_verify_through_a_port_mapping_in_front_of_nginx(deployment, tmp_path):
    """The client calls, and signs, the public URL's port, and a mapping passes the connection on to the port nginx
    listens on: the Host header, as the client wrote it, names the URL it called; nginx's own port does not."""
    server, public, key = deployment
    file_id, token = new_file(server, tmp_path)
    url = f"{public}/wopi/files/{file_id}?access_token={token}"
    site = (tmp_path / "nginx" / "site.conf").read_text()
    listening = re.search(r"listen 127\.0\.0\.1:(\d+) ssl", site)[1]
    mapped = url.replace(urlsplit(public).netloc, f"localhost:{listening}")  # what the mapping connects to
    headers = {"Host": urlsplit(public).netloc, **signed(key, token, url)}
    through = requests.get(mapped, headers=headers)
    assert through.status_code == 200, through.headers
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])) as h2:
        over_h2 = h2.get(mapped, headers=headers)
    assert over_h2.http_version == "HTTP/2" and over_h2.status_code == 200, over_h2.headers


def test_a_client_cannot_choose_the_url_its_signature_is_checked_against(deployment, tmp_path):
    """wopihost reads X-Forwarded-Port from its trusted proxy: nginx must set it, or clear the client's. A client
    that sent one made the host check its proof against a URL of the client's choosing (another port)."""
    server, public, key = deployment
    file_id, token = new_file(server, tmp_path)
    url = f"{public}/wopi/files/{file_id}?access_token={token}"
    elsewhere = url.replace(urlsplit(public).netloc, "localhost:9")
    for header, value in [("X-Forwarded-Port", "9"), ("X-Forwarded-Host", "localhost:9")]:
        forged = requests.get(url, headers={header: value, **signed(key, token, elsewhere)})
        assert forged.status_code == 500 and "proof" in forged.headers["X-WOPI-FailureReason"], header
    assert requests.get(url, headers=signed(key, token, url)).status_code == 200


def test_nginx_closes_an_idle_connection_to_gunicorn_before_gunicorn_would(deployment):
    """Whichever side closes an idle connection loses a request the other sends on it at that moment, and nginx
    does not send a POST again (a 502 for the client): nginx must be the one that closes."""
    server, public, _ = deployment

    def from_nginx() -> list:
        return [
            connection
            for worker in server.workers()
            for connection in worker.net_connections(kind="tcp")
            if connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == server.port
        ]

    assert requests.get(f"{public}/healthz").status_code == 200
    answered = time.monotonic()
    assert from_nginx(), "nginx did not keep its connection to gunicorn"
    assert wait_until(lambda: not from_nginx(), timeout=DEFAULTS["keepalive"] + 2, interval=0.05)
    # gunicorn counts its keepalive from when it answered, or later: it would not have closed the connection yet
    assert time.monotonic() - answered < DEFAULTS["keepalive"] - 0.2


def test_200_mib_put_file_streams_through_nginx(deployment, tmp_path):
    server, public, key = deployment
    file_id, token = new_file(server, tmp_path, b"")  # empty and unlocked: PutFile needs no lock
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as out:
        for i in range(BIG // MIB):
            piece = hashlib.sha256(str(i).encode()).digest() * (MIB // 32)
            digest.update(piece)
            out.write(piece)
    url = f"{public}/wopi/files/{file_id}/contents?access_token={token}"
    with PeakRss(server) as memory, big.open("rb") as body:
        saved = requests.post(url, data=body, headers={"X-WOPI-Override": "PUT", **signed(key, token, url)})
    assert saved.status_code == 200, saved.headers
    assert memory.peak - memory.start < 100 * MIB, (memory.start, memory.peak)
    with requests.get(url, headers=signed(key, token, url), stream=True) as got:
        assert got.status_code == 200 and sha256_of(got) == digest.hexdigest()


def test_200_mib_upload_session_streams_through_nginx(deployment, tmp_path):
    server, public, key = deployment
    file_id, token = new_file(server, tmp_path, b"")
    url = f"{public}/wopi/files/{file_id}?access_token={token}"

    def post(target, body=b"", **headers):
        response = requests.post(target, data=body, headers={**headers, **signed(key, token, target)})
        assert response.status_code == 200, (response.status_code, response.headers)
        return response

    session = post(url, **{"X-WOPI-Override": "CREATE_UPLOAD_SESSION"}).json()["UploadSessionToken"]
    chunks, offset, digest = [], 0, hashlib.sha256()
    with PeakRss(server) as memory:
        for i in range(BIG // (4 * MIB)):
            payload = hashlib.sha256(str(i).encode()).digest() * (4 * MIB // 32)
            digest.update(payload)
            chunks.append(ChunkSignature(chunk_id(payload), len(payload)))
            frame = b"".join(chunk_frame(chunks[-1].chunk_id, payload))
            post(
                url,
                frame,
                **{
                    "X-WOPI-Override": "UPDATE_UPLOAD_SESSION",
                    "X-WOPI-UploadSessionToken": session,
                    "X-WOPI-ContentRangeOffset": str(offset),
                    "X-WOPI-ContentRangeLength": str(len(frame)),
                },
            )
            offset += len(frame)
        body = put_chunked_body({"MainContent": Signature("FullFile", tuple(chunks))}, session_token=session)
        post(
            f"{public}/wopi/files/{file_id}/contents?access_token={token}",
            body,
            **{"X-WOPI-Override": "PUT_CHUNKED_FILE", "X-WOPI-SequenceNumber": "1"},
        )
    assert memory.peak - memory.start < 100 * MIB, (memory.start, memory.peak)
    contents = f"{public}/wopi/files/{file_id}/contents?access_token={token}"
    with requests.get(contents, headers=signed(key, token, contents), stream=True) as got:
        assert sha256_of(got) == digest.hexdigest()


def test_a_graph_upload_session_through_nginx_logs_no_credential(deployment, tmp_path):
    """Graph's upload URL (built on the public URL, prefix included) works through nginx, and neither nginx
    nor gunicorn logs the credential it carries in its path, nor the API token."""
    server, public, _ = deployment
    api = server.api_token("alice")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {api['access_token']}"
    created = http.post(f"{public}/v1.0/me/drive/root:/big.bin:/createUploadSession", json={})
    assert created.status_code == 200, created.text
    upload_url = created.json()["uploadUrl"]
    assert upload_url.startswith(f"{public}/v1.0/uploadSessions/")
    secret = upload_url.rsplit("/", 1)[1]
    content = os.urandom(3 * MIB)
    for first in range(0, len(content), 2 * MIB):
        piece = content[first : first + 2 * MIB]
        answer = requests.put(
            upload_url, data=piece, headers={"Content-Range": f"bytes {first}-{first + len(piece) - 1}/{len(content)}"}
        )
    assert answer.status_code == 201, answer.text
    item = answer.json()
    assert requests.get(upload_url).status_code == 200
    downloaded = http.get(f"{public}/v1.0/me/drive/items/{item['id']}").json()["@microsoft.graph.downloadUrl"]
    assert requests.get(downloaded).content == content
    ticket = downloaded.rsplit("/", 1)[1]
    for log in (nginx_log(tmp_path, "/office/v1.0/downloads/[redacted]"), server.log_text()):
        assert "uploadSessions/[redacted]" in log
        assert secret not in log and ticket not in log and api["access_token"] not in log


def test_a_launch_link_through_nginx_is_logged_without_its_ticket(deployment, tmp_path):
    """The host page's launch links (HostEditUrl and its kin) open the file for whoever has them until they
    expire: a credential in the path, as the app's own log knows."""
    server, public, _ = deployment
    for action in ("view", "edit", "editnew"):
        ticket = f"{action}-ticket-that-must-not-be-logged"
        requests.get(f"{public}/host/{action}/{ticket}")
    log = nginx_log(tmp_path, "/office/host/editnew/[redacted]")
    assert "/office/host/edit/[redacted]" in log
    assert "must-not-be-logged" not in log


def test_credentials_in_paths_stay_out_of_nginx_log(deployment, tmp_path):
    """A Graph copy's monitor URL is its own credential, as an upload URL is; and a share id stays out whatever item
    path follows it (a folder named `s` after it kept the id, which came before the last such segment)."""
    server, public, _ = deployment
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {server.api_token('alice')['access_token']}"
    item = http.put(f"{public}/v1.0/me/drive/root:/a.txt:/content", data=b"copied").json()["id"]
    monitor = http.post(f"{public}/v1.0/me/drive/items/{item}/copy", json={"name": "b.txt"}).headers["Location"]
    assert requests.get(monitor).json()["status"] == "completed"
    http.get(f"{public}/v1.0/shares/u!share-id-that-must-not-be-logged/driveItem:/s/report.docx")
    log = nginx_log(tmp_path, "/office/v1.0/monitor/[redacted]", "/office/v1.0/shares/[redacted]")
    assert monitor.rsplit("/", 1)[1] not in log and "must-not-be-logged" not in log


def test_a_plain_http_request_is_logged_without_its_query_string(deployment, tmp_path):
    """The server that redirects http to https logged, by nginx.conf's default, each request line whole: a WOPI
    client's access_token with it."""
    _, public, _ = deployment
    site = (tmp_path / "nginx" / "site.conf").read_text()
    http_port = re.search(r"listen 127\.0\.0\.1:(\d+);", site)[1]
    plain = f"http://localhost:{http_port}/office/wopi/files/x?access_token=token-that-must-not-be-logged"
    redirected = requests.get(plain, allow_redirects=False)
    assert redirected.status_code == 301 and redirected.headers["Location"].startswith("https://localhost/office/")
    logs = [
        nginx_log(tmp_path, 'GET /office/wopi/files/x HTTP/1.1" 301'),
        nginx_log(tmp_path, name="default.access.log"),
    ]
    assert "must-not-be-logged" not in logs[0] + logs[1]


def test_a_response_head_past_a_memory_page_goes_through_nginx(deployment, tmp_path):
    """A share link's download names its file in Content-Disposition, twice (an ASCII fallback, and the name
    percent-encoded: 12 bytes for each 4-byte UTF-8 character). With the longest name the host takes the head passes
    4 KiB, nginx's default proxy_buffer_size, and nginx answered 502 ("upstream sent too big header")."""
    server, public, key = deployment
    path = tmp_path / "shared.bin"
    path.write_bytes(b"shared content")
    name = "\U0001f600" * 250 + "." + "\U0001f600" * 31  # names.MAX_BASE_LENGTH, and MAX_EXTENSION_LENGTH with its dot
    file_id = server.add_file(path, name=name)["id"]
    token = server.token(file_id)
    url = f"{public}/wopi/files/{file_id}?access_token={token}"
    asked = {"X-WOPI-Override": "GET_SHARE_URL", "X-WOPI-UrlType": "ReadOnly", **signed(key, token, url)}
    content = requests.post(url, headers=asked).json()["ShareUrl"] + "/content"
    direct = requests.get(content.replace(public, f"{server.base}/office"))
    assert sum(len(f"{k}: {v}\r\n") for k, v in direct.raw.headers.items()) > 4096  # what the test is about
    through = requests.get(content)
    assert through.status_code == 200 and through.content == b"shared content", through.text
    assert through.headers["Content-Disposition"] == direct.headers["Content-Disposition"]


# -- wopihost doctor ----------------------------------------------------------------------------


def doctor(server: LocalServer, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WOPIHOST, "doctor", "--timeout", "30"], env={**server.env, **env}, capture_output=True, text=True
    )


@pytest.fixture
def plain_server(tmp_path, database, client_key):
    discovery = tmp_path / "discovery.xml"
    discovery.write_bytes(discovery_xml(client_key.public_key(), None))
    server = LocalServer.start(tmp_path, database, extra_env={"WOPIHOST_DISCOVERY_URL": str(discovery)})
    yield server
    server.stop()


def test_doctor_passes_on_a_good_deployment(plain_server):
    result = doctor(plain_server)
    assert result.returncode == 0, result.stdout
    assert "all checks passed" in result.stdout
    assert "PROBLEM" not in result.stdout


def test_doctor_names_a_wrong_public_url(plain_server):
    result = doctor(plain_server, WOPIHOST_PUBLIC_URL=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "PROBLEM  public URL" in result.stdout and "WOPIHOST_PUBLIC_URL" in result.stdout


def test_doctor_names_an_unreachable_discovery(plain_server):
    result = doctor(plain_server, WOPIHOST_DISCOVERY_URL=f"http://127.0.0.1:{free_port()}/hosting/discovery")
    assert result.returncode == 1
    assert "PROBLEM  discovery" in result.stdout and "WOPIHOST_DISCOVERY_URL" in result.stdout


def test_doctor_names_proofs_switched_off_for_a_signing_client(plain_server):
    result = doctor(plain_server, WOPIHOST_PROOF_KEYS="off")
    assert result.returncode == 1
    assert "WOPIHOST_PROOF_KEYS=off" in result.stdout


def test_doctor_names_another_host_behind_the_public_url(plain_server, tmp_path, database):
    (tmp_path / "other").mkdir()
    other = LocalServer.start(tmp_path / "other", database, extra_env={"WOPIHOST_SECRET_KEY": "another one" * 3})
    try:
        result = doctor(plain_server, WOPIHOST_PUBLIC_URL=other.base)
    finally:
        other.stop()
    assert result.returncode == 1
    assert "another wopihost" in result.stdout


# -- deploy/wopihost.env and deploy/wopihost.service, as systemd runs them ---------------------------------

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unit_command(line: str) -> list[str]:
    """An Exec line of the unit, with this checkout and its virtual environment where the guide installs them."""
    line = line.replace("/srv/wopihost/.venv/bin/", str(Path(sys.executable).parent) + "/")
    return shlex.split(line.replace("/srv/wopihost", str(REPO)))


def test_the_shipped_env_file_starts_the_unit(tmp_path, database, client_key):
    """The environment systemd gives the unit: the shipped settings file read by systemd's rules, nothing else of
    this process's environment, and only what this test must change (where data and the database live, the
    port, the worker count, a discovery on disk instead of the example's host). The settings the file keeps
    (proxies, proof keys) are the ones an inline comment used to break."""
    port = free_port()
    discovery = tmp_path / "discovery.xml"
    discovery.write_bytes(discovery_xml(client_key.public_key(), None))
    overrides = {
        "WOPIHOST_DATA_DIR": str(tmp_path / "data"),
        "WOPIHOST_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "WOPIHOST_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WOPIHOST_DISCOVERY_URL": str(discovery),
        # SQLite: the file's default path in the new data directory, created by ExecStartPre
        **({"WOPIHOST_DATABASE_URL": database} if not database.startswith("sqlite") else {}),
    }
    service = unit()
    env = {"PATH": SYSTEMD_PATH, **systemd_env.parse(ENV_FILE.read_text()), **overrides}
    workdir = Path(service["WorkingDirectory"].replace("/var/lib/wopihost", overrides["WOPIHOST_DATA_DIR"]))
    workdir.mkdir()  # as the guide's install step makes /var/lib/wopihost

    for _ in range(2):  # ExecStartPre runs on every start: the second finds nothing to do
        upgraded = subprocess.run(
            unit_command(service["ExecStartPre"]), env=env, cwd=workdir, capture_output=True, text=True
        )
        assert upgraded.returncode == 0, upgraded.stderr
    assert "already: nothing to do" in upgraded.stdout, upgraded.stdout
    log = tmp_path / "unit.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            unit_command(service["ExecStart"]), env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        health = first_answer(f"http://127.0.0.1:{port}/healthz", 30, lambda: process.poll() is None)
        assert health is not None, log.read_text()
        assert health.status_code == 200 and health.json()["database"] == "ok", health.text

        # the guide's way of running a command by hand: the file read into a shell, then the command
        doctor = subprocess.run(
            [
                "sh",
                "-c",
                f'set -a; . {shlex.quote(str(ENV_FILE))}; set +a; exec "$@"',
                "sh",
                "env",
                *(f"{k}={v}" for k, v in overrides.items()),
                *WOPIHOST,
                "doctor",
                "--timeout",
                "30",
            ],
            env={"PATH": SYSTEMD_PATH},
            capture_output=True,
            text=True,
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "all checks passed" in doctor.stdout
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()
