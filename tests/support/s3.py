"""A local S3 store for the tests: a ``moto`` server on 127.0.0.1 (in this process, or as a
child process that a test may kill), fake credentials only, and a boto3 client as an oracle
independent of the s3fs code under test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from support import free_port

BUCKET = "lake"
# a secret no other string of a run can contain by chance (moto accepts any credentials)
SECRET = f"stcnn-secret-{uuid.uuid4().hex}"
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "AKIASTCNNTEST0000001", "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1"}
# no credentials or endpoint of this machine's user leak into the tests
CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "STCNN_S3_ENDPOINT_URL",
           "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI")


def set_store_env(mp: pytest.MonkeyPatch, endpoint: str, nowhere: Path) -> None:
    """Point the AWS_* variables at ``endpoint`` with the fake credentials; no config file,
    profile or instance metadata of this machine is read (``nowhere`` does not exist)."""
    for var in CLEARED:
        mp.delenv(var, raising=False)
    for k, v in FAKE_ENV.items():
        mp.setenv(k, v)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)  # read by boto3 itself
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    mp.setenv("AWS_CONFIG_FILE", str(nowhere))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


def client(endpoint: str | None = None):
    """A boto3 client on the store: the environment's (default), or ``endpoint`` with the fake
    credentials."""
    import boto3

    from pipeline.lake.store import endpoint_url

    if endpoint is None:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url())
    return boto3.session.Session(
        aws_access_key_id=FAKE_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=FAKE_ENV["AWS_DEFAULT_REGION"]).client("s3", endpoint_url=endpoint)


def keys(c, prefix: str, bucket: str = BUCKET) -> list[str]:
    pages = c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


@contextlib.contextmanager
def threaded_store(tmp: Path) -> Iterator[str]:
    """A moto server in this process; the environment points at it; bucket ``lake`` made.
    Yields the endpoint URL."""
    import moto.server as moto_server  # the test extra

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            set_store_env(mp, endpoint, tmp / "none")
            client().create_bucket(Bucket=BUCKET)
            yield endpoint
    finally:
        server.stop()


def start_moto_process(log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """A moto server as a child process (``env`` on top of this one's, e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT="0"`` to check credentials); returns it and its endpoint once
    it answers. The caller kills it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
