"""wopihost against reference servers on the same machine, with the same bytes and the same load.

The benchmark of issue "The hot path". wopihost (`LocalServer.start`: gunicorn, 2 workers x 4
threads) runs side by side with the references, each on its own loopback port:

* nginx (Debian's /usr/sbin/nginx, installed with apt-get as nginx-light if missing) serving the
  same bytes as static files and accepting PUTs of them, from a generated configuration: 2 worker processes, sendfile,
  tcp_nopush, access_log off. The ceiling for GetFile. Always started.
* cs3org/wopiserver (github.com/cs3org/wopiserver) when --cs3org names a checkout of it: the same
  gunicorn shape (gthread, 2 workers x 4 threads), local storage, detectexternallocks and
  detectexternalmodifications off. Without --cs3org its rows are skipped.

The references send under the system's TCP congestion control; wopihost, listening on loopback, under
WOPIHOST_LOOPBACK_TCP_CONGESTION (Reno unless set: README, "Slow clients, limits and faults"). Under BBR that
alone moves GetFile's figures severalfold, so the header prints both.

Load comes from wrk (apt-get install wrk) with a small Lua script; 2 wrk threads. In each round,
for each operation and each concurrency, the servers run back to back, so drift hits them all, and in the
reverse order every other round: a build served first came out 1-2% slower than the same build served right
after it (docs/benchmarks.md, 2026-12-05, morning); an even --rounds balances that. A figure is printed as
median (min-max) over the rounds; a ratio wopihost/reference is taken within each round (the two runs were
seconds apart), then summarised the same way.

Operations (--ops):
  checkfileinfo  GET /wopi/files/ID of a 10 kB file (wopihost, cs3org)
  lock           POST X-WOPI-Override LOCK, then UNLOCK with the same X-WOPI-Lock, again and again;
                 each connection on its own file with its own lock ids (wopihost, cs3org).
                 pairs/s = requests/s / 2; p50/p99 are of single requests. wrk has one Lua state
                 per thread, so this operation runs one wrk thread per connection. After each run
                 the lock a run may end holding is found with GetLock and released (not measured).
  getfile1       GET /wopi/files/ID/contents of 1 MiB (wopihost, nginx, cs3org)
  getfile20      the same with 20 MiB. wrk reads 8 KiB at a time: here the client may be what
                 limits req/s (see its CPU column), and CPU per request is the figure to read.
  putfile1       1 MiB bodies, each connection to its own file again and again (wopihost, nginx):
                 wopihost's PutFile with the file's lock (taken before the run), whose new content is
                 hashed and on disk (fsync) before it answers; nginx's WebDAV PUT (dav_methods PUT,
                 the body spooled to a temporary file and renamed into place, no fsync).

Server CPU per request: user+system time of the server's whole process tree (master and workers),
read with psutil just before and after each wrk run, divided by the requests wrk completed. With
PostgreSQL on this machine (--database on 127.0.0.1/localhost), the CPU of the PostgreSQL backends
serving wopihost's connections is measured the same way (DB CPU) and added (CPU+DB). "wrk CPU" is
the client's. "Other load" is whatever else kept the machine busy meanwhile (other programs, and
the kernel's loopback work), and "steal" what the hypervisor of a virtual machine gave of its cores
to another machine: figures to check before quoting the rest. Idle memory: RSS and PSS
summed over the tree, after setup and before any load, and 1 s after the last run; of what PSS grew
in between, how much is memory the processes allocated (anonymous memory), the rest being pages
copied from the master on write (tree_memory).

    python bench/compare.py [--seconds 5] [--rounds 3] [--connections 8,32] [--database URL]
                            [--cs3org PATH] [--baseline PATH]
                            [--ops checkfileinfo,lock,getfile1,getfile20,putfile1] [--json FILE]

--baseline PATH serves a checkout of another wopihost commit (say `git worktree add /tmp/base main`) beside this
one, as the server "baseline", with its own data (and its own schema on PostgreSQL), and runs it right after
wopihost at every step, so that the wopihost/baseline rows compare two builds within seconds of each other. On a
shared virtual machine, whose speed can drift by a quarter within the hour, that is the way to tell what a change
does; runs of each build an hour apart are not.

wopihost's files and tokens come from `wopihost files add PATH --json` and `wopihost token issue ID
--user bench --json`, run in one process. A PostgreSQL --database gets a private schema for the
run (others may be using the database), dropped at the end.

cs3org/wopiserver: --cs3org is a checkout (its src/wopiserver.py and wopiserver.conf are used as
they are). Its Python is --cs3org-python, by default PATH/.venv/bin/python if present, else this
interpreter; it needs gunicorn and the checkout's local-storage dependencies (flask, PyJWT,
prometheus-flask-exporter, requests, more_itertools; not cs3client or xrootd). wopiserver reads its
configuration from /etc/wopi only, so it is started through a small WSGI shim that redirects those
reads, while it initialises, to a configuration generated in the run's temporary directory (nothing
is written to /etc). Its log level is --cs3org-loglevel, Warning by default (its shipped default,
Info, writes several lines per request); gunicorn's access log is on for it, as wopihost writes one
access line per request. Its tokens come from its own /wopi/iop/openinapp, with the generated
iopsecret. Local storage keeps locks in user.* extended attributes, which $TMPDIR must support.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wopihost.config import ConfigError, loopback_tcp_congestion  # noqa: E402
from wopihost.localserver import LocalServer, free_port  # noqa: E402

MIB = 1 << 20
WOPIHOSTS = ("wopihost", "baseline")  # the build under test, and --baseline's
OPS = {
    "checkfileinfo": "CheckFileInfo (10 kB file)",
    "lock": "Lock + Unlock pairs (each connection its own file)",
    "getfile1": "GetFile 1 MiB",
    "getfile20": "GetFile 20 MiB",
    "putfile1": "PutFile 1 MiB (each connection its own file)",
}
GETFILE_SIZE = {"getfile1": MIB, "getfile20": 20 * MIB}
BODY_SIZE = {**GETFILE_SIZE, "putfile1": MIB}  # bytes each request moves, for MiB/s
PER_CONNECTION = ("lock", "putfile1")  # one wrk thread per connection, each with its own file
STEAL_WARNING_CORES = 0.1  # a run during which the hypervisor took more than this from the machine is not comparable
CFI_SIZE = 10_000
NGINX = "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"


# -- small helpers -------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_text(cmd: list[str], **kw) -> str:
    """stdout+stderr of a command, stripped; '' if it cannot run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def apt_install(binary: str, package: str, service: str | None = None) -> None:
    """Install a Debian package when its binary is missing (as root), and stop the service it may start."""
    if os.path.exists(binary):
        return
    if os.geteuid() != 0:
        sys.exit(f"{binary} is missing: apt-get install -y {package}")
    log(f"installing {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", package], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", package], env=env, check=True, capture_output=True)
    if service:  # the package's own service is not what we measure: stop it if it was started
        for cmd in (["systemctl", "stop", service], ["service", service, "stop"]):
            if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
                break
        pidfile = Path(f"/run/{service}.pid")
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)
            except (OSError, ValueError):
                pass
    if not os.path.exists(binary):
        sys.exit(f"{binary} is still missing after apt-get install {package}")


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> tuple[float, frozenset[int]]:
    """User+system CPU seconds of a process tree, and the pids it was read from."""
    total, pids = 0.0, set()
    for proc in tree(pid):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
            pids.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return total, frozenset(pids)


