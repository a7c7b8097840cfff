"""A throwaway single-node Ceph cluster serving S3 through the RADOS Gateway, on 127.0.0.1, for tests.

One monitor, one OSD and one radosgw from Debian's packages, every file of theirs under one directory: no
/etc/ceph, /var/lib/ceph, /var/log/ceph or systemd. `start(DIR)` returns once S3 answers, with the endpoint and
the keys of a user that owns no bucket yet; `stop(DIR)` kills every process of that cluster and removes DIR.
Several clusters in different directories run side by side (each has its own ports and fsid).

Standard library only, so that `tests/objectstore/ceph-rgw start DIR` runs with any python3, in or out of the
project's virtual environment.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "ceph", "radosgw", "radosgw-admin")
# The daemons live in /usr/bin on Debian, but look in the sbin directories too for an unusual PATH
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/local/sbin", "/usr/sbin", "/sbin"])
INSTALL_HINT = "apt-get install ceph-mon ceph-osd radosgw ceph-common"
# The pools RGW's default zone uses, made before RGW starts so that no request waits for one to be created
POOLS = (
    ".rgw.root",
    "default.rgw.control",
    "default.rgw.meta",
    "default.rgw.log",
    "default.rgw.buckets.index",
    "default.rgw.buckets.data",
    "default.rgw.buckets.non-ec",
)
REGION = "us-east-1"
USER = "wopihost-test"
# Paths go into ceph.conf, where `#`, `;`, `$` and spaces mean something
SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")
LOG_TAIL_LINES = 15


class Unavailable(Exception):
    """Ceph's binaries are not installed."""


class StartError(Exception):
    """The cluster did not come up; it has been torn down and its directory removed."""


@dataclasses.dataclass(frozen=True)
class Gateway:
    directory: Path
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The standard variables boto3, botocore and the AWS CLI read."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name, path=SEARCH_PATH) is None]


