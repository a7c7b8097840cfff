"""Pure helpers: names, settings, time formats; and that the migrations build exactly the models' schema."""

import os
import stat
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import example, given
from hypothesis import strategies as st

from wopihost import names
from wopihost.clock import iso_round_trip, parse_iso
from wopihost.config import ConfigError, Settings, load_or_create_secret, parse_duration, parse_size
from wopihost.junit import Case, Suite, junit_xml
from wopihost.models import metadata, name_key
from wopihost.tokens import bearer

# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Doc.docx", "Résumé.docx", "a.b.c", "no extension", "x" * 250 + ".docx", "(1) [draft] {v2} #3 & co.xlsx"]
)
def test_valid_names(name):
    assert names.check(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "a\\b",
        "a:b",
        "a*b",
        "a?b",
        'a"b',
        "a<b",
        "a>b",
        "a|b",
        "tab\there",
        "nul\x00",
        "del\x7f",
        " lead",
        "trail ",
        "end.",
        ".hidden",
        "CON",
        "con.txt",
        "LPT1.docx",
        "x" * 251 + ".docx",
        "a." + "x" * 40,
    ],
)
def test_invalid_names(name):
    with pytest.raises(names.InvalidName):
        names.check(name)


@given(st.text(max_size=300))
@example(".\xa00")  # found by this test: a no-break space left at the start once the dot went
@example("a." + "x" * 30 + " yy")  # an extension cut short at a space
@example("a." + "x" * 40 + "." + " " * 31 + "y")  # one that is nothing but spaces, cut short
@example("CON." + "x" * 300 + ".docx")  # a device name's base at the longest: its "_" must not lengthen it
def test_sanitize_always_gives_a_valid_name(text):
    assert names.check(names.sanitize(text)) == names.sanitize(text)


@pytest.mark.parametrize(
    "text, name",
    [
        ("Report.docx", "Report.docx"),
        (" Report .docx ", "Report.docx"),
        (".\xa0Report.docx\xa0.", "Report.docx"),
        ("..\u2003. Report", "Report"),
        ("a/b:c.docx", "a_b_c.docx"),
        ("a." + "x" * 30 + " yy", "a." + "x" * 30),
        ("a." + "x" * 40 + "." + " " * 31 + "y", "a." + "x" * 31),
        ("a." + "x" * 40 + ".", "a." + "x" * 31),
        ("name.", "name"),
        ("\xa0. \u3000", "Untitled"),
        ("con.txt", "_con.txt"),
        ("CON." + "x" * 300 + ".docx", "_CON." + "x" * 245 + ".docx"),
    ],
)
def test_sanitize_trims_what_a_name_may_not_start_or_end_with(text, name):
    assert names.sanitize(text) == name


@given(st.text(max_size=60))
def test_utf7_round_trip(text):
    assert names.decode_utf7(names.encode_utf7(text), "X") == text


def test_numbered_names():
    assert names.numbered("Report.docx", 2) == "Report (2).docx"
    assert names.numbered("Report (2).docx", 3) == "Report (3).docx"
    assert names.numbered("README", 2) == "README (2)"
    assert len(names.split_extension(names.numbered("x" * 250 + ".docx", 12))[0]) == 250


@pytest.mark.parametrize("style", [names.numbered_folder, names.counted_folder])
@pytest.mark.parametrize("name", ["Notes." + "a" * 31, "Notes." + "a" * 29, "x" * 200 + "." + "y" * 31, "z" * 250])
def test_a_folders_numbered_name_is_a_valid_name(style, name):
    """A folder's number goes after its whole name, after what check() takes for an extension too."""
    for n in (2, 12, 1000):
        numbered = style(name, n)
        assert names.check(numbered) == numbered
        assert numbered.endswith(f" ({n})" if style is names.numbered_folder else f" {n - 1}")
    assert names.numbered_folder("v1.2", 2) == "v1.2 (2)" and names.counted_folder("v1.2 (2)", 2) == "v1.2 (2) 1"