def pg_backends(server: Server) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving the server's connections (TCP on this machine)."""
    ports = set()
    for proc in tree(server.pid):
        try:
            for c in proc.net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == server.db_port and c.status == psutil.CONN_ESTABLISHED:
                    ports.add(c.laddr.port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    cpu = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            m = re.search(r"\((\d+)\)", cmd) if cmd.startswith("postgres:") else None
            if m and int(m.group(1)) in ports:
                t = proc.cpu_times()
                cpu[proc.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return cpu


def machine_busy() -> tuple[float, float]:
    """CPU seconds all cores spent doing anything but idling since boot, and how many of them the hypervisor
    gave to another machine (steal): on a shared virtual machine, time this one's programs waited for a core."""
    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return busy, getattr(t, "steal", 0.0)


def tree_memory(pid: int) -> dict:
    """RSS, PSS and USS summed over the process tree, and its anonymous memory ("anon", counted once per process
    that maps it): what the processes allocated. Between two readings, PSS that grew with no more anonymous
    memory is pages a forked worker wrote to and so copied from its master (reference counts, mostly)."""
    rss = pss = uss = anon = n = 0
    for proc in tree(pid):
        try:
            m = proc.memory_full_info()
            anon += anonymous_memory(proc.pid)
            rss, pss, uss, n = rss + m.rss, pss + m.pss, uss + m.uss, n + 1
        except (psutil.NoSuchProcess, FileNotFoundError):
            pass
    return {"rss": rss, "pss": pss, "uss": uss, "anon": anon, "processes": n}


def anonymous_memory(pid: int) -> int:
    """Bytes of anonymous memory resident in process `pid` (its smaps_rollup's Anonymous, shared or not)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_ready(url: str, pid: int, processes: int, timeout: float, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        try:
            requests.get(url, timeout=1)
            if len(tree(pid)) >= processes:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    text = logfile.read_text(errors="replace")[-4000:] if logfile.exists() else ""
    raise RuntimeError(f"{what} did not start:\n{text}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the servers ---------------------------------------------------------------------


@dataclass
class Server:
    name: str
    pid: int
    base: str
    urls: dict = field(default_factory=dict)  # op -> URL (static operations)
    lock_paths: list = field(default_factory=list)  # path?query of each connection's own file
    put_paths: list = field(default_factory=list)  # path?query of each connection's own file for PutFile
    stop: object = None
    memory: dict = field(default_factory=dict)
    log: Path | None = None
    db_port: int | None = None  # a PostgreSQL on this machine whose backends for this server are measured too


def start_wopihost(
    workdir: Path,
    database: str | None,
    files: dict[str, bytes],
    lock_files: int,
    put_files: int,
    workers: int,
    threads: int,
    label: str = "wopihost",
    checkout: Path | None = None,
) -> Server:
    """wopihost serving `files` (and `lock_files`, `put_files` small ones of its own); `checkout`: another
    checkout's wopihost package instead of this one's (the --baseline)."""
    log(
        f"starting {label} ({workers} workers x {threads} threads, "
        f"{'SQLite' if not database else 'database ' + redact_url(database)}"
        + (f", the wopihost of {checkout}" if checkout else "")
        + ")"
    )
    extra_env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))}
    server = LocalServer.start(
        workdir, database, workers=workers, threads=threads, extra_env=extra_env if checkout else None
    )
    try:
        src = workdir / "src"
        src.mkdir()
        jobs = {name: data for name, data in files.items()}
        jobs.update({f"lock{i}.docx": b"x" for i in range(lock_files)})
        jobs.update({f"put{i}.docx": b"x" for i in range(put_files)})
        for name, data in jobs.items():
            (src / name).write_bytes(data)

        paths = {}
        for name, (file_id, token) in cli_batch(server, [str(src / name) for name in jobs]).items():
            paths[Path(name).name] = f"/wopi/files/{file_id}?access_token={token}"
        s = Server(label, server.process.pid, server.base, stop=server.stop)
        s.urls = wopi_urls(server.base, paths)
    except BaseException:  # the server is ours to stop until it is returned
        server.stop()
        raise
    s.lock_paths = [paths[f"lock{i}.docx"] for i in range(lock_files)]
    s.put_paths = [paths[f"put{i}.docx"].replace("?", "/contents?", 1) for i in range(put_files)]
    s.log = server.log
    return s


CLI_BATCH = """
import json, sys
from click.testing import CliRunner
import wopihost.cli as cli

created = []
create = cli.Services.create
cli.Services.create = lambda *a, **k: created.append(create(*a, **k)) or created[-1]


def run(*args):
    result = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    while created:
        created.pop().db.dispose()
    if result.exit_code:
        sys.exit(f"wopihost {' '.join(args)}: exit {result.exit_code}: {result.output}")
    return json.loads(result.output)


out = {}
for path in json.load(sys.stdin):
    file_id = run("files", "add", path, "--json")["id"]
    out[path] = [file_id, run("token", "issue", file_id, "--user", "bench", "--json")["access_token"]]
json.dump(out, sys.stdout)
"""


def cli_batch(server: LocalServer, paths: list[str]) -> dict[str, tuple[str, str]]:
    """`wopihost files add PATH --json` then `wopihost token issue ID --user bench --json` for each path:
    the same commands as server.cli runs, invoked in one process (one process per command costs ~1 s each)."""
    p = subprocess.run(
        [sys.executable, "-P", "-c", CLI_BATCH], input=json.dumps(paths), env=server.env, capture_output=True, text=True
    )
    if p.returncode:
        raise RuntimeError(f"wopihost CLI: {p.stderr[-3000:]}")
    return json.loads(p.stdout)


def wopi_urls(base: str, paths: dict[str, str]) -> dict[str, str]:
    def contents(path: str) -> str:
        p, q = path.split("?", 1)
        return f"{base}{p}/contents?{q}"

    return {
        "checkfileinfo": base + paths["cfi.docx"],
        "getfile1": contents(paths["1MiB.docx"]),
        "getfile20": contents(paths["20MiB.docx"]),
    }


CS3ORG_SHIM = '''\
"""WSGI entry for cs3org/wopiserver under gunicorn, written by wopihost's bench/compare.py.

wopiserver reads /etc/wopi/wopiserver.defaults.conf and /etc/wopi/wopiserver.conf only; while it
initialises, those two opens are redirected to BENCH_CS3ORG_ETC. Nothing else is changed.
"""
import builtins
import os
import sys

sys.path.insert(0, os.environ["BENCH_CS3ORG_SRC"])
_etc = os.environ["BENCH_CS3ORG_ETC"]
_open = builtins.open


def _redirected(file, *args, **kwargs):
    if isinstance(file, str) and file.startswith("/etc/wopi/"):
        file = os.path.join(_etc, file[len("/etc/wopi/"):])
    return _open(file, *args, **kwargs)


builtins.open = _redirected
try:
    import wopiserver
    wopiserver.Wopi.init()
finally:
    builtins.open = _open
app = wopiserver.Wopi.app
'''


def start_cs3org(
    checkout: Path,
    python: str,
    workdir: Path,
    files: dict[str, bytes],
    lock_files: int,
    workers: int,
    threads: int,
    loglevel: str,
) -> Server:
    src = checkout / "src"
    if not (src / "wopiserver.py").exists() or not (checkout / "wopiserver.conf").exists():
        sys.exit(f"--cs3org {checkout}: no src/wopiserver.py and wopiserver.conf there")
    port = free_port()
    etc, storage, recovery = workdir / "etc", workdir / "storage", workdir / "recovery"
    for d in (etc, storage, recovery):
        d.mkdir(parents=True)
    (etc / "wopisecret").write_text(secrets.token_hex(32))
    iopsecret = secrets.token_hex(32)
    (etc / "iopsecret").write_text(iopsecret)
    shutil.copy(checkout / "wopiserver.conf", etc / "wopiserver.defaults.conf")
    logfile = workdir / "wopiserver.log"
    (etc / "wopiserver.conf").write_text(
        textwrap.dedent(f"""\
        # generated by wopihost bench/compare.py
        [general]
        storagetype = local
        port = {port}
        wopiurl = http://127.0.0.1:{port}
        loglevel = {loglevel}
        loghandler = file
        logdest = {logfile}
        detectexternallocks = False
        detectexternalmodifications = False

        [security]
        usehttps = no
        wopisecretfile = {etc / "wopisecret"}
        iopsecretfile = {etc / "iopsecret"}

        [io]
        recoverypath = {recovery}

        [local]
        storagehomepath = {storage}
        """)
    )
    (workdir / "cs3org_wsgi.py").write_text(CS3ORG_SHIM)
    names = {**{name: data for name, data in files.items()}, **{f"lock{i}.docx": b"x" for i in range(lock_files)}}
    for name, data in names.items():
        (storage / name).write_bytes(data)

    log(f"starting cs3org/wopiserver ({workers} workers x {threads} threads, gthread, {python})")
    out = open(workdir / "gunicorn.log", "wb")
    env = {
        **os.environ,
        "BENCH_CS3ORG_SRC": str(src),
        "BENCH_CS3ORG_ETC": str(etc),
        "PYTHONPATH": str(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # gunicorn 27 opens a control socket in ~/.gunicorn unless told not to (wopihost's serve turns it off too)
    gunicorn_help = run_text([python, "-m", "gunicorn", "--help"])
    no_control = ["--no-control-socket"] if "--no-control-socket" in gunicorn_help else []
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "gunicorn",
            *no_control,
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(workdir / "access.log"),
            "--error-logfile",
            "-",
            "--chdir",
            str(workdir),
            "cs3org_wsgi:app",
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/wopi", proc.pid, 1 + workers, 60, "cs3org/wopiserver", workdir / "gunicorn.log")
        paths = {}
        for name in names:
            r = requests.get(
                f"{base}/wopi/iop/openinapp",
                params={
                    "fileid": f"/{name}",
                    "viewmode": "VIEW_MODE_READ_WRITE",
                    "appname": "Bench",
                    "appurl": "http://bench.invalid/edit",
                    "username": "bench",
                    "userid": "bench",
                },
                headers={"Authorization": f"Bearer {iopsecret}", "TokenHeader": "bench"},
                timeout=10,
            )
            if r.status_code != 200:
                raise RuntimeError(f"cs3org openinapp {name}: {r.status_code} {r.text[:300]}")
            body = r.json()
            wopisrc = parse_qs(urlsplit(body["app-url"]).query)["WOPISrc"][0]
            file_id = urlsplit(wopisrc).path.rsplit("/", 1)[1]
            token = body["form-parameters"]["access_token"]
            paths[name] = f"/wopi/files/{quote(file_id, safe='!')}?access_token={token}"
    except BaseException:
        stop_process(proc)
        raise
    s = Server("cs3org", proc.pid, base, stop=lambda: stop_process(proc))
    s.urls = wopi_urls(base, paths)
    s.lock_paths = [paths[f"lock{i}.docx"] for i in range(lock_files)]
    s.log = workdir / "gunicorn.log"
    return s


def start_nginx(workdir: Path, files: dict[str, bytes], put_files: int) -> Server:
    root = workdir / "static"
    root.mkdir(parents=True)
    workdir.parent.chmod(0o711)  # the workers run as nobody when we are root
    workdir.chmod(0o755)
    root.chmod(0o755)
    for name, data in files.items():
        (root / name).write_bytes(data)
        (root / name).chmod(0o644)
    (root / "put").mkdir()
    (root / "put").chmod(0o777)  # written by nginx's workers (nobody)
    port = free_port()
    conf = workdir / "nginx.conf"
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / f"{d}_temp").mkdir()
    conf.write_text(
        textwrap.dedent(f"""\
        # generated by wopihost bench/compare.py
        worker_processes 2;
        daemon off;
        master_process on;
        pid {workdir / "nginx.pid"};
        error_log {workdir / "error.log"} warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            sendfile on;
            tcp_nopush on;
            keepalive_timeout 75s;
            keepalive_requests 1000000;  # gunicorn keeps a connection for any number of requests too
            default_type application/octet-stream;
            client_body_temp_path {workdir / "client_body_temp"};
            proxy_temp_path {workdir / "proxy_temp"};
            fastcgi_temp_path {workdir / "fastcgi_temp"};
            uwsgi_temp_path {workdir / "uwsgi_temp"};
            scgi_temp_path {workdir / "scgi_temp"};
            server {{
                listen 127.0.0.1:{port};
                root {root};
                location / {{ }}
                location /put/ {{
                    dav_methods PUT;  # the body to client_body_temp, then renamed into place
                    client_max_body_size 32m;
                    client_body_buffer_size 128k;
                }}
            }}
        }}
        """)
    )
    log("starting nginx (2 worker processes, sendfile)")
    out = open(workdir / "stderr.log", "wb")
    proc = subprocess.Popen(
        [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/cfi.docx", proc.pid, 3, 30, "nginx", workdir / "stderr.log")
    except BaseException:
        stop_process(proc)
        raise
    s = Server("nginx", proc.pid, base, stop=lambda: stop_process(proc, signal.SIGQUIT))
    s.urls = {"getfile1": f"{base}/1MiB.docx", "getfile20": f"{base}/20MiB.docx"}
    s.put_paths = [f"/put/{i}.bin" for i in range(put_files)]
    s.log = workdir / "error.log"
    return s


def preflight(server: Server, op: str, files: dict[str, bytes]) -> None:
    """One request of each kind with requests, checked, before wrk repeats it without looking."""
    if op == "checkfileinfo":
        r = requests.get(server.urls[op], timeout=30)
        if r.status_code != 200 or r.json().get("Size") != CFI_SIZE:
            raise RuntimeError(f"{server.name} CheckFileInfo: {r.status_code} {r.text[:300]}")
    elif op in GETFILE_SIZE:
        r = requests.get(server.urls[op], timeout=60)
        expected = files["1MiB.docx" if op == "getfile1" else "20MiB.docx"]
        if r.status_code != 200 or hashlib.sha256(r.content).digest() != hashlib.sha256(expected).digest():
            raise RuntimeError(f"{server.name} {op}: {r.status_code}, {len(r.content)} bytes, not the file's")
    elif op == "putfile1":
        prepare_puts(server)
    elif op == "lock":
        for i, path in enumerate(server.lock_paths):
            for override in ("LOCK", "UNLOCK"):
                r = requests.post(
                    server.base + path,
                    headers={"X-WOPI-Override": override, "X-WOPI-Lock": f"preflight-{i}"},
                    timeout=30,
                )
                if r.status_code != 200:
                    raise RuntimeError(
                        f"{server.name} {override} lock{i}: {r.status_code} "
                        f"{r.headers.get('X-WOPI-FailureReason') or r.text[:300]}"
                    )


def prepare_puts(server: Server) -> None:
    """Before a PutFile run: wopihost's files are locked with PUT_LOCK (PutFile needs the lock); one PUT each,
    checked."""
    wopi = server.name in WOPIHOSTS
    for path in server.put_paths:
        if wopi:
            file = server.base + path.replace("/contents?", "?", 1)
            r = requests.post(file, headers={"X-WOPI-Override": "LOCK", "X-WOPI-Lock": PUT_LOCK}, timeout=30)
            if r.status_code != 200:
                raise RuntimeError(f"wopihost LOCK {path}: {r.status_code} {r.headers.get('X-WOPI-FailureReason')}")
        r = (
            requests.post(
                server.base + path,
                data=b"p" * MIB,
                headers={"X-WOPI-Override": "PUT", "X-WOPI-Lock": PUT_LOCK},
                timeout=60,
            )
            if wopi
            else requests.put(server.base + path, data=b"p" * MIB, timeout=60)
        )
        if r.status_code not in (200, 201, 204):
            raise RuntimeError(f"{server.name} PUT {path}: {r.status_code} {r.text[:300]}")


def release_locks(server: Server) -> None:
    """After a lock run: wrk stops mid-pair, so a file may be left locked. GetLock names the lock; Unlock it."""
    time.sleep(0.3)  # the server may still be answering a request wrk no longer waits for
    with requests.Session() as session:
        for path in server.lock_paths:
            url = server.base + path
            current = session.post(url, headers={"X-WOPI-Override": "GET_LOCK"}, timeout=30).headers.get("X-WOPI-Lock")
            if current:
                r = session.post(url, headers={"X-WOPI-Override": "UNLOCK", "X-WOPI-Lock": current}, timeout=30)
                if r.status_code != 200:
                    raise RuntimeError(f"{server.name}: cannot release lock {current!r} after a run: {r.status_code}")


# -- wrk -------------------------------------------------------------------------------

DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f,"stdev":%.1f}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, latency.stdev))
end
"""

