"""Settings, read from environment variables with documented defaults.

Every setting is listed in README.md ("Configuration"); keep the two in step.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from .shownurl import shown_source
from .text import digits

ENV_PREFIX = "WOPIHOST_"

# Hand-written on purpose: humanfriendly (last release 2021) would add a dependency for two functions and
# reads "512k" and "2G" as decimal unless told otherwise; pytimeparse2 reads durations only. These two
# patterns are the whole documented syntax.
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


# Far beyond any lifetime or timeout, and well inside what a float and a datetime can hold
MAX_DURATION = 36500 * 86400


def parse_duration(text: str) -> float:
    """'10h', '30m', '90s', '250ms', '2d' or plain seconds -> seconds, at most 100 years."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 10h, 30m, 90s)")
    number, unit = int(match.group(1)), _DURATION_UNITS[match.group(2)]
    if number > MAX_DURATION / unit:  # compared before multiplying: a long number overflows a float
        raise ValueError(f"longer than 100 years (36500d): {text!r}")
    return number * unit


# Sizes are stored and compared in the database's 64-bit integers; sums of a few stay inside them too
MAX_SIZE = 1 << 60


def parse_size(text: str) -> int:
    """'100MiB', '2G', '512k' or plain bytes -> bytes (binary units: 1k = 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 100MiB, 2GiB)")
    unit = (match.group(2) or "b")[0].lower()
    size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size > MAX_SIZE:
        raise ValueError(f"larger than 1EiB (1048576TiB): {text!r}")
    return size


def _count(text: str) -> int:
    # ASCII digits only: str.isdigit() also takes '²', on which int() failed with Python's own message
    if not re.fullmatch(r"\s*[0-9]+\s*", text):
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


Number = TypeVar("Number", int, float)


def _more_than_zero(parse: Callable[[str], Number], note: str = "") -> Callable[[str], Number]:
    def parsed(text: str) -> Number:
        value = parse(text)
        if value <= 0:
            raise ValueError(f"must be more than 0, not {text!r}{note}")
        return value

    return parsed


# A limit of 0 refuses everything it limits. WOPIHOST_DRIVE_QUOTA reads 0 as "no limit", so an administrator may
# write 0 for that here too: refused, rather than have every save answer 413.
_NO_ZERO_LIMIT = " (no limit is 0 here: to raise it, give a larger value)"
_positive_duration = _more_than_zero(parse_duration)
_positive_size = _more_than_zero(parse_size, _NO_ZERO_LIMIT)
_positive_count = _more_than_zero(_count, _NO_ZERO_LIMIT)
# A workbook call's child process takes some 560 MiB of address space before it opens a workbook (Python,
# openpyxl, IronCalc, the deep stack it calculates on: xlsx/stack.py)
MIN_WORKBOOK_MEMORY = 1 << 30


def _workbook_memory(text: str) -> int:
    value = parse_size(text)
    if value < MIN_WORKBOOK_MEMORY:
        raise ValueError(
            f"must be at least 1GiB (a call's process takes some 560 MiB before it opens a workbook), not {text!r}"
        )
    return value


# Peers whose X-Forwarded-* headers wopihost reads (with WOPIHOST_TRUSTED_PROXIES): the reverse proxy's address.
# The variable deploy/gunicorn.conf.py gives gunicorn as its forwarded_allow_ips, so that one list says it for both.
FORWARDED_ALLOW_IPS = "127.0.0.1"
Network = IPv4Network | IPv6Network


def _networks(text: str) -> tuple[Network, ...]:
    """Addresses or networks ("10.0.0.5, 10.0.1.0/24"), comma-separated, empty ones skipped; "*" among them any:
    what gunicorn takes for its forwarded_allow_ips, which the same variable sets."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if "*" in parts:
        return (ip_network("0.0.0.0/0"), ip_network("::/0"))
    networks = []
    for part in parts:
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {part!r} (give e.g. 10.0.0.5, 10.0.1.0/24 or *)") from None
    return tuple(networks)


PROOF_MODES = ("off", "verify", "require")