# CaseFolding.txt (Unicode 14, as Python 3.11's unicodedata) gives these characters a full folding of several
# characters (F) and a simple one (S) too; every other character with an F entry has no simple folding but itself.
SIMPLE_WHERE_FULL_IS_LONGER = {
    "ẞ": "ß",
    **{chr(0x1F88 + i): chr(0x1F80 + i) for i in range(8)},  # ᾈ ᾀ: capital with prosgegrammeni
    **{chr(0x1F98 + i): chr(0x1F90 + i) for i in range(8)},
    **{chr(0x1FA8 + i): chr(0x1FA0 + i) for i in range(8)},
    "ᾼ": "ᾳ",
    "ῌ": "ῃ",
    "ῼ": "ῳ",
}


@pytest.mark.parametrize(
    "name, other",
    [("Maße.txt", "Masse.txt"), ("ﬁle.txt", "file.txt"), ("ﬃ", "ffi"), ("İ", "i̇"), ("ŉ", "ʼn"), ("ﬆ", "st")],
)
def test_names_are_told_apart_where_case_folds_one_character_to_several(name, other):
    """Windows folds case one character for one: "ß" is not "ss" there, and "ﬁ" is not "fi"."""
    assert name_key(name) != name_key(other)


@pytest.mark.parametrize(
    "name, other",
    [("MASSE.txt", "Masse.txt"), ("É", "é"), ("MAẞE", "maße"), ("ᾈ", "ᾀ"), ("ΣΑΣ", "σας"), ("\u212a", "k"), ("é", "é")],
)
def test_names_that_differ_in_case_only_are_one_name(name, other):
    assert name_key(name) == name_key(other)


def test_name_keys_fold_each_character_as_unicodes_simple_case_folding():
    """Over every character: one character for one, Unicode's simple folding (C and S), and a key whose full
    folding is the name's. So a key only tells apart names that full folding, the rule before migration 0013,
    counted as one, and never joins two: 0013 re-keys a folder without a clash."""
    for code in range(0x110000):
        char = chr(code)
        if unicodedata.category(char) == "Cs" or unicodedata.normalize("NFC", char) != char:
            continue
        full = char.casefold()
        expected = full if len(full) == 1 else SIMPLE_WHERE_FULL_IS_LONGER.get(char, char)
        key = name_key(char)
        assert key == expected, hex(code)
        assert key.casefold() == full and full.casefold() == full, hex(code)


# -- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds", [("10h", 36000), ("30m", 1800), ("90s", 90), ("45", 45), ("2d", 172800), ("250ms", 0.25)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_durations_past_100_years_are_refused():
    assert parse_duration("36500d") == 36500 * 86400
    for text in ("36501d", "99999999999999d", "1" + "0" * 400 + "ms"):  # a timedelta, or a float, overflowed
        with pytest.raises(ValueError, match="longer than 100 years"):
            parse_duration(text)


@pytest.mark.parametrize(
    "text, size", [("1GiB", 1 << 30), ("100MiB", 100 << 20), ("512k", 512 << 10), ("7", 7), ("2G", 2 << 30)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_sizes_past_an_exbibyte_are_refused(tmp_path):
    """Sizes go into the database's 64-bit integers: a larger one failed there, a 500 on each upload."""
    assert parse_size("1048576TiB") == 1 << 60
    for text in ("1048577TiB", "4000000TiB", "9" * 30):
        with pytest.raises(ValueError, match="larger than 1EiB"):
            parse_size(text)
    with pytest.raises(ConfigError, match="WOPIHOST_MAX_FILE_SIZE"):
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_MAX_FILE_SIZE": "4000000TiB"})
    largest = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_MAX_FILE_SIZE": "1048576TiB"})
    assert largest.max_upload_session_size == largest.max_upload_bytes_per_user == 1 << 60  # derived: no larger


def test_a_workbook_calls_memory_leaves_room_for_its_process(tmp_path):
    """A workbook call's process takes some 560 MiB of address space before it opens a workbook: under a cap of
    less, every call would fail, reported as a workbook too large to calculate."""
    settings = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path)})
    assert (settings.workbook_memory, settings.workbook_seconds) == (3 << 30, 60)
    env = {"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_WORKBOOK_MEMORY": "1GiB", "WOPIHOST_WORKBOOK_SECONDS": "5s"}
    assert (Settings.from_env(env).workbook_memory, Settings.from_env(env).workbook_seconds) == (1 << 30, 5)
    with pytest.raises(ConfigError, match="WOPIHOST_WORKBOOK_MEMORY: must be at least 1GiB"):
        Settings.from_env({**env, "WOPIHOST_WORKBOOK_MEMORY": "512MiB"})