LOCK_LUA = r"""
-- One wrk thread per connection: each thread's Lua state is that connection's. The connection locks
-- its own file with a fresh lock id, then unlocks it with the same id, and again. The state moves on
-- in response(), not request(): wrk calls request() once more than it sends, to check the script.
local paths = {%s}
local started = 0
setup = function(thread)
  started = started + 1
  thread:set("path", paths[started])
  thread:set("tid", started)
end
init = function(args)
  n = 1
  locked = false
end
request = function()
  local override = locked and "UNLOCK" or "LOCK"
  return wrk.format("POST", path, {["X-WOPI-Override"] = override, ["X-WOPI-Lock"] = "bench-" .. tid .. "-" .. n,
                                   ["Content-Length"] = "0"})
end
response = function(status, headers, body)
  if locked then          -- an UNLOCK answered (200, or 409 if the lock was gone): the next pair
    locked = false
    n = n + 1
  else                    -- a LOCK answered
    locked = status == 200
    if not locked then n = n + 1 end
  end
end
"""


PUT_LOCK = "bench-put"
PUT_LUA = r"""
-- One wrk thread per connection, each PUTting 1 MiB to its own file again and again (wopihost: PutFile with
-- the file's lock; nginx: a WebDAV PUT).
local paths = {%s}
local started = 0
setup = function(thread)
  started = started + 1
  thread:set("path", paths[started])
end
init = function(args)
  body = string.rep("0123456789abcdef", 65536)
end
request = function()
  return wrk.format(%s, path, {%s}, body)
end
"""


