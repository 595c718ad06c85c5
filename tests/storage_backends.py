"""Archive storage backends for tests: the local folder, and a real S3 protocol server (moto's standalone server).

No MinIO server package is reachable here; moto's server speaks the S3 protocol over HTTP, so
django-storages' S3 backend is exercised end to end, as with any S3-compatible store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.files.storage import storages

S3_CREDENTIALS = {"access_key": "medarchive-test", "secret_key": "medarchive-test-secret", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ}
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("moto_server did not start within 30 s")
    yield url
    process.terminate()
    process.wait(timeout=10)


def s3_storage_settings(endpoint: str, bucket: str) -> dict:
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "access_key": S3_CREDENTIALS["access_key"],
            "secret_key": S3_CREDENTIALS["secret_key"],
            "region_name": S3_CREDENTIALS["region_name"],
            "default_acl": None,
            "file_overwrite": True,
            "querystring_auth": False,
        },
    }


def use_s3_archive(settings, endpoint: str) -> str:
    import boto3

    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_CREDENTIALS["access_key"],
        aws_secret_access_key=S3_CREDENTIALS["secret_key"],
        region_name=S3_CREDENTIALS["region_name"],
    ).create_bucket(Bucket=bucket)
    settings.STORAGES = {**settings.STORAGES, "archive": s3_storage_settings(endpoint, bucket)}
    return bucket


def archive_names(alias: str = "archive") -> list[str]:
    """Every object name in a storage alias, whatever the backend (temporary names included)."""
    storage = storages[alias]
    if hasattr(storage, "bucket"):
        return sorted(obj.key for obj in storage.bucket.objects.all())
    root = Path(storage.location)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