def test_the_busy_timeout_under_its_old_name(tmp_path):
    def busy(**env: str) -> float:
        return Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), **env}).database_busy_timeout

    assert busy() == 30 and busy(WOPIHOST_SQLITE_BUSY_TIMEOUT="5s") == 5
    assert busy(WOPIHOST_SQLITE_BUSY_TIMEOUT="abc", WOPIHOST_DATABASE_BUSY_TIMEOUT="2s") == 2  # the new name wins


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.data_dir == tmp_path / "data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'wopihost.sqlite3'}"
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.token_ttl == 36000
    assert settings.max_file_size == 1 << 30
    assert settings.host_page_url == ""  # the built-in host page
    assert settings.launch_link_ttl == 300
    assert settings.ui_language == "en-US"
    assert settings.record_dir is None and settings.record_max_body == 1 << 20  # not recording
    assert settings.sqlite_cache_size == 512 << 10
    assert settings.loopback_tcp_congestion == "reno"


def test_storage_settings(tmp_path):
    defaults = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path)})
    assert defaults.storage_url == "" and defaults.s3_download_url == ""  # the local blob directory
    assert (defaults.s3_connect_timeout, defaults.s3_read_timeout, defaults.s3_max_attempts) == (5, 60, 4)
    assert defaults.s3_part_size == 8 << 20
    settings = Settings.from_env(
        {
            "WOPIHOST_DATA_DIR": str(tmp_path),
            "WOPIHOST_STORAGE_URL": "s3://files.example-1/wopi/host",
            "WOPIHOST_S3_ADDRESSING_STYLE": "path",
            "WOPIHOST_S3_MAX_ATTEMPTS": "2",
            "WOPIHOST_S3_PART_SIZE": "16MiB",
            "WOPIHOST_S3_DOWNLOAD_URL": "https://store.example/",
        }
    )
    assert settings.storage_url == "s3://files.example-1/wopi/host" and settings.s3_addressing_style == "path"
    assert (settings.s3_max_attempts, settings.s3_part_size) == (2, 16 << 20)
    assert settings.s3_download_url == "https://store.example"


def test_sqlite_cache_size_setting(tmp_path):
    settings = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_SQLITE_CACHE_SIZE": "2MiB"})
    assert settings.sqlite_cache_size == 2 << 20


@pytest.mark.parametrize("text, algorithm", [("cubic", "cubic"), ("bbr", "bbr"), ("system", "")])
def test_loopback_tcp_congestion_setting(tmp_path, text, algorithm):
    settings = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_LOOPBACK_TCP_CONGESTION": text})
    assert settings.loopback_tcp_congestion == algorithm


def test_a_host_page_template_takes_its_two_fields_and_literal_braces(tmp_path):
    template = "https://portal.example/{{x}}/open?f={file_id}&a={action}"
    settings = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_HOST_PAGE_URL": template})
    assert settings.host_page_url == template


