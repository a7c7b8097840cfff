"""/metrics in one process (WebTest): what requests, proofs and sweeps move, and the state read from the database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
import webtest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from wopihost.app import create_app
from wopihost.config import ConfigError, Settings
from wopihost.gc import Sweeper
from wopihost.localserver import free_port
from wopihost.metrics import FLUSHER, LATENCY_BUCKETS, Metrics

from .helpers import WopiClient


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} of an exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics(testapp) -> dict[tuple[str, frozenset], float]:
    response = testapp.get("/metrics")
    assert response.content_type == "text/plain" and response.headers["Cache-Control"] == "no-store"
    return scrape(response.text)


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples, operation: str, status: int) -> float:
    return value(samples, "wopihost_requests_total", operation=operation, status=str(status))


def test_a_check_file_info_is_counted_under_its_operation_and_status(wopi, testapp):
    wopi.check_file_info()
    wopi.check_file_info()
    samples = metrics(testapp)
    assert requests_of(samples, "CheckFileInfo", 200) == 2
    assert value(samples, "wopihost_request_duration_seconds_count", operation="CheckFileInfo") == 2
    assert value(samples, "wopihost_request_duration_seconds_bucket", operation="CheckFileInfo", le="+Inf") == 2
    assert value(samples, "wopihost_request_duration_seconds_sum", operation="CheckFileInfo") > 0
    body_bytes = len(wopi.check_file_info().body)
    samples = metrics(testapp)
    assert value(samples, "wopihost_response_body_bytes_total", operation="CheckFileInfo") == 3 * body_bytes


def test_get_file_bytes_out_and_put_file_bytes_in(testapp, make_file, client_for):
    wopi = client_for(make_file(b"x" * 5000))
    assert len(wopi.get_file().body) == 5000
    wopi.get_file(Range="bytes=0-99")
    wopi.lock("L")
    wopi.put_file(b"y" * 3000, lock="L")
    samples = metrics(testapp)
    assert value(samples, "wopihost_response_body_bytes_total", operation="GetFile") == 5100
    assert requests_of(samples, "GetFile", 200) == 1 and requests_of(samples, "GetFile", 206) == 1
    assert value(samples, "wopihost_request_body_bytes_total", operation="PutFile") == 3000
    assert requests_of(samples, "Lock", 200) == 1 and requests_of(samples, "PutFile", 200) == 1


def test_a_refused_token_is_counted_with_its_status(wopi, testapp):
    testapp.get(wopi.url(token="not-a-token"), status=401)
    samples = metrics(testapp)
    assert requests_of(samples, "CheckFileInfo", 401) == 1
    assert requests_of(samples, "CheckFileInfo", 200) == 0


def test_operations_are_named_from_a_fixed_set(wopi, testapp, graph):
    wopi.lock("A")
    wopi.op("LOCK", **{"X-WOPI-Lock": "B", "X-WOPI-OldLock": "A"})
    wopi.op("NO_SUCH_THING")
    testapp.post(wopi.url(), status=400)  # POST without X-WOPI-Override
    graph.get("me/drive/root/children")
    graph.get("me/drive/items/nosuchitem/content")
    for n in range(5):  # paths, ids and overrides clients make up never become names
        testapp.get(f"/no/such/path/{n}", status=404)
        testapp.get(f"/wopi/files/nosuchfile{n}", status=401)
        wopi.op(f"MADE_UP_{n}")
    samples = metrics(testapp)
    assert requests_of(samples, "UnlockAndRelock", 200) == 1
    assert requests_of(samples, "unsupported", 501) == 6 and requests_of(samples, "unsupported", 400) == 1
    assert requests_of(samples, "graph GET children", 200) == 1
    assert requests_of(samples, "graph GET content", 404) == 1
    assert requests_of(samples, "unmatched", 404) == 5
    assert requests_of(samples, "CheckFileInfo", 401) == 5
    operations = {dict(labels)["operation"] for name, labels in samples if name == "wopihost_requests_total"}
    assert operations == {
        "Lock",
        "UnlockAndRelock",
        "unsupported",
        "graph GET children",
        "graph GET content",
        "unmatched",
        "CheckFileInfo",
    }


def test_proof_failures_are_counted(settings, clock, make_file):
    app = create_app(settings.with_changes(proof_keys="require"), clock)  # no discovery: every proof fails
    try:
        testapp = webtest.TestApp(app)
        file = make_file()
        wopi = WopiClient(testapp, file.id, app.extensions["wopihost"].issue_token(file.id, "alice", True).token)
        testapp.get(wopi.url(), status=500)
        testapp.get(wopi.url("/contents"), status=500)
        samples = metrics(testapp)
        assert value(samples, "wopihost_proof_failures_total") == 2
        assert requests_of(samples, "CheckFileInfo", 500) == 1
    finally:
        app.extensions["wopihost"].db.dispose()


def test_proofs_not_checked_are_not_failures(wopi, testapp):
    wopi.check_file_info()
    assert value(metrics(testapp), "wopihost_proof_failures_total") == 0


def test_a_held_lock_is_a_gauge_read_from_the_database(wopi, testapp, clock):
    assert value(metrics(testapp), "wopihost_locks_held", kind="wopi") == 0
    wopi.lock("L")
    samples = metrics(testapp)
    assert value(samples, "wopihost_locks_held", kind="wopi") == 1
    assert value(samples, "wopihost_database_up") == 1
    clock.advance(minutes=31)  # the lock has expired, though its row is still there
    assert value(metrics(testapp), "wopihost_locks_held", kind="wopi") == 0


def test_open_upload_sessions_and_their_bytes(graph, testapp, clock):
    created = graph.post_json("me/drive/root:/big.bin:/createUploadSession", {})
    assert created.status_int == 200
    assert graph.upload(created.json["uploadUrl"], b"z" * 1000, 0, 4000).status_int == 202
    samples = metrics(testapp)
    assert value(samples, "wopihost_upload_sessions", kind="graph") == 1
    assert value(samples, "wopihost_upload_session_bytes", kind="graph") == 1000
    assert value(samples, "wopihost_upload_sessions", kind="cspp") == 0
    clock.advance(hours=1)  # expired: no longer open
    samples = metrics(testapp)
    assert value(samples, "wopihost_upload_sessions", kind="graph") == 0
    assert value(samples, "wopihost_upload_session_bytes", kind="graph") == 0


def test_sweeps_are_counted_with_what_they_deleted(graph, app, testapp, services, clock):
    created = graph.post_json("me/drive/root:/big.bin:/createUploadSession", {})
    graph.upload(created.json["uploadUrl"], b"z" * 10, 0, 100)
    clock.advance(hours=2)  # past its expiry and PIECE_GRACE
    sweeper = Sweeper(services, 0.01, app.extensions["wopihost.metrics"].sweep_done).start()
    try:
        deadline = time.monotonic() + 60
        while value(metrics(testapp), "wopihost_gc_sweeps_total", result="ok") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sweeper.stop()
    samples = metrics(testapp)
    assert value(samples, "wopihost_gc_sweeps_total", result="ok") >= 1
    assert value(samples, "wopihost_gc_sweeps_total", result="failed") == 0
    assert value(samples, "wopihost_gc_deleted_total", kind="sessions") == 1
    assert value(samples, "wopihost_gc_last_sweep_timestamp_seconds") > time.time() - 60


def test_metrics_off(settings, clock, wopi):
    app = create_app(settings.with_changes(metrics=False), clock)
    try:
        webtest.TestApp(app).get("/metrics", status=404)
    finally:
        app.extensions["wopihost"].db.dispose()


def test_a_separate_address_serves_them_instead(settings, clock):
    port = free_port()
    app = create_app(settings.with_changes(metrics_bind=("127.0.0.1", port)), clock).start()
    try:
        testapp = webtest.TestApp(app)
        testapp.get("/healthz")
        testapp.get("/metrics", status=404)  # not on the server's own port
        samples = scrape(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        assert requests_of(samples, "healthz", 200) == 1 and requests_of(samples, "unmatched", 404) == 1
        assert value(samples, "wopihost_database_up") == 1
    finally:
        app.extensions["wopihost.metrics_server"].shutdown()
        app.extensions["wopihost"].db.dispose()


def test_an_address_another_program_holds_is_a_clear_error(settings, clock):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"WOPIHOST_METRICS_BIND: cannot listen on 127.0.0.1:{port}: "):
            create_app(settings.with_changes(metrics_bind=("127.0.0.1", port)), clock).start()


@pytest.mark.parametrize(
    "raw, parsed",
    [("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:9100", ("::1", 9100)), ("9100", ("127.0.0.1", 9100)), ("", None)],
)
def test_the_bind_setting(raw, parsed, tmp_path):
    settings = Settings.from_env(
        {"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_SECRET_KEY": "s" * 32, "WOPIHOST_METRICS_BIND": raw}
    )
    assert settings.metrics_bind == parsed


@pytest.mark.parametrize(
    "name, raw",
    [("METRICS_BIND", "localhost"), ("METRICS_BIND", "h:99999"), ("METRICS", "maybe"), ("LOG_FORMAT", "xml")],
)
def test_bad_settings_name_their_variable(name, raw, tmp_path):
    with pytest.raises(ConfigError, match=f"WOPIHOST_{name}:"):
        Settings.from_env(
            {"WOPIHOST_DATA_DIR": str(tmp_path), "WOPIHOST_SECRET_KEY": "s" * 32, f"WOPIHOST_{name}": raw}
        )


# -- tallies: requests are counted in plain Python and added to the metrics once a second ------------------


def flusher_threads(metrics: Metrics) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"{FLUSHER}-{id(metrics):x}"]


def test_tallies_make_the_histogram_that_observing_each_request_makes(services):
    metrics = Metrics(services)
    reference = Histogram("reference", "", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    # on a bound (counted in its bucket), just past one, the smallest and past the last finite bound
    durations = [0.0, 0.002, 0.0021, 0.004, 0.3, 0.5, 1, 59.9, 300, 301, 1e9]
    for seconds in durations:
        metrics.observe("GetFile", "200", seconds, 0, 0)
        reference.observe(seconds)
    samples = scrape(generate_latest(metrics.registry).decode())
    expected = {
        (sample.name.replace("reference", "wopihost_request_duration_seconds"), frozenset(sample.labels.items())): (
            sample.value
        )
        for sample in reference.collect()[0].samples
        if not sample.name.endswith("_created")
    }
    got = {
        (name, labels - {("operation", "GetFile")}): v
        for (name, labels), v in samples.items()
        if name.startswith("wopihost_request_duration_seconds")
        and not name.endswith("_created")
        and ("operation", "GetFile") in labels
    }
    assert got == pytest.approx(expected) and len(got) == len(LATENCY_BUCKETS) + 3  # buckets, +Inf, count, sum
    assert requests_of(samples, "GetFile", 200) == len(durations)


def test_tallies_reach_the_metrics_within_a_second_or_two_without_a_scrape(services):
    metrics = Metrics(services)
    assert not flusher_threads(metrics)
    metrics.observe("CheckFileInfo", "200", 0.001, 0, 700)
    metrics.observe("PutFile", "200", 0.01, 5000, 0)
    assert len(flusher_threads(metrics)) == 1  # one for the process, started by the first request

    def counted() -> dict:  # Counter.collect, not the registry, which would flush first
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for counter in (metrics.requests, metrics.bytes_in, metrics.bytes_out)
            for sample in counter.collect()[0].samples
        }

    deadline = time.monotonic() + 30
    while not counted() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests_of(counted(), "CheckFileInfo", 200) == 1 and requests_of(counted(), "PutFile", 200) == 1
    assert value(counted(), "wopihost_request_body_bytes_total", operation="PutFile") == 5000
    assert value(counted(), "wopihost_response_body_bytes_total", operation="CheckFileInfo") == 700
    # Idle, the thread ends; the next request starts another.
    deadline = time.monotonic() + 30
    while flusher_threads(metrics) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not flusher_threads(metrics)
    metrics.observe("CheckFileInfo", "200", 0.001, 0, 700)
    assert len(flusher_threads(metrics)) == 1
    assert requests_of(scrape(generate_latest(metrics.registry).decode()), "CheckFileInfo", 200) == 2


def test_a_process_that_exits_flushes_its_tallies(tmp_path):
    """A worker told to stop exits at once, before its next flush: what it counted is written as it exits."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    script = (
        "import types, sys\n"
        "from wopihost.metrics import Metrics\n"
        "metrics = Metrics(types.SimpleNamespace(db=None, clock=None))\n"
        "for _ in range(3): metrics.observe('Lock', '200', 0.003, 10, 0)\n"
        "sys.exit(0)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    samples = scrape(generate_latest(registry).decode())
    assert requests_of(samples, "Lock", 200) == 3
    assert value(samples, "wopihost_request_duration_seconds_bucket", operation="Lock", le="0.005") == 3
    assert value(samples, "wopihost_request_body_bytes_total", operation="Lock") == 30