def _binary(name: str) -> str:
    return shutil.which(name, path=SEARCH_PATH) or name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ceph_conf(directory: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    d = directory
    return f"""\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
# loopback only, msgr2 only: the OSD's ports (from 6800 up) and the monitor's bind to 127.0.0.1 alone
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
# no cephx: nothing to authenticate on a throwaway loopback cluster (S3 requests are still signed and checked)
auth cluster required = none
auth service required = none
auth client required = none
# (a cephx setting, but its default puts a warning in `ceph health` even without cephx)
auth allow insecure global id reclaim = false
# every file the daemons and the command-line tools write goes under the cluster's directory
run dir = {d}/run
crash dir = {d}/crash
log file = {d}/$name.log
mon data = {d}/mon
osd data = {d}/osd
rgw data = {d}/rgw
mon cluster log to file = false
# one OSD: pools of one replica and one placement group each, placed by OSD rather than by host, and no
# autoscaler (it runs in a mgr, which S3 does not need)
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# a nearly full disk must not stop the monitor: the cluster holds only what a test puts
mon data avail crit = 0
mon data avail warn = 0
# clients re-check for an OSD every quarter second rather than every 5 s, so RGW's first reads go through as
# soon as the OSD is up
objecter tick interval = 0.25

[mon]
admin socket = {d}/run/$name.asok
# commit each change at once (default: wait up to 1 s to batch them), which makes start-up seconds faster
paxos propose interval = 0.01
paxos min wait = 0.01
# a port taken since it was chosen: exit at once (default: three tries 5 s apart) for start() to try new ports
ms bind retry count = 1
ms bind retry delay = 0

[osd]
admin socket = {d}/run/$name.asok
# BlueStore on a sparse 10 GiB file in the directory (its blocks are taken only as data is written), with a
# small fixed cache: memory stays flat whatever the tests store (memstore would hold every object in memory)
osd objectstore = bluestore
bluestore block path = {d}/osd-block
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 33554432
# write data straight to the file rather than through RocksDB's log first (the file is seen as a disk)
bluestore prefer deferred size = 0
# the OSD opens and closes the file once per shard at start, and each close waits out one poll interval
# (default 250 ms): one shard, and a short interval, make that a fraction of a second
bdev aio poll ms = 20
osd op num shards = 1
osd op num threads per shard = 2

[client.rgw]
admin socket = {d}/run/$name.asok
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw thread pool size = 32
# radosgw asks for an encrypted ("secure") connection to the monitor by default, which needs cephx
ms mon client mode = crc
"""


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def cluster_pids(directory: Path) -> list[int]:
    """Every live process started for the cluster in directory: each is given its ceph.conf."""
    conf = str(directory / "ceph.conf")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and conf in _cmdline(int(entry.name)) and _pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _taken(port: int) -> bool:
    """Whether some process holds 127.0.0.1:port (it cannot be bound)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def listens(pid: int, port: int) -> bool:
    """Whether process pid itself listens on 127.0.0.1:port (not merely some process: a port taken by another
    since free_port() chose it would otherwise pass for our daemon)."""
    try:
        inodes = {os.readlink(fd.path)[8:-1] for fd in os.scandir(f"/proc/{pid}/fd")}  # socket:[INODE]
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    local = f"0100007F:{port:04X}"
    # fields: sl local_address rem_address st ... inode; st 0A is LISTEN
    return any(f[1] == local and f[3] == "0A" and f[9] in inodes for f in (line.split() for line in table))


def log_tails(directory: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of each daemon's log and output, to show why a start failed."""
    parts = []
    for path in sorted(directory.glob("*.log")) + sorted(directory.glob("*.out")):
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


def _is_cluster_directory(directory: Path) -> bool:
    return (directory / "ceph.conf").is_file() and (directory / "pids").is_file()


def stop(directory: Path, timeout: float = 10.0) -> None:
    """Kill every process of the cluster in directory and remove the directory.

    SIGKILL rather than SIGTERM: the cluster holds nothing worth keeping, and an OSD that is asked to stop
    politely waits up to 5 s for a monitor that may already be gone.
    """
    directory = Path(directory).resolve()
    if not _is_cluster_directory(directory):
        raise ValueError(f"{directory} holds no cluster started by ceph_rgw (no ceph.conf and pids)")
    conf = str(directory / "ceph.conf")
    recorded = [int(line.split()[1]) for line in (directory / "pids").read_text().splitlines() if line.strip()]
    # a recorded pid may since have been reused by an unrelated process: only ours carry this ceph.conf
    pids = {pid for pid in recorded if conf in _cmdline(pid)} | set(cluster_pids(directory))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if _pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive:
        raise RuntimeError(f"processes {alive} of the cluster in {directory} survived SIGKILL for {timeout} s")
    shutil.rmtree(directory)


class Cluster:
    """One start of a cluster in one directory; start() either returns a running gateway or leaves nothing."""

    def __init__(self, directory: Path, timeout: float = 60.0) -> None:
        self.directory = Path(directory).resolve()
        self.timeout = timeout
        self.conf = self.directory / "ceph.conf"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway: Gateway | None = None
        self.ports: tuple[int, ...] = ()  # the ports the last start chose

    def start(self) -> Gateway:
        missing = missing_binaries()
        if missing:
            raise Unavailable(f"Ceph is not installed (no {', '.join(missing)}): {INSTALL_HINT}")
        if not SAFE_PATH.fullmatch(str(self.directory)):
            raise ValueError(f"{self.directory}: a cluster directory may hold only letters, digits and ._/+-")
        if self.directory.exists() and any(self.directory.iterdir()):
            raise ValueError(f"{self.directory} is not empty")
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout
        for attempt in (1, 2):
            self.directory.mkdir(parents=True, exist_ok=True)
            try:
                self.gateway = self._start()
                return self.gateway
            except BaseException as exc:
                tails = log_tails(self.directory)
                self.stop()
                if not isinstance(exc, Exception):
                    raise
                # another process took a port between free_port() and the daemon's bind: once more, new ports.
                # A daemon that exits on it does not always get to log why: a port held by someone else once ours
                # are stopped tells as well.
                clash = "Address already in use" in tails or any(_taken(port) for port in self.ports)
                if attempt == 1 and clash and time.monotonic() < self.deadline:
                    self.procs = {}
                    continue
                raise StartError(f"Ceph RGW did not start in {self.directory}: {exc}\n{tails}") from exc
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if _is_cluster_directory(self.directory):
            stop(self.directory)
        else:  # start() failed before it started anything, in a directory it found empty
            shutil.rmtree(self.directory, ignore_errors=True)
        for proc in self.procs.values():
            proc.wait()  # reap our children; stop() has killed them

    def _step(self, what: str) -> None:
        """Time stamps of the start in DIR/start.log: where a slow or failed start spent its time."""
        with open(self.directory / "start.log", "a") as log:
            log.write(f"{time.monotonic() - self.started:6.2f} s  {what}\n")

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"not up within {self.timeout:g} s")
        return left

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command that must succeed before the start's deadline."""
        try:
            done = subprocess.run(
                [_binary(args[0]), *args[1:]],
                input=stdin,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                text=True,
                timeout=self._remaining(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{shlex.join(args)} did not finish within {self.timeout:g} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def _ceph(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The ceph tool, never left waiting: it hangs on a monitor it cannot reach, and on mgr commands."""
        return self._run("ceph", "-c", str(self.conf), "--connect-timeout", "20", *args, stdin=stdin)

    def _spawn(self, name: str, *args: str) -> None:
        """A daemon in the foreground (-f): its own child, not a forked-off one, so its pid is known at once."""
        with open(self.directory / f"{name}.out", "wb") as out:
            proc = subprocess.Popen(
                [_binary(args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        with open(self.directory / "pids", "a") as pids:
            pids.write(f"{name} {proc.pid}\n")

    def _check_daemons(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")

    def _start(self) -> Gateway:
        d, conf = self.directory, str(self.conf)
        fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        mon_port, rgw_port = free_port(), free_port()
        self.ports = (mon_port, rgw_port)
        self.conf.write_text(ceph_conf(d, fsid, mon_port, rgw_port))
        (d / "pids").touch()
        for sub in ("mon", "osd", "run", "crash", "rgw"):
            (d / sub).mkdir()

        self._step("configured")
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", f"{d}/monmap")
        self._run("ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", f"{d}/monmap")
        self._spawn("mon", "ceph-mon", "-c", conf, "-f", "-i", "a")
        self._step("monitor started")
        # the OSD's store is made while the monitor comes up; the OSD itself can only start once the
        # monitor knows it (osd new)
        mkfs = subprocess.Popen(
            [_binary("ceph-osd"), "-c", conf, "--mkfs", "-i", "0", "--osd-uuid", osd_uuid, "--monmap", f"{d}/monmap"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with open(d / "pids", "a") as pids:
            pids.write(f"osd-mkfs {mkfs.pid}\n")
        try:
            # a monitor that cannot have its port (taken since free_port) fails the start now, not after the
            # ceph tool's connect timeout
            self._wait_until_listening("mon", mon_port)
            self._step("monitor listens")
            osd_id = self._ceph("osd", "new", osd_uuid).stdout.strip()
            output, _ = mkfs.communicate(timeout=self._remaining())
        finally:
            if mkfs.poll() is None:
                mkfs.kill()
                mkfs.wait()
        if mkfs.returncode != 0:
            raise RuntimeError(f"ceph-osd --mkfs exited {mkfs.returncode}: {output.decode(errors='replace')[-2000:]}")
        if osd_id != "0":
            raise RuntimeError(f"ceph osd new gave id {osd_id!r}, not 0")
        self._step("OSD made and known to the monitor")
        self._spawn("osd", "ceph-osd", "-c", conf, "-f", "-i", "0")

        # one ceph process for every pool (commands on stdin), while the OSD boots: each ceph process costs
        # a Python start and a monitor session
        commands = []
        for pool in POOLS:
            commands += [f"osd pool create {pool} 1 1 replicated --size 1", f"osd pool application enable {pool} rgw"]
        # (in that mode it reports a failed command on stderr and still exits 0)
        done = self._ceph(stdin="\n".join([*commands, "osd pool ls", ""]))
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
        if errors or not set(POOLS) <= set(done.stdout.split()):
            raise RuntimeError("could not create RGW's pools: " + ("; ".join(errors) or done.stderr[-2000:]))
        self._check_daemons()
        self._step("pools made")

        self._spawn("rgw", "radosgw", "-c", conf, "-f", "-n", "client.rgw")
        endpoint = f"http://127.0.0.1:{rgw_port}"
        self._wait_until_listening("rgw", rgw_port)
        self._wait_for_s3(endpoint)
        self._step("S3 answers")
        # after RGW answers, not beside it: both would otherwise create the default zone at the same time
        access_key = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(20))
        secret_key = base64.b64encode(secrets.token_bytes(30)).decode()
        self._run(
            "radosgw-admin", "-c", conf, "user", "create", f"--uid={USER}", f"--display-name={USER}",
            f"--access-key={access_key}", f"--secret-key={secret_key}",
        )  # fmt: skip
        self._check_daemons()
        self._step("user made")
        gateway = Gateway(d, endpoint, access_key, secret_key)
        env = d / "env"
        env.touch(mode=0o600)
        env.write_text("".join(f"{key}={value}\n" for key, value in gateway.env().items()))
        return gateway

    def _wait_until_listening(self, name: str, port: int) -> None:
        while not listens(self.procs[name].pid, port):
            self._check_daemons()
            self._remaining()
            time.sleep(0.02)

    def _wait_for_s3(self, endpoint: str) -> None:
        """Until RGW answers an anonymous ListBuckets, which it does only once it has read its zone."""
        while True:
            self._check_daemons()
            self._remaining()
            try:
                with urllib.request.urlopen(endpoint + "/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)


def start(directory: Path, timeout: float = 60.0) -> Gateway:
    """A running cluster in directory (absent or empty), torn down again if it cannot be brought up."""
    return Cluster(directory, timeout).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ceph-rgw",
        description="A throwaway single-node Ceph cluster serving S3 on 127.0.0.1, for tests.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start_parser = sub.add_parser(
        "start",
        help="start a cluster in DIR (absent or empty); prints the AWS_* variables to reach it, also in DIR/env",
    )
    start_parser.add_argument("directory", metavar="DIR", type=Path)
    start_parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for S3 (default 60)")
    stop_parser = sub.add_parser("stop", help="kill every process of the cluster in DIR and remove DIR")
    stop_parser.add_argument("directory", metavar="DIR", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            # the daemons are detached (own session); this process may exit as soon as they answer
            gateway = Cluster(args.directory, args.timeout).start()
            sys.stdout.write("".join(f"{key}={value}\n" for key, value in gateway.env().items()))
        else:
            stop(args.directory)
    except (Unavailable, ValueError) as exc:
        print(f"ceph-rgw: {exc}", file=sys.stderr)
        return 2
    except (StartError, RuntimeError) as exc:
        print(f"ceph-rgw: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