@pytest.mark.parametrize(
    "template",
    [
        "https://portal.example/open?a={action}",
        "https://portal.example/open",
        "https://portal.example/open/{{file_id}}",  # a literal brace, no field
    ],
)
def test_a_host_page_template_without_file_id_is_refused(tmp_path, template):
    """Taken, it made one HostViewUrl and one HostEditUrl for every file: each opened the same page."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_HOST_PAGE_URL": template})
    assert str(raised.value) == (
        f"WOPIHOST_HOST_PAGE_URL: no {{file_id}} in {template!r}: every file would open the same page"
    )


def test_aws_default_region_is_checked_only_where_the_s3_store_reads_it(tmp_path):
    """botocore takes AWS_DEFAULT_REGION for the S3 store where WOPIHOST_S3_REGION is unset, and refused a bad one
    with a traceback when the store was built; the local store never reads it, and WOPIHOST_S3_REGION overrides it."""
    bad = {"WOPIHOST_DATA_DIR": str(tmp_path), "AWS_DEFAULT_REGION": "eu-west-1 # Ireland"}
    with pytest.raises(ConfigError, match=r"^AWS_DEFAULT_REGION: not a region name such as eu-west-1: "):
        Settings.from_env({**bad, "WOPIHOST_STORAGE_URL": "s3://bucket"})
    assert Settings.from_env(bad).storage_url == ""  # the local blob directory
    overridden = Settings.from_env({**bad, "WOPIHOST_STORAGE_URL": "s3://bucket", "WOPIHOST_S3_REGION": "eu-west-1"})
    assert overridden.s3_region == "eu-west-1"
    assert Settings.from_env({**bad, "WOPIHOST_STORAGE_URL": "s3://bucket", "AWS_DEFAULT_REGION": ""}).s3_region == ""


def test_recording_settings(tmp_path):
    settings = Settings.from_env(
        {"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_RECORD_DIR": "~/rec", "WOPIHOST_RECORD_MAX_BODY": "64k"}
    )
    assert settings.record_dir == Path("~/rec").expanduser().resolve() and settings.record_max_body == 64 << 10


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"WOPIHOST_TOKEN_TTL": "soon"}, "WOPIHOST_TOKEN_TTL"),
        ({"WOPIHOST_MAX_FILE_SIZE": "big"}, "WOPIHOST_MAX_FILE_SIZE"),
        ({"WOPIHOST_PUBLIC_URL": "wopi.example"}, "WOPIHOST_PUBLIC_URL"),
        ({"WOPIHOST_RECORD_MAX_BODY": "all"}, "WOPIHOST_RECORD_MAX_BODY"),
        ({"WOPIHOST_STORAGE_URL": "https://bucket/prefix"}, "WOPIHOST_STORAGE_URL"),
        ({"WOPIHOST_STORAGE_URL": "s3://"}, "WOPIHOST_STORAGE_URL"),
        ({"WOPIHOST_S3_ADDRESSING_STYLE": "sideways"}, "WOPIHOST_S3_ADDRESSING_STYLE"),
        ({"WOPIHOST_S3_CONNECT_TIMEOUT": "0s"}, "WOPIHOST_S3_CONNECT_TIMEOUT"),
        ({"WOPIHOST_S3_READ_TIMEOUT": "never"}, "WOPIHOST_S3_READ_TIMEOUT"),
        ({"WOPIHOST_S3_MAX_ATTEMPTS": "0"}, "WOPIHOST_S3_MAX_ATTEMPTS"),
        ({"WOPIHOST_S3_PART_SIZE": "4MiB"}, "WOPIHOST_S3_PART_SIZE"),
        ({"WOPIHOST_S3_PART_SIZE": "6GiB"}, "WOPIHOST_S3_PART_SIZE"),
        ({"WOPIHOST_S3_DOWNLOAD_URL": "store.example"}, "WOPIHOST_S3_DOWNLOAD_URL"),
        ({"WOPIHOST_SQLITE_CACHE_SIZE": "lots"}, "WOPIHOST_SQLITE_CACHE_SIZE"),
        ({"WOPIHOST_SQLITE_CACHE_SIZE": "32KiB"}, "WOPIHOST_SQLITE_CACHE_SIZE"),
        ({"WOPIHOST_LOOPBACK_TCP_CONGESTION": "Reno"}, "WOPIHOST_LOOPBACK_TCP_CONGESTION"),
        ({"WOPIHOST_LOOPBACK_TCP_CONGESTION": "cubic;bbr"}, "WOPIHOST_LOOPBACK_TCP_CONGESTION"),
        ({"WOPIHOST_LOOPBACK_TCP_CONGESTION": "a" * 16}, "WOPIHOST_LOOPBACK_TCP_CONGESTION"),
        # a template CheckFileInfo could not fill: each request would fail
        ({"WOPIHOST_HOST_PAGE_URL": "https://portal.example/open/{fileId}"}, "WOPIHOST_HOST_PAGE_URL"),
        ({"WOPIHOST_HOST_PAGE_URL": "https://portal.example/open/{0}"}, "WOPIHOST_HOST_PAGE_URL"),
        ({"WOPIHOST_HOST_PAGE_URL": "https://portal.example/open/{file_id"}, "WOPIHOST_HOST_PAGE_URL"),
        ({"WOPIHOST_HOST_PAGE_URL": "/open/{file_id}"}, "WOPIHOST_HOST_PAGE_URL"),
        # the client's address without its scheme: each command failed with a traceback
        ({"WOPIHOST_DISCOVERY_URL": "onlyoffice.example.com:8080/hosting/discovery"}, "WOPIHOST_DISCOVERY_URL"),
        ({"WOPIHOST_DISCOVERY_URL": "ftp://client/hosting/discovery"}, "WOPIHOST_DISCOVERY_URL"),
        ({"WOPIHOST_TOKEN_TTL": "99999999999999d"}, "WOPIHOST_TOKEN_TTL"),
        ({"WOPIHOST_TOKEN_TTL": "0"}, "WOPIHOST_TOKEN_TTL"),  # every token born expired
        # systemd keeps a comment after a value in it (docs/deploy.md §2)
        ({"WOPIHOST_PUBLIC_URL": "https://wopi.example.com/office  # public URL"}, "WOPIHOST_PUBLIC_URL"),
        ({"WOPIHOST_S3_DOWNLOAD_URL": "https://store.example # presigned"}, "WOPIHOST_S3_DOWNLOAD_URL"),
        ({"WOPIHOST_HOST_PAGE_URL": "https://portal.example/{file_id} #x"}, "WOPIHOST_HOST_PAGE_URL"),
        # the discovery never fetched: no proof keys, so under PROOF_KEYS=verify nothing would be checked
        ({"WOPIHOST_DISCOVERY_URL": "https://client.example/hosting/discovery  # client"}, "WOPIHOST_DISCOVERY_URL"),
        ({"WOPIHOST_OFFICE_COLLABORATION_URL": "https://ocs.example # coauth"}, "WOPIHOST_OFFICE_COLLABORATION_URL"),
        ({"WOPIHOST_REAL_TIME_CHANNEL_URL": "wss://rtc.example"}, "WOPIHOST_REAL_TIME_CHANNEL_URL"),
        ({"WOPIHOST_FILE_GEO_LOCATION_CODE": "EUR  # Europe"}, "WOPIHOST_FILE_GEO_LOCATION_CODE"),
        ({"WOPIHOST_S3_ENDPOINT_URL": "http://127.0.0.1:7480 # rgw"}, "WOPIHOST_S3_ENDPOINT_URL"),
        ({"WOPIHOST_S3_ENDPOINT_URL": "127.0.0.1:7480"}, "WOPIHOST_S3_ENDPOINT_URL"),
        # each failed later with a traceback: every command, gunicorn, or each URL built from it
        ({"WOPIHOST_PUBLIC_URL": "https://[wopi.example.com]/office"}, "WOPIHOST_PUBLIC_URL"),
        ({"WOPIHOST_PUBLIC_URL": "http://wopi.example.com:abc"}, "WOPIHOST_PUBLIC_URL"),
        ({"WOPIHOST_PUBLIC_URL": "http://[::1"}, "WOPIHOST_PUBLIC_URL"),
        ({"WOPIHOST_S3_ENDPOINT_URL": "http://my_minio:9000"}, "WOPIHOST_S3_ENDPOINT_URL"),
        ({"WOPIHOST_S3_DOWNLOAD_URL": "http://store:99999"}, "WOPIHOST_S3_DOWNLOAD_URL"),
        # botocore refuses it when the store is first built, with a traceback
        ({"WOPIHOST_S3_REGION": "eu-west-1 # Ireland"}, "WOPIHOST_S3_REGION"),
        ({"WOPIHOST_S3_REGION": "us east 1"}, "WOPIHOST_S3_REGION"),
        ({"WOPIHOST_UPLOAD_SESSION_TTL": "1" + "0" * 400 + "ms"}, "WOPIHOST_UPLOAD_SESSION_TTL"),
        ({"WOPIHOST_DATABASE_BUSY_TIMEOUT": "99999999999999999d"}, "WOPIHOST_DATABASE_BUSY_TIMEOUT"),
        ({"WOPIHOST_SQLITE_BUSY_TIMEOUT": "abc"}, "WOPIHOST_SQLITE_BUSY_TIMEOUT"),  # the old name, named
        # a limit of 0 refuses all it limits, where WOPIHOST_DRIVE_QUOTA=0 is "no limit"; a lifetime of 0 is over
        # at once; PostgreSQL's lock_timeout of 0 never times out
        ({"WOPIHOST_MAX_FILE_SIZE": "0"}, "WOPIHOST_MAX_FILE_SIZE"),
        ({"WOPIHOST_MAX_UPLOAD_SESSION_SIZE": "0MiB"}, "WOPIHOST_MAX_UPLOAD_SESSION_SIZE"),
        ({"WOPIHOST_MAX_UPLOAD_BYTES_PER_USER": "0"}, "WOPIHOST_MAX_UPLOAD_BYTES_PER_USER"),
        ({"WOPIHOST_MAX_UPLOAD_SESSIONS_PER_USER": "0"}, "WOPIHOST_MAX_UPLOAD_SESSIONS_PER_USER"),
        ({"WOPIHOST_MAX_FRAGMENT_SIZE": "0"}, "WOPIHOST_MAX_FRAGMENT_SIZE"),
        ({"WOPIHOST_MAX_COPY_ITEMS": "0"}, "WOPIHOST_MAX_COPY_ITEMS"),
        ({"WOPIHOST_MAX_WORKBOOK_SIZE": "0k"}, "WOPIHOST_MAX_WORKBOOK_SIZE"),
        ({"WOPIHOST_UPLOAD_SESSION_TTL": "0"}, "WOPIHOST_UPLOAD_SESSION_TTL"),
        ({"WOPIHOST_DISCOVERY_TTL": "0s"}, "WOPIHOST_DISCOVERY_TTL"),
        ({"WOPIHOST_DATABASE_BUSY_TIMEOUT": "0ms"}, "WOPIHOST_DATABASE_BUSY_TIMEOUT"),
        ({"WOPIHOST_SQLITE_BUSY_TIMEOUT": "0"}, "WOPIHOST_SQLITE_BUSY_TIMEOUT"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path, env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), **env})


@pytest.mark.parametrize(
    "url",
    [
        "https://bob:s3cretpw@client.example/hosting/discovery?key=SECRETKEY # collabora",
        "htps://bob:s3cretpw@client.example/hosting/discovery?key=SECRETKEY",
    ],
)
def test_a_refused_url_setting_is_quoted_without_its_secrets(tmp_path, url):
    """The message quoted the value whole, a password and a key in its query with it, to the terminal and to the
    journal (the gunicorn master prints it unredacted)."""
    with pytest.raises(ConfigError, match="WOPIHOST_DISCOVERY_URL") as refused:
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_DISCOVERY_URL": url})
    assert "s3cretpw" not in str(refused.value) and "SECRETKEY" not in str(refused.value)


def test_an_s3_endpoint_of_a_host_name_or_an_address_is_taken(tmp_path):
    for url in ("http://minio-1.internal:9000", "http://127.0.0.1:7480", "http://[::1]:7480"):
        assert Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_S3_ENDPOINT_URL": url})


def test_the_zeros_the_readme_gives_a_meaning_are_taken(tmp_path):
    """0 is refused where it would refuse everything; these four say what their 0 means."""
    settings = Settings.from_env(
        {
            "WOPIHOST_DATA_DIR": str(tmp_path),
            "WOPIHOST_DRIVE_QUOTA": "0",  # no quota
            "WOPIHOST_SWEEP_INTERVAL": "0",  # no sweeps
            "WOPIHOST_MIN_FREE_SPACE": "0",  # no room kept
            "WOPIHOST_RECORD_MAX_BODY": "0",  # every body recorded as its size and hash
        }
    )
    assert settings.drive_quota == settings.sweep_interval == settings.min_free_space == settings.record_max_body == 0


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u2070", "-1", "1.5", "2 3"])
def test_a_count_that_is_no_whole_number_says_so(tmp_path, value):
    """str.isdigit() took '\u00b2', on which int() then failed with Python's own message."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_MAX_COPY_ITEMS": value})
    assert str(raised.value) == f"WOPIHOST_MAX_COPY_ITEMS: not a whole number: {value!r}"


