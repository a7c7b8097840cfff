"""Pytest fixtures for a real S3 object store: Ceph's RADOS Gateway, started once per test process (ceph_rgw.py;
each pytest-xdist worker has its own).

tests/conftest.py makes them available to every test.
Without Ceph installed the tests that use them are skipped, or fail under CI, which installs it (.ci/run).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from . import ceph_rgw as ceph

# RGW has no `rgw dns name` here, so it cannot tell a bucket in the Host header: path-style only
S3_CONFIG = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"})


def s3_client(gateway: ceph.Gateway):
    return boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=gateway.access_key,
        aws_secret_access_key=gateway.secret_key,
        region_name=gateway.region,
        config=S3_CONFIG,
    )


@pytest.fixture(scope="session")
def ceph_rgw(tmp_path_factory) -> Iterator[ceph.Gateway]:
    """One throwaway Ceph cluster for this process's session, its S3 user owning no bucket at first."""
    missing = ceph.missing_binaries()
    if missing:
        reason = f"Ceph is not installed (no {', '.join(missing)}); `{ceph.INSTALL_HINT}` to run this test"
        if os.environ.get("CI"):
            pytest.fail(reason + " (.ci/run installs it from Debian packages)")
        pytest.skip(reason)
    cluster = ceph.Cluster(tmp_path_factory.mktemp("ceph-rgw") / "cluster")
    gateway = cluster.start()
    try:
        yield gateway
    finally:
        cluster.stop()


@pytest.fixture
def s3(ceph_rgw):
    """A boto3 S3 client for the session's gateway."""
    return s3_client(ceph_rgw)


@pytest.fixture
def bucket(s3) -> str:
    """A new empty bucket of the test's own."""
    name = f"test-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=name)
    return name
