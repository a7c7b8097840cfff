"""A real gunicorn server (the `wopihost serve` command, two workers) on a free loopback port."""

import pytest

from wopihost.localserver import LocalServer


@pytest.fixture
def server(tmp_path, database):
    server = LocalServer.start(tmp_path, database)
    yield server
    server.stop()
    log = server.log_text()
    assert "Traceback" not in log, log
    assert "database is locked" not in log, log