@pytest.mark.parametrize(
    "source", ["https://client.example/hosting/discovery", "HTTP://client:8080/x", "/etc/discovery.xml", "d.xml"]
)
def test_a_discovery_source_is_a_url_or_a_file(tmp_path, source):
    settings = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_DISCOVERY_URL": source})
    assert settings.discovery_url == source


def test_secret_is_created_once_private_and_reused(tmp_path):
    first = load_or_create_secret(tmp_path)
    assert len(first) == 64
    assert load_or_create_secret(tmp_path) == first
    assert stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


@pytest.mark.parametrize("kept", ["", "\n", "changeme", "a" * 31])
def test_a_secret_key_file_too_short_to_sign_with_is_refused(tmp_path, kept):
    """An emptied or hand-written secret_key would sign tokens anyone can forge after guessing it."""
    (tmp_path / "secret_key").write_text(kept)
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'secret_key'}: the token secret is {len(kept.strip())} "):
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path)})
    (tmp_path / "secret_key").write_text("a" * 32)
    assert Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path)}).secret_key == "a" * 32


@pytest.mark.parametrize("given", ["changeme", "s" * 31])
def test_a_secret_key_setting_too_short_to_sign_with_is_refused(tmp_path, given):
    with pytest.raises(ConfigError, match=f"^WOPIHOST_SECRET_KEY: the token secret is {len(given)} characters"):
        Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_SECRET_KEY": given})
    settings = Settings.from_env({"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_SECRET_KEY": "s" * 32})
    assert settings.secret_key == "s" * 32 and not (tmp_path / "secret_key").exists()