def write_scripts(tmp: Path, servers: dict[str, Server], max_conns: int) -> dict:
    scripts = {"static": tmp / "static.lua"}
    scripts["static"].write_text(DONE_LUA)
    for name, server in servers.items():
        if server.lock_paths:
            path = tmp / f"lock-{name}.lua"
            path.write_text(LOCK_LUA % ", ".join(json.dumps(p) for p in server.lock_paths[:max_conns]) + DONE_LUA)
            scripts[f"lock-{name}"] = path
        if server.put_paths:
            wopi = name in WOPIHOSTS
            headers = f'["X-WOPI-Override"] = "PUT", ["X-WOPI-Lock"] = "{PUT_LOCK}"' if wopi else ""
            path = tmp / f"putfile1-{name}.lua"
            path.write_text(
                PUT_LUA
                % (
                    ", ".join(json.dumps(p) for p in server.put_paths[:max_conns]),
                    '"POST"' if wopi else '"PUT"',
                    headers,
                )
                + DONE_LUA
            )
            scripts[f"putfile1-{name}"] = path
    return scripts


def run_wrk(server: Server, op: str, conns: int, seconds: float, threads: int, scripts: dict) -> dict:
    if op in PER_CONNECTION:
        script, url, threads = scripts[f"{op}-{server.name}"], server.base + "/", conns
    else:
        script, url, threads = scripts["static"], server.urls[op], min(threads, conns)
    cmd = [WRK, "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "30s", "-s", str(script), url]
    db0 = pg_backends(server) if server.db_port else None
    cpu0, pids0 = tree_cpu(server.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = machine_busy()
    p = subprocess.run(cmd, capture_output=True, text=True)
    busy1, steal1 = machine_busy()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, pids1 = tree_cpu(server.pid)
    db1 = pg_backends(server) if server.db_port else None
    if op == "lock":
        release_locks(server)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({p.returncode}) against {server.name} {op}:\n{p.stdout}\n{p.stderr}")
    w = json.loads(line[len("WRKJSON ") :])
    seconds_run = w["duration_us"] / 1e6
    reqs = w["requests"]
    errors = sum(w["errors"].values())
    res = {
        "server": server.name,
        "op": op,
        "connections": conns,
        "wrk_threads": threads,
        "requests": reqs,
        "duration_s": seconds_run,
        "req_s": reqs / seconds_run,
        "p50_ms": w["latency_us"]["p50"] / 1000,
        "p99_ms": w["latency_us"]["p99"] / 1000,
        "errors": errors,
        "wrk": w,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_ms_per_req": (cpu1 - cpu0) * 1000 / reqs if reqs else None,
        "server_processes_changed": pids0 != pids1,
        "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
    }
    res["client_cpu_ms_per_req"] = res["client_cpu_s"] * 1000 / reqs if reqs else None
    res["machine_busy_cores"] = (busy1 - busy0) / seconds_run
    res["steal_cores"] = (steal1 - steal0) / seconds_run
    if db1 is not None:
        # backends that ended during the run are lost (the pool keeps its connections: rare); new ones count whole
        res["db_cpu_s"] = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
        res["db_backends"] = len(db1)
        res["db_backends_gone"] = len(set(db0) - set(db1))
        res["db_cpu_ms_per_req"] = res["db_cpu_s"] * 1000 / reqs if reqs else None
        if op == "lock":
            res["db_cpu_ms_per_pair"] = res["db_cpu_s"] * 2000 / reqs if reqs else None
    # whatever else kept this machine's cores busy meanwhile (other programs; loopback's softirq work): noise
    res["other_busy_cores"] = (
        max(0.0, (busy1 - busy0) - res["server_cpu_s"] - res.get("db_cpu_s", 0.0) - res["client_cpu_s"]) / seconds_run
    )
    # server + database: the figure to hold against a server without a database (cs3org, nginx)
    res["total_cpu_ms_per_req"] = ((res["server_cpu_s"] + res.get("db_cpu_s", 0.0)) * 1000 / reqs) if reqs else None
    if op == "lock":
        res["total_cpu_ms_per_pair"] = res["total_cpu_ms_per_req"] * 2 if reqs else None
    if op == "lock":
        res["pairs_s"] = reqs / 2 / seconds_run
        res["server_cpu_ms_per_pair"] = (cpu1 - cpu0) * 2000 / reqs if reqs else None
        res["client_cpu_ms_per_pair"] = res["client_cpu_s"] * 2000 / reqs if reqs else None
    if op in BODY_SIZE:
        res["mib_s"] = reqs * BODY_SIZE[op] / MIB / seconds_run
    return res


# -- report ----------------------------------------------------------------------------


def summary(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def num(v: float) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(s: dict | None) -> str:
    return "-" if s is None else num(s["median"])


def span(s: dict | None) -> str:
    """min-max, printed under the median"""
    return "" if s is None or s["n"] == 1 else f"{num(s['min'])}-{num(s['max'])}"


def figures_for(op: str, with_db: bool) -> list[tuple[str, str]]:
    rate = [("pairs/s", "pairs_s")] if op == "lock" else [("req/s", "req_s")]
    if op in BODY_SIZE:
        rate.append(("MiB/s", "mib_s"))
    cpu = [("CPU ms/pair", "server_cpu_ms_per_pair")] if op == "lock" else [("CPU ms/req", "server_cpu_ms_per_req")]
    if with_db:
        cpu += (
            [("DB CPU ms/pair", "db_cpu_ms_per_pair"), ("CPU+DB ms/pair", "total_cpu_ms_per_pair")]
            if op == "lock"
            else [("DB CPU ms/req", "db_cpu_ms_per_req"), ("CPU+DB ms/req", "total_cpu_ms_per_req")]
        )
    client = (
        [("wrk CPU ms/pair", "client_cpu_ms_per_pair")]
        if op == "lock"
        else [("wrk CPU ms/req", "client_cpu_ms_per_req")]
    )
    return rate + [("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")] + cpu + client


def print_table(op: str, results: list[dict], order: list[str], conns_list: list[int], rounds: int) -> dict:
    figs = figures_for(op, any(r.get("db_cpu_s") is not None for r in results if r["op"] == op))
    out = {}
    rows = []
    for conns in conns_list:
        per_server = {
            s: [r for r in results if r["op"] == op and r["connections"] == conns and r["server"] == s] for s in order
        }
        per_server = {s: rs for s, rs in per_server.items() if rs}
        for s, rs in per_server.items():
            stats = {key: summary([r.get(key) for r in rs]) for _, key in figs}
            errors = sum(r["errors"] for r in rs)
            out.setdefault(str(conns), {})[s] = {**stats, "errors": errors}
            rows.append([str(conns), s] + [cell(stats[key]) for _, key in figs] + [str(errors)])
            if rounds > 1:
                rows.append(["", ""] + [span(stats[key]) for _, key in figs] + [""])
        for ref in [s for s in per_server if s != "wopihost"]:
            if "wopihost" not in per_server:
                continue
            ratios = {}
            for _, key in figs:
                if key.startswith(("client_", "db_")):  # the client's, and a database only wopihost has
                    ratios[key] = None
                    continue
                vals = []
                for rnd in range(rounds):
                    a = next((r.get(key) for r in per_server["wopihost"] if r["round"] == rnd), None)
                    b = next((r.get(key) for r in per_server[ref] if r["round"] == rnd), None)
                    if a is not None and b:
                        vals.append(a / b)
                ratios[key] = summary(vals)
            out.setdefault(str(conns), {})[f"wopihost/{ref}"] = ratios
            rows.append(
                [str(conns), f"wopihost/{ref}"] + [cell(ratios[key]) if ratios[key] else "" for _, key in figs] + [""]
            )
            if rounds > 1:
                rows.append(["", ""] + [span(ratios[key]) for _, key in figs] + [""])
    header = ["conns", "server"] + [label for label, _ in figs] + ["errors"]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    print()
    print(OPS[op] + (f"  [median of {rounds} rounds; min-max under it]" if rounds > 1 else ""))
    line = "  ".join(h.rjust(w) if i != 1 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print("  " + line)
    last_conns = None
    for r in rows:
        if last_conns is not None and r[0] and r[0] != last_conns:
            print()
        last_conns = r[0] or last_conns
        print("  " + "  ".join(c.rjust(w) if i != 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return out


def machine_info() -> dict:
    model = ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = ""
    try:
        for ln in Path("/etc/os-release").read_text().splitlines():
            if ln.startswith("PRETTY_NAME="):
                os_name = ln.split("=", 1)[1].strip('"')
    except OSError:
        pass
    try:  # under BBR a loopback sender spends CPU on pacing that CUBIC and Reno do not: it moves every download
        congestion = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        congestion = "unknown"
    return {
        "tcp_congestion": congestion,
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": python_build(sys.executable),
        "hostname": platform.node(),
    }


def python_build(python: str) -> str:
    """The version and the binary of the interpreter `python` runs (Debian's, pyenv's, a venv's of either)."""
    return run_text(
        [python, "-c", "import os, platform, sys; print(platform.python_version(), os.path.realpath(sys.executable))"]
    )


def pkg_version(python: str, package: str) -> str:
    return run_text([python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"]) or "?"


def versions(args) -> dict:
    commit = run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = run_text(["git", "-C", str(REPO), "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
    v = {
        "wopihost_commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "wopihost": pkg_version(sys.executable, "wopihost"),
        "gunicorn": pkg_version(sys.executable, "gunicorn"),
        "flask": pkg_version(sys.executable, "flask"),
        "sqlalchemy": pkg_version(sys.executable, "sqlalchemy"),
        "nginx": run_text([NGINX, "-v"]),
        "wrk": run_text([WRK, "-v"]).splitlines()[0] if run_text([WRK, "-v"]) else "?",
    }
    if args.baseline:
        v["baseline_commit"] = run_text(["git", "-C", args.baseline, "rev-parse", "HEAD"])
    if args.cs3org:
        checkout = Path(args.cs3org)
        c = run_text(["git", "-C", str(checkout), "rev-parse", "HEAD"]) if (checkout / ".git").exists() else ""
        if not c and (checkout / "COMMIT").exists():
            c = (checkout / "COMMIT").read_text().strip()
        v["cs3org_wopiserver"] = c or "(not a git checkout)"
        v["cs3org_python"] = python_build(args.cs3org_python)
        v["cs3org_gunicorn"] = pkg_version(args.cs3org_python, "gunicorn")
        v["cs3org_flask"] = pkg_version(args.cs3org_python, "flask")
    return v


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def private_pg_schema(url: str) -> tuple[str, object, str]:
    """A fresh schema in the given PostgreSQL database for this run (others may be using the database)."""
    import sqlalchemy as sa

    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    private = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    return private.render_as_string(hide_password=False), drop, schema


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--seconds", type=int, default=5, help="duration of each run, whole seconds (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run (default 3)")
    parser.add_argument("--connections", default="8,32", help="concurrencies, comma-separated (default 8,32)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"operations (default {','.join(OPS)})")
    parser.add_argument(
        "--database",
        help="wopihost's database URL (default SQLite in the temporary directory); "
        "a PostgreSQL database gets a private schema, dropped at the end",
    )
    parser.add_argument("--cs3org", metavar="PATH", help="a checkout of cs3org/wopiserver to compare with")
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="a checkout of another wopihost commit, served side by side as 'baseline' (its wopihost package, "
        "this checkout's environment and benchmark): wopihost/baseline rows compare two builds in one run",
    )
    parser.add_argument(
        "--cs3org-python",
        metavar="PYTHON",
        help="the Python for cs3org/wopiserver (default PATH/.venv/bin/python, else this one)",
    )
    parser.add_argument(
        "--cs3org-loglevel",
        default="Warning",
        choices=["Debug", "Info", "Warning", "Error"],
        help="cs3org/wopiserver's loglevel (default Warning)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of wopihost and cs3org (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads, except for lock (default 2)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="whole seconds of unmeasured load per server and operation before the first round (default 1)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every raw figure to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = parser.parse_args()
    if args.seconds < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--seconds and --rounds must be at least 1, --warmup at least 0 (wrk takes whole seconds)")

    conns_list = [int(c) for c in args.connections.split(",") if c.strip()]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        if o not in OPS:
            parser.error(f"unknown operation {o}; choose from {', '.join(OPS)}")
    try:
        congestion = loopback_tcp_congestion()
    except ConfigError as exc:
        parser.error(str(exc))
    if args.cs3org:
        checkout = Path(args.cs3org).resolve()
        args.cs3org = str(checkout)
        if not args.cs3org_python:
            venv = checkout / ".venv" / "bin" / "python"
            args.cs3org_python = str(venv) if venv.exists() else sys.executable

    # a SIGTERM stops the servers too (the finally below), as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    apt_install(WRK, "wrk")
    apt_install(NGINX, "nginx-light", service="nginx")

    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    command = " ".join(shlex.quote(a) for a in [python, *sys.argv])
    started = dt.datetime.now(dt.UTC).astimezone()
    machine = machine_info()
    load_start = os.getloadavg()[0]
    vers = versions(args)
    max_conns = max(conns_list)

    print("wopihost vs reference servers: bench/compare.py")
    print(f"command:  {command}")
    print(f"date:     {started.isoformat(timespec='seconds')}")
    print(
        f"machine:  {machine['cpu_model']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['memory_gib']} GiB, kernel {machine['kernel']}, {machine['os']}, Python {machine['python']}, "
        f"TCP congestion control {machine['tcp_congestion']}"
    )
    print(
        f"wopihost: commit {vers['wopihost_commit']}, version {vers['wopihost']}, gunicorn {vers['gunicorn']}, "
        f"Flask {vers['flask']}, SQLAlchemy {vers['sqlalchemy']}"
    )
    if args.baseline:
        print(f"baseline: commit {vers['baseline_commit']}, the wopihost package of {args.baseline}")
    print(f"nginx:    {vers['nginx']}")
    print(f"wrk:      {vers['wrk']}")
    if args.cs3org:
        print(
            f"cs3org:   cs3org/wopiserver {vers['cs3org_wopiserver']} at {args.cs3org}, "
            f"Python {vers['cs3org_python']}, "
            f"gunicorn {vers['cs3org_gunicorn']}, Flask {vers['cs3org_flask']}, loglevel {args.cs3org_loglevel}"
        )
    else:
        print("cs3org:   not given (--cs3org PATH): its rows are skipped")
    db_label = "SQLite (WAL, synchronous=FULL)" if not args.database else redact_url(args.database)
    print(
        f"setup:    wopihost {args.workers} workers x {args.threads} threads (gthread), database {db_label}; "
        + (f"cs3org gunicorn gthread {args.workers} x {args.threads}, local storage; " if args.cs3org else "")
        + "nginx 2 worker processes, sendfile, access_log off; wopihost's connections under "
        + (congestion or "the system's")
        + " (WOPIHOST_LOOPBACK_TCP_CONGESTION), the others' under the system's"
    )
    print(
        f"load:     wrk, {args.wrk_threads} threads (lock: one per connection), connections {args.connections}, "
        f"{args.seconds:g} s per run, {args.rounds} rounds, {args.warmup:g} s warm-up; "
        "figures are medians over the rounds, min-max under them; ratios are taken per round"
    )
    sys.stdout.flush()

    files = {"cfi.docx": os.urandom(CFI_SIZE), "1MiB.docx": os.urandom(MIB), "20MiB.docx": os.urandom(20 * MIB)}
    tmp = Path(tempfile.mkdtemp(prefix="wopihost-compare-"))
    servers: dict[str, Server] = {}
    drop_schemas: list = []
    results: list[dict] = []
    try:
        lock_files = max_conns if "lock" in ops else 0
        put_files = max_conns if "putfile1" in ops else 0
        builds = {"wopihost": None, "baseline": Path(args.baseline).resolve()} if args.baseline else {"wopihost": None}
        for name, checkout in builds.items():
            database = args.database
            if database and database.startswith("postgresql"):
                database, drop, schema = private_pg_schema(database)  # each build its own
                drop_schemas.append(drop)
                log(f"PostgreSQL: private schema {schema} for {name}")
            (tmp / name).mkdir()
            servers[name] = start_wopihost(
                tmp / name, database, files, lock_files, put_files, args.workers, args.threads, name, checkout
            )
            if database and database.startswith("postgresql"):
                import sqlalchemy as sa

                url = sa.make_url(database)
                if url.host in ("127.0.0.1", "localhost", "::1"):
                    servers[name].db_port = url.port or 5432
                else:
                    log("PostgreSQL is not on this machine's loopback: its CPU is not measured")
        servers["nginx"] = start_nginx(tmp / "nginx", files, put_files)
        if args.cs3org:
            servers["cs3org"] = start_cs3org(
                Path(args.cs3org),
                args.cs3org_python,
                tmp / "cs3org",
                files,
                lock_files,
                args.workers,
                args.threads,
                args.cs3org_loglevel,
            )

        plan = {
            op: [
                s
                for s in ("wopihost", "baseline", "nginx", "cs3org")
                if s in servers
                and (
                    op in servers[s].urls
                    or (op == "lock" and servers[s].lock_paths)
                    or (op == "putfile1" and servers[s].put_paths)
                )
            ]
            for op in ops
        }
        for op in ops:
            for name in plan[op]:
                preflight(servers[name], op, files)
        time.sleep(1)
        for name, s in servers.items():
            s.memory["idle_before"] = tree_memory(s.pid)
        scripts = write_scripts(tmp, servers, max_conns)

        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s per server and operation at {max_conns} connections")
            for op in ops:
                for name in plan[op]:
                    run_wrk(servers[name], op, max_conns, args.warmup, args.wrk_threads, scripts)

        for rnd in range(args.rounds):
            log(f"round {rnd + 1}/{args.rounds}")
            for op in ops:
                for conns in conns_list:
                    for name in plan[op] if rnd % 2 == 0 else reversed(plan[op]):
                        res = run_wrk(servers[name], op, conns, args.seconds, args.wrk_threads, scripts)
                        res["round"] = rnd
                        results.append(res)
                        rate = f"{res['pairs_s']:.0f} pairs/s" if op == "lock" else f"{res['req_s']:.0f} req/s"
                        log(
                            f"  {op:<13} c={conns:<3} {name:<8} {rate}, p99 {res['p99_ms']:.1f} ms, "
                            f"CPU {res['server_cpu_ms_per_req']:.3f} ms/req"
                            + f", other load {res['other_busy_cores']:.2f} cores, steal {res['steal_cores']:.2f}"
                            + (f", {res['errors']} errors" if res["errors"] else "")
                            + (", server processes changed!" if res["server_processes_changed"] else "")
                        )

        time.sleep(1)
        for name, s in servers.items():
            s.memory["idle_after"] = tree_memory(s.pid)

        tables = {}
        for op in ops:
            tables[op] = print_table(op, results, plan[op], conns_list, args.rounds)
        if "lock" in ops:
            backend = (
                "SQLite"
                if not args.database
                else "PostgreSQL"
                if args.database.startswith("postgresql")
                else redact_url(args.database)
            )
            print(f"  (lock: p50/p99 are of single LOCK or UNLOCK requests; wopihost on {backend})")

        print()
        print("Idle memory (whole process tree, MiB)")
        print(
            f"  {'server':<10}{'processes':>10}"
            + "".join(
                f"{h:>12}" for h in ("RSS before", "PSS before", "RSS after", "PSS after", "PSS grew", "allocated")
            )
        )
        for name, s in servers.items():
            b, a = s.memory["idle_before"], s.memory["idle_after"]
            print(
                f"  {name:<10}{b['processes']:>10}{b['rss'] / MIB:>12.1f}{b['pss'] / MIB:>12.1f}"
                f"{a['rss'] / MIB:>12.1f}{a['pss'] / MIB:>12.1f}"
                f"{(a['pss'] - b['pss']) / MIB:>12.1f}{(a['anon'] - b['anon']) / MIB:>12.1f}"
            )
        print(
            "  (before: after setup, before any load; after: 1 s after the last run; allocated: how much of what the\n"
            "  PSS grew is new anonymous memory. The rest is pages the workers wrote to and so copied from the master\n"
            "  that forked them, which PSS had shared between them, and library pages read in)"
        )
        other, steal = summary([r["other_busy_cores"] for r in results]), summary([r["steal_cores"] for r in results])
        print(
            f"Other load during the runs (busy cores not used by the server, its database or wrk): "
            f"{cell(other)} ({span(other) or 'one run'}) of {machine['usable_cores']}; the hypervisor's steal "
            f"(its time on this machine's cores for another) {cell(steal)} ({span(steal) or 'one run'}); "
            f"load average {os.getloadavg()[0]:.2f} at the end, {load_start:.2f} at the start"
        )
        changed = [r for r in results if r["server_processes_changed"]]
        errors = [r for r in results if r["errors"]]
        stolen = [r for r in results if r["steal_cores"] > STEAL_WARNING_CORES]
        if stolen:
            print(
                f"WARNING: in {len(stolen)} of {len(results)} runs the hypervisor ran another machine on this one's "
                f"cores (steal over {STEAL_WARNING_CORES} cores): their rates are lower, and their CPU a request "
                "higher, than this machine gives on its own; run again"
            )
        if changed:
            print(f"WARNING: a server's process tree changed during {len(changed)} runs (a worker restarted?)")
        if errors:
            print(f"WARNING: {len(errors)} runs had errors (non-2xx answers or socket errors): see the errors column")
        if not args.cs3org:
            print("cs3org/wopiserver rows skipped: no --cs3org PATH given")

        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "command": command,
                        "date": started.isoformat(timespec="seconds"),
                        "machine": machine,
                        "versions": vers,
                        "config": {
                            "seconds": args.seconds,
                            "rounds": args.rounds,
                            "connections": conns_list,
                            "ops": ops,
                            "database": redact_url(args.database) if args.database else "sqlite",
                            "workers": args.workers,
                            "threads": args.threads,
                            "wrk_threads": args.wrk_threads,
                            "warmup": args.warmup,
                            "cs3org": args.cs3org,
                            "baseline": args.baseline,
                            "cs3org_loglevel": args.cs3org_loglevel,
                            "file_sizes": {k: len(v) for k, v in files.items()},
                        },
                        "memory": {name: s.memory for name, s in servers.items()},
                        "summary": tables,
                        "runs": results,
                    },
                    indent=1,
                    ensure_ascii=False,
                )
            )
            log(f"raw figures written to {args.json}")
    except Exception:
        for name, s in servers.items():
            logf = getattr(s, "log", None)
            if logf and Path(logf).exists():
                log(f"{name} log tail ({logf}):\n{Path(logf).read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for s in servers.values():
            try:
                s.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {s.name}: {exc}")
        for drop in drop_schemas:
            try:
                drop()
            except Exception as exc:
                log(f"dropping a PostgreSQL schema: {exc}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
