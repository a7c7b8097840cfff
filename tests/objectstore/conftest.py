from .fixtures import bucket, ceph_rgw, s3  # noqa: F401