def test_secret_created_by_racing_processes_is_the_same(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        secrets = set(pool.map(load_or_create_secret, [tmp_path] * 8))
    assert len(secrets) == 1


# -- time -----------------------------------------------------------------------------


def test_iso_round_trip_format():
    assert iso_round_trip(datetime(2009, 6, 15, 13, 45, 30, 123456)) == "2009-06-15T13:45:30.1234560Z"


@pytest.mark.parametrize(
    "text",
    [
        "2009-06-15T13:45:30.1234560Z",
        "2009-06-15T13:45:30.123456+00:00",
        "2009-06-15T15:45:30.123456+02:00",
        "2009-06-15T13:45:30.123456",
    ],
)
def test_parse_iso_normalises_to_utc(text):
    assert parse_iso(text) == datetime(2009, 6, 15, 13, 45, 30, 123456)


@pytest.mark.parametrize(
    "text",
    # the last two are valid ISO 8601 but outside what a datetime holds once moved to UTC
    ["", "yesterday", "2009-13-45T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
)
def test_parse_iso_rejects_garbage(text):
    assert parse_iso(text) is None


# -- schema ---------------------------------------------------------------------------


def test_migrations_build_exactly_the_models(database):
    engine = sa.create_engine(database)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert differences == []


def test_every_package_of_wopihost_is_installed():
    """pyproject.toml lists the packages setuptools installs; one left out works in the source tree (and in
    an editable install) but is missing from a wheel."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "wopihost").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_a_serving_worker_does_not_load_what_it_may_never_need():
    """Alembic (migrations) and openpyxl/IronCalc (the workbook API) are loaded on first use, not by the app:
    each costs a worker megabytes (issue 13's memory)."""
    code = (
        "import sys, wopihost.app, wopihost.worker; "
        "print(sorted(m for m in ('alembic', 'openpyxl', 'ironcalc', 'requests') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize(
    "header, token",
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer  ", None),
        ("", None),
        (None, None),
    ],
)
def test_the_bearer_token_of_an_authorization_header(header, token):
    assert bearer(header) == token


# -- JUnit XML ------------------------------------------------------------------------


@given(st.text(), st.text())
def test_junit_xml_is_well_formed_whatever_the_text(name, message):
    """The validator and replay quote what a host answered, which may hold what XML cannot."""
    document = junit_xml(name, [Suite(name, [Case(name, failure=message, details=message), Case(name, skipped=name)])])
    root = ET.fromstring(document)
    assert root.get("tests") == "2" and root.get("failures") == "1" and root.get("skipped") == "1"