def _proof_mode(text: str) -> str:
    if text.strip().lower() not in PROOF_MODES:
        raise ValueError(f"must be one of {', '.join(PROOF_MODES)}, not {text!r}")
    return text.strip().lower()


# a language tag as WOPI clients take it for UI_LLCC / DC_LLCC (en-US, de, zh-Hant-TW)
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def _language_tag(text: str) -> str:
    if not LANGUAGE_TAG.match(text.strip()):
        raise ValueError(f"not a language tag such as en-US: {text!r}")
    return text.strip()


LOG_FORMATS = ("text", "json")


def _log_format(text: str) -> str:
    if text.strip().lower() not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, not {text!r}")
    return text.strip().lower()


def setting(name: str, default: str, parse, environ: Mapping[str, str] | None = None):
    """One setting on its own, for gunicorn's master, which needs a few before it starts any worker."""
    raw = (os.environ if environ is None else environ).get(ENV_PREFIX + name, "").strip() or default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}: {exc}") from None


def log_format(environ: Mapping[str, str] | None = None) -> str:
    return setting("LOG_FORMAT", "text", _log_format, environ)


def gunicorn_forwarded_allow_ips(environ: Mapping[str, str] | None = None) -> str:
    """WOPIHOST_FORWARDED_ALLOW_IPS as gunicorn takes it: networks written as wopihost reads them (gunicorn refuses
    to start on 10.0.1.5/24, which wopihost reads as 10.0.1.0/24)."""
    return ",".join(str(network) for network in setting("FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS, _networks, environ))


def loopback_tcp_congestion(environ: Mapping[str, str] | None = None) -> str:
    return setting("LOOPBACK_TCP_CONGESTION", "reno", _congestion_control, environ)


def record_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """WOPIHOST_RECORD_DIR, for gunicorn's master too, which assembles the recording; None when unset."""
    return setting("RECORD_DIR", "", lambda text: Path(text).expanduser().resolve() if text else None, environ)


def parse_bind(text: str) -> tuple[str, int]:
    """'127.0.0.1:9100', '[::1]:9100', or a port alone (on 127.0.0.1) -> (host, port)."""
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = "127.0.0.1", text.strip()
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not digits(port) or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port: {text!r} (use e.g. 127.0.0.1:9100)")
    return host, int(port)


def parse_flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"not on/off: {text!r}")


# Each SQLite connection's page cache, at most. SQLite's own default, 2 MiB, is per connection, and a worker keeps
# one connection per thread: two workers of 16 threads reading a database larger than their caches held 153 MiB
# (PSS) with SQLite's default and 102 MiB with this, at the same CPU per request (bench/sqlite_cache.py,
# docs/benchmarks.md). A page that falls out is read again from the system's page cache, which every connection
# and process shares; and in WAL mode a connection drops its whole cache anyway each time another has written
# since its last read.
SQLITE_CACHE_SIZE = 512 << 10
# 16 pages: a write transaction whose changed pages outgrow the cache writes them to the WAL before it commits
MIN_SQLITE_CACHE = 64 << 10


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    public_url: str
    secret_key: str = field(repr=False)
    token_ttl: float = 10 * 3600
    max_file_size: int = 1 << 30
    host_page_url: str = ""  # "": the built-in host page, opened by launch links (wopihost/hostpage.py)
    launch_link_ttl: float = 5 * 60
    ui_language: str = "en-US"
    database_busy_timeout: float = 30.0
    sqlite_cache_size: int = SQLITE_CACHE_SIZE
    min_free_space: int = 64 << 20
    cspp_plus: bool = False
    upload_session_ttl: float = 30 * 60
    max_upload_session_size: int = 2 << 30
    max_upload_sessions_per_user: int = 16
    max_upload_bytes_per_user: int = 4 << 30
    verify_chunk_ids: bool = True
    office_collaboration_url: str = ""
    real_time_channel_url: str = ""
    file_geo_location_code: str = "US"
    sweep_interval: float = 300
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    # TCP congestion control of the connections a listener bound to a loopback address accepts; "": the system's
    loopback_tcp_congestion: str = "reno"
    trusted_proxies: int = 0
    forwarded_allow_ips: tuple[Network, ...] = (ip_network(FORWARDED_ALLOW_IPS),)
    discovery_url: str = ""
    discovery_ttl: float = 12 * 3600
    proof_keys: str = "off"  # off | verify | require
    max_fragment_size: int = 60 << 20
    # the most items (files and folders) below a folder that a Graph copy takes: each file copied holds a
    # descriptor (local storage) until the copy lands, and a process has 1,024 by default (systemd's soft limit)
    max_copy_items: int = 500
    drive_quota: int = 0  # 0: no limit
    max_workbook_size: int = 10 << 20
    workbook_persistent_ttl: float = 5 * 60
    workbook_temporary_ttl: float = 7 * 60
    max_workbook_sessions_per_user: int = 16  # non-persistent ones, each holding a copy of its workbook
    workbook_memory: int = 3 << 30  # the address space of a workbook call's process (xlsx/calculator.py)
    workbook_seconds: float = 60  # the CPU time a workbook call may take
    containers: bool = True  # WOPI containers and ecosystem (SupportsContainers, SupportsEcosystem)
    file_url_ttl: float = 5 * 60
    metrics: bool = True  # /metrics (on the server's port, or at metrics_bind)
    metrics_bind: tuple[str, int] | None = None  # a separate address for /metrics
    log_format: str = "text"  # text | json
    record_dir: Path | None = None  # where `serve --record` writes HAR files (wopihost/recording/); None: off
    record_max_body: int = 1 << 20  # bodies up to this size are recorded whole, larger ones as size and hash
    storage_url: str = ""  # "": blobs under data_dir/blobs; s3://bucket/prefix: an S3 object store (s3store.py)
    # S3 settings; "" leaves endpoint, region and addressing style to the standard AWS variables and config file
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_addressing_style: str = ""  # auto | path | virtual
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 60.0
    s3_max_attempts: int = 4  # in all, first try included; botocore's "standard" back-off between them
    s3_part_size: int = 8 << 20
    # the store's URL as clients reach it: set, Graph's downloadUrl of content stored whole is a presigned GET there
    s3_download_url: str = ""

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def with_changes(self, **changes) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, make_data_dir: bool = True, needs_secret: bool = True
    ) -> Settings:
        """The settings of WOPIHOST_* in `environ` (os.environ). `make_data_dir` False: a data directory that does
        not exist is not made for the generated secret (MissingDataDir), as the commands that only look ask.
        `needs_secret` False (a command that signs and checks no token): a secret not in the environment is
        neither read nor made, and `secret_key` is empty; nor is the data directory asked for it."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(ENV_PREFIX + name, "").strip() or default

        def parsed(name: str, default: str, parse):
            return setting(name, default, parse, env)

        data_dir = Path(get("DATA_DIR", "data")).expanduser().resolve()
        public_url = parsed("PUBLIC_URL", "http://127.0.0.1:8080", _http_url)
        max_file_size = parsed("MAX_FILE_SIZE", "1GiB", _positive_size)
        max_session = parsed("MAX_UPLOAD_SESSION_SIZE", str(min(2 * max_file_size, MAX_SIZE)), _positive_size)
        discovery_url = parsed("DISCOVERY_URL", "", _discovery_source)
        proof_keys = parsed("PROOF_KEYS", "verify" if discovery_url else "off", _proof_mode)
        if proof_keys == "require" and not discovery_url:  # no keys to check with: every WOPI request would be a 500
            raise ConfigError(
                f"{ENV_PREFIX}PROOF_KEYS: require needs the WOPI client's discovery, which publishes the keys: set "
                f"{ENV_PREFIX}DISCOVERY_URL (https://<client>/hosting/discovery)"
            )
        secret = env.get(ENV_PREFIX + "SECRET_KEY", "")  # as given: tokens are signed with every character of it
        secret_key = (
            _long_secret(secret, ENV_PREFIX + "SECRET_KEY", "set a longer one, such as `openssl rand -hex 32` makes")
            if secret
            else load_or_create_secret(data_dir, make_data_dir)
            if needs_secret
            else ""
        )
        # SQLITE_BUSY_TIMEOUT is this setting's name from before it applied to PostgreSQL too; a bad value is
        # reported under the name it was given by
        busy_timeout = "DATABASE_BUSY_TIMEOUT" if get("DATABASE_BUSY_TIMEOUT", "") else "SQLITE_BUSY_TIMEOUT"
        storage_url = parsed("STORAGE_URL", "", _storage_url)
        s3_region = parsed("S3_REGION", "", _s3_region)
        if storage_url and not s3_region:
            _aws_default_region(env)
        return cls(
            data_dir=data_dir,
            database_url=get("DATABASE_URL", f"sqlite:///{data_dir / 'wopihost.sqlite3'}"),
            public_url=public_url,
            secret_key=secret_key,
            token_ttl=parsed("TOKEN_TTL", "10h", _positive_duration),
            max_file_size=max_file_size,
            host_page_url=parsed("HOST_PAGE_URL", "", _host_page_template),
            launch_link_ttl=parsed("LAUNCH_LINK_TTL", "5m", _positive_duration),
            ui_language=parsed("UI_LANGUAGE", "en-US", _language_tag),
            database_busy_timeout=parsed(busy_timeout, "30s", _positive_duration),
            sqlite_cache_size=parsed("SQLITE_CACHE_SIZE", str(SQLITE_CACHE_SIZE), _cache_size),
            min_free_space=parsed("MIN_FREE_SPACE", "64MiB", parse_size),
            cspp_plus=parsed("CSPP_PLUS", "off", parse_flag),
            upload_session_ttl=parsed("UPLOAD_SESSION_TTL", "30m", _positive_duration),
            # a session carries Chunk frames of every stream of a save, so it may outgrow MainContent
            max_upload_session_size=max_session,
            max_upload_sessions_per_user=parsed("MAX_UPLOAD_SESSIONS_PER_USER", "16", _positive_count),
            max_upload_bytes_per_user=parsed(
                "MAX_UPLOAD_BYTES_PER_USER", str(min(2 * max_session, MAX_SIZE)), _positive_size
            ),
            verify_chunk_ids=parsed("VERIFY_CHUNK_IDS", "on", parse_flag),
            office_collaboration_url=parsed("OFFICE_COLLABORATION_URL", public_url, _http_url),
            real_time_channel_url=parsed("REAL_TIME_CHANNEL_URL", public_url, _http_url),
            file_geo_location_code=parsed("FILE_GEO_LOCATION_CODE", "US", _geo_location_code),
            sweep_interval=parsed("SWEEP_INTERVAL", "5m", parse_duration),
            header_timeout=parsed("HEADER_TIMEOUT", "10s", _positive_duration),
            idle_timeout=parsed("IDLE_TIMEOUT", "30s", _positive_duration),
            loopback_tcp_congestion=loopback_tcp_congestion(env),
            trusted_proxies=parsed("TRUSTED_PROXIES", "0", _count),
            forwarded_allow_ips=parsed("FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS, _networks),
            discovery_url=discovery_url,
            discovery_ttl=parsed("DISCOVERY_TTL", "12h", _positive_duration),
            proof_keys=proof_keys,
            max_fragment_size=parsed("MAX_FRAGMENT_SIZE", "60MiB", _positive_size),
            max_copy_items=parsed("MAX_COPY_ITEMS", "500", _positive_count),
            drive_quota=parsed("DRIVE_QUOTA", "0", parse_size),
            max_workbook_size=parsed("MAX_WORKBOOK_SIZE", "10MiB", _positive_size),
            workbook_persistent_ttl=parsed("WORKBOOK_PERSISTENT_TTL", "5m", _positive_duration),
            workbook_temporary_ttl=parsed("WORKBOOK_TEMPORARY_TTL", "7m", _positive_duration),
            max_workbook_sessions_per_user=parsed("MAX_WORKBOOK_SESSIONS_PER_USER", "16", _positive_count),
            workbook_memory=parsed("WORKBOOK_MEMORY", "3GiB", _workbook_memory),
            workbook_seconds=parsed("WORKBOOK_SECONDS", "60s", _positive_duration),
            containers=parsed("CONTAINERS", "on", parse_flag),
            file_url_ttl=parsed("FILE_URL_TTL", "5m", _positive_duration),
            metrics=parsed("METRICS", "on", parse_flag),
            metrics_bind=parsed("METRICS_BIND", "", lambda text: parse_bind(text) if text else None),
            log_format=log_format(env),
            record_dir=record_dir(env),
            record_max_body=parsed("RECORD_MAX_BODY", "1MiB", parse_size),
            storage_url=storage_url,
            s3_endpoint_url=parsed("S3_ENDPOINT_URL", "", _s3_endpoint),
            s3_region=s3_region,
            s3_addressing_style=parsed("S3_ADDRESSING_STYLE", "", _addressing_style),
            s3_connect_timeout=parsed("S3_CONNECT_TIMEOUT", "5s", _positive_duration),
            s3_read_timeout=parsed("S3_READ_TIMEOUT", "60s", _positive_duration),
            s3_max_attempts=parsed("S3_MAX_ATTEMPTS", "4", _attempts),
            s3_part_size=parsed("S3_PART_SIZE", "8MiB", _part_size),
            s3_download_url=parsed("S3_DOWNLOAD_URL", "", _s3_endpoint),
        )


def _cache_size(text: str) -> int:
    size = parse_size(text)
    if size < MIN_SQLITE_CACHE:
        raise ValueError(f"at least {MIN_SQLITE_CACHE >> 10}KiB, not {text!r}")
    return size


def _congestion_control(text: str) -> str:
    if text == "system":
        return ""
    if not re.fullmatch(r"[a-z0-9_]{1,15}", text):  # the kernel's names: TCP_CA_NAME_MAX is 16 with the NUL
        raise ValueError(f"not a congestion control's name (reno, cubic, ...) or system: {text!r}")
    return text


def _storage_url(text: str) -> str:
    if text and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", text):
        raise ValueError(f"not s3://bucket/prefix: {text!r} (leave it empty for the local blob directory)")
    return text


def _http_url(text: str) -> str:
    """An absolute http(s) URL, as messages show it (shownurl) when refused: the value may hold a password."""
    if not text:
        return text
    # the whole value: systemd keeps a `# comment` after it, and every URL built from it would carry that
    if not re.fullmatch(r"(?i:https?)://[^/\s]+\S*", text):
        raise ValueError(f"not an absolute http(s) URL (with no spaces): {shown_source(text)}")
    try:  # what every URL built from it would fail on, later and with a traceback
        parts = urlsplit(text)
        parts.port  # noqa: B018  # a port that is not a number, or past 65535, raises here
        if parts.netloc.rpartition("@")[2].startswith("["):
            IPv6Address(parts.hostname or "")  # brackets hold an IPv6 address and nothing else
    except ValueError as exc:
        raise ValueError(f"not a URL that can be parsed ({exc}): {shown_source(text)}") from None
    if not parts.hostname:
        raise ValueError(f"a URL with no host: {shown_source(text)}")
    return text.rstrip("/")


def _s3_endpoint(text: str) -> str:
    """An http(s) URL whose host boto3 takes: letters, digits, dots and hyphens (no `_`, which Docker's service
    names may hold), or an IP address."""
    text = _http_url(text)
    host = urlsplit(text).hostname or ""
    if text and not re.fullmatch(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+", host):
        raise ValueError(f"the host {host!r} is not one an S3 client takes (letters, digits, dots and hyphens)")
    return text


def _discovery_source(text: str) -> str:
    """An http(s) URL or a file path; what the discovery cache would refuse on first use (a single letter is a
    Windows drive)."""
    if text.lower().startswith(("http://", "https://")):
        _http_url(text)  # a `# comment` after it: the fetch would fail, and with it every proof check
        parts = urlsplit(text)
        if "@" in parts.netloc:  # urllib sends no user or password, and the error it raises quotes them
            raise ValueError("a URL with a user or password before its host, which the fetch would not send")
    elif len(scheme := urlsplit(text).scheme) > 1:  # (the rest not quoted: it may hold a password)
        raise ValueError(f"neither an http(s) URL nor a file path: it starts with {scheme}: (a URL with https://)")
    return text


def _geo_location_code(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", text):  # a region's code (US, EUR, ...), sent to every client
        raise ValueError(f"not a location code such as US or EUR: {text!r}")
    return text


def _host_page_template(text: str) -> str:
    """An absolute http(s) URL in which {action} and {file_id} are the only fields: one CheckFileInfo after
    another would fail on any other. {file_id} it must have: without it every file would open the same page."""
    if not text:
        return text
    _http_url(text)
    try:
        text.format(action="view", file_id="id")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"only {{action}} and {{file_id}} may stand in braces (double a literal brace): {exc!r}"
        ) from None
    if "file_id" not in {field for _, field, _, _ in string.Formatter().parse(text)}:
        raise ValueError(f"no {{file_id}} in {text!r}: every file would open the same page")
    return text


def _s3_region(text: str) -> str:
    # botocore's own rule (a host label, not all digits), which it applies only once the store is first built:
    # a bad name was a traceback of every command that touched the store
    if text and not re.fullmatch(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)", text):
        raise ValueError(f"not a region name such as eu-west-1: {text!r}")
    return text


def _aws_default_region(env: Mapping[str, str]) -> None:
    """The region botocore takes where WOPIHOST_S3_REGION is unset, by _s3_region's rule: botocore refuses a bad
    one only when the store is built, a traceback of every command. As botocore reads it: not stripped."""
    try:
        _s3_region(env.get("AWS_DEFAULT_REGION", ""))
    except ValueError as exc:
        raise ConfigError(f"AWS_DEFAULT_REGION: {exc} (the S3 store's region: WOPIHOST_S3_REGION is unset)") from None


def _addressing_style(text: str) -> str:
    if text not in ("", "auto", "path", "virtual"):
        raise ValueError(f"none of auto, path, virtual: {text!r}")
    return text


def _attempts(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise ValueError("at least 1 (the first try)")
    return value


def _part_size(text: str) -> int:
    value = parse_size(text)
    if not 5 << 20 <= value <= 5 << 30:
        raise ValueError(f"{text!r} is outside S3's part sizes, 5MiB to 5GiB")
    return value


class MissingDataDir(ConfigError):
    """WOPIHOST_DATA_DIR names no directory, and a command that does not make it needs what it holds."""

    def __init__(self, data_dir: Path, holds: str):
        super().__init__(
            f"the data directory {data_dir} does not exist, and {holds} there: set WOPIHOST_DATA_DIR to the "
            "server's, or make it with `wopihost db upgrade` (or `wopihost serve`)"
        )


def missing(directory: Path) -> bool:
    """Whether nothing is at `directory` (a path through a regular file is not missing: it cannot be used)."""
    try:
        directory.stat()
    except FileNotFoundError:
        return True
    except OSError:
        pass
    return False


def load_or_create_secret(data_dir: Path, make_data_dir: bool = True) -> str:
    """The token secret kept in DATA_DIR/secret_key, created on first use (MissingDataDir if the directory does
    not exist and `make_data_dir` is False).

    Several gunicorn workers may start at once: the file is created with O_EXCL
    from a fully written temporary file, so every process reads the same secret.
    """
    path = data_dir / "secret_key"
    try:
        return _long_secret(path.read_text().strip(), str(path), _RESTORE)
    except FileNotFoundError:
        pass
    if not make_data_dir and missing(data_dir):
        raise MissingDataDir(data_dir, "the token secret is kept")
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(tmp, path)  # atomic: fails if another process won the race
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _long_secret(path.read_text().strip(), str(path), _RESTORE)


# The generated secret is 64 hex digits. One much shorter (an emptied file, a word typed in) is guessed offline
# from any token: whoever holds a read-only token could then sign a write token for any file.
MIN_SECRET_LENGTH = 32
_RESTORE = "restore it from a backup, or remove it to have a new one generated"


def _long_secret(secret: str, where: str, fix: str) -> str:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{where}: the token secret is {len(secret)} characters, fewer than {MIN_SECRET_LENGTH}: {fix} "
            "(tokens issued so far then stop working)"
        )
    return secret
