"""Shard sets on an S3-compatible object store (AWS S3, MinIO, Ceph, a local ``moto`` server).

A set URL is ``s3://<bucket>/<prefix>/<dataset>/<split>``; its objects mirror a local set folder
(``shards/README.md``): ``NNNNN.tar``, ``NNNNN.parquet``, ``NNNNN_stats.json``, ``manifest.json``,
``catalog.parquet``. The shard contract holds on the store too: :func:`upload_set` puts each
shard's ``_stats.json`` LAST, and :func:`list_finished` lists only the tars whose stats object
exists, so readers never see a half-uploaded shard.

Credentials and endpoint come only from the environment (never from configs, logs or params):
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or any source of boto3's default chain: a
profile, an instance role), ``AWS_DEFAULT_REGION``, and for a non-AWS store the endpoint in
``AWS_ENDPOINT_URL`` (honoured by boto3 itself) or ``STCNN_S3_ENDPOINT_URL`` (which wins).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from pipeline.lake.contract import SET_FILES, finished_names, is_shard_tar, upload_order

S3_PREFIX = "s3://"
ENDPOINT_ENV = "STCNN_S3_ENDPOINT_URL"
CRED_FIX = ("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS "
            "store)")

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


class ObjectStoreError(RuntimeError):
    """An object-store call failed for a reason the user fixes (bucket, credentials, endpoint)."""


def normalize(url: "str | os.PathLike") -> str:
    """``str(url)``, repairing ``s3:/bucket/...`` (what ``Path("s3://bucket/...")`` makes)."""
    s = os.fspath(url)
    if s.startswith("s3:/") and not s.startswith(S3_PREFIX):
        s = S3_PREFIX + s[len("s3:/"):]
    return s


def is_s3(url: "str | os.PathLike") -> bool:
    """True for ``s3://bucket/...`` (also the ``s3:/bucket/...`` a ``Path`` turns it into)."""
    try:
        return normalize(url).startswith(S3_PREFIX)
    except TypeError:
        return False


def split_url(url: "str | os.PathLike") -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``); the key has no leading/trailing slash."""
    s = normalize(url)
    if not s.startswith(S3_PREFIX):
        raise ValueError(f"{s!r} is not an s3:// URL")
    bucket, _, key = s[len(S3_PREFIX):].partition("/")
    if not bucket:
        raise ValueError(f"{s!r} names no bucket (expected s3://<bucket>/<prefix>)")
    return bucket, key.strip("/")


def join(url: str, *parts: str) -> str:
    return "/".join([normalize(url).rstrip("/"), *(p.strip("/") for p in parts)])


def endpoint_url() -> str | None:
    """The endpoint: ``$STCNN_S3_ENDPOINT_URL``, else ``$AWS_ENDPOINT_URL_S3`` /
    ``$AWS_ENDPOINT_URL`` (boto3 reads those itself too), else None (AWS)."""
    for var in (ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def s3_client():
    """A boto3 S3 client configured from the environment only (one per process and setting, so
    DataLoader workers never share a parent's connections)."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url()
    key = (os.getpid(), endpoint, os.environ.get("AWS_ACCESS_KEY_ID"),
           os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN"),
           os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_PROFILE"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                         read_timeout=60)
            client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg)
            _clients[key] = client
    return client


def _error(exc: BaseException, url: str, action: str) -> Exception:
    """A botocore error -> an :class:`ObjectStoreError` (or FileNotFoundError) naming the URL and
    the fix. Never includes credentials."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    where = f" at endpoint {endpoint_url()}" if endpoint_url() else ""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ObjectStoreError(f"{action} {url}: no S3 credentials found: {CRED_FIX}")
    if isinstance(exc, EndpointConnectionError):
        return ObjectStoreError(f"{action} {url}: cannot reach the S3 endpoint{where} ({exc}); "
                                f"check AWS_ENDPOINT_URL / {ENDPOINT_ENV}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        bucket = split_url(url)[0]
        if code == "NoSuchBucket":
            return ObjectStoreError(f"{action} {url}: bucket {bucket!r} does not exist{where}: "
                                    f"create it (aws s3 mb s3://{bucket}) or fix the URL")
        if code in ("NoSuchKey", "404", "NotFound"):
            return FileNotFoundError(f"{action} {url}: no such object{where}")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                    "ExpiredToken", "InvalidToken"):
            return ObjectStoreError(f"{action} {url}: access refused{where} ({code}): check the "
                                    f"credentials and their rights on bucket {bucket!r}: "
                                    f"{CRED_FIX}")
        return ObjectStoreError(f"{action} {url}: S3 error {code}{where}: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def open_stream(url: "str | os.PathLike") -> IO[bytes]:
    """A readable (not seekable) binary stream of one object: boto3 ``get_object()["Body"]``.
    Raises FileNotFoundError for a missing object, :class:`ObjectStoreError` otherwise."""
    url = normalize(url)
    bucket, key = split_url(url)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    except _boto_errors() as e:
        raise _error(e, url, "reading") from e


def fetch(url: "str | os.PathLike") -> IO[bytes]:
    """A seekable local copy of one object, positioned at 0: a real temporary file (with a
    ``fileno``, what :mod:`pipeline.lake.tario` needs), deleted when closed."""
    url = normalize(url)
    body = open_stream(url)
    tmp = tempfile.TemporaryFile(prefix="stcnn-s3-")
    try:
        try:
            shutil.copyfileobj(body, tmp, 1024 * 1024)
        except _boto_errors() as e:
            raise _error(e, url, "reading") from e
        finally:
            body.close()
        tmp.seek(0)
        return tmp
    except BaseException:
        tmp.close()
        raise


def read_bytes(url: "str | os.PathLike") -> bytes:
    with open_stream(url) as body:
        return body.read()


def _list(url: str) -> dict[str, dict]:
    """Objects directly under the set URL (not in sub-prefixes): name -> list entry."""
    bucket, prefix = split_url(url)
    prefix = f"{prefix}/" if prefix else ""
    out: dict[str, dict] = {}
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/")
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"][len(prefix):]] = obj
    except _boto_errors() as e:
        raise _error(e, url, "listing") from e
    return out


def check_access(url: "str | os.PathLike") -> None:
    """Raise :class:`ObjectStoreError` (naming the fix) unless the bucket of ``url`` exists and
    the credentials may list it: one cheap request, made before any long job writes there."""
    url = normalize(url)
    bucket, prefix = split_url(url)
    try:
        s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except _boto_errors() as e:
        raise _error(e, url, "accessing") from e


def list_finished(s3_url: "str | os.PathLike") -> list[str]:
    """URLs of the finished shards of a set, sorted: ``NNNNN.tar`` objects whose
    ``NNNNN_stats.json`` object exists (empty when the prefix holds none)."""
    url = normalize(s3_url).rstrip("/")
    names = _list(url)
    return [join(url, n) for n in finished_names(names)]


def download_prefix(url: "str | os.PathLike", dest: "str | os.PathLike", *,
                    tars: bool = True) -> int:
    """Copy every object under ``url`` (a lake or a set, sub-prefixes included) to the same
    relative paths under ``dest``; ``tars=False`` leaves the shard tars out (the catalog files
    alone). Returns the number of objects copied; a prefix with none is an error."""
    url = normalize(url).rstrip("/")
    bucket, prefix = split_url(url)
    prefix = f"{prefix}/" if prefix else ""
    dest = Path(dest)
    client, n = s3_client(), 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                parts = Path(rel).parts
                if not rel or rel.endswith("/") or ".." in parts or Path(rel).is_absolute():
                    continue
                if not tars and rel.endswith(".tar"):
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(target))
                n += 1
    except _boto_errors() as e:
        raise _error(e, url, "downloading") from e
    if not n:
        raise FileNotFoundError(f"{url}: no objects there; check the URL (a lake root or a set "
                                "s3://bucket/prefix/<dataset>/<split>)")
    return n


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _same(client, bucket: str, key: str, listed: dict | None, path: Path, md5: str) -> bool:
    """The object holds ``path``'s bytes: same size and (its ETag or its ``md5`` metadata)."""
    if listed is None or int(listed["Size"]) != path.stat().st_size:
        return False
    if listed.get("ETag", "").strip('"') == md5:
        return True
    head = client.head_object(Bucket=bucket, Key=key)  # multipart upload: ETag is not the MD5
    return head.get("Metadata", {}).get("md5") == md5


@dataclasses.dataclass
class UploadResult:
    url: str
    shards_uploaded: int = 0
    shards_skipped: int = 0       # already on the store with the same bytes
    shards_unfinished: int = 0    # local tars without their stats file: not uploaded
    files_uploaded: int = 0
    bytes_uploaded: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def upload_set(local_set_dir: "str | os.PathLike", s3_url: "str | os.PathLike") -> dict:
    """Upload the finished shards of a local set folder to ``s3_url`` honouring the contract:
    per shard the tar, then its parquet, then its ``_stats.json`` LAST; then ``manifest.json``
    and ``catalog.parquet`` (when present). Shards already there with the same bytes (size and
    MD5) are skipped; a changed shard has its remote stats removed first, so it reads as
    unfinished until its new stats land. Returns counts (:class:`UploadResult` as a dict)."""
    src = Path(local_set_dir)
    url = normalize(s3_url).rstrip("/")
    if not src.is_dir():
        raise FileNotFoundError(f"upload_set: local shard set {src} does not exist")
    bucket, prefix = split_url(url)
    client = s3_client()
    res = UploadResult(url)
    remote = _list(url)  # also checks bucket and credentials before anything is sent

    def put(path: Path, name: str, md5: str | None = None) -> None:
        md5 = md5 or _md5(path)
        key = f"{prefix}/{name}" if prefix else name
        try:
            client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"md5": md5}})
        except _boto_errors() as e:
            raise _error(e, join(url, name), "uploading") from e
        except Exception as e:  # boto3's S3UploadFailedError wraps the ClientError
            cause = e.__cause__ or e.__context__
            if isinstance(cause, _boto_errors()):
                raise _error(cause, join(url, name), "uploading") from e
            raise
        res.files_uploaded += 1
        res.bytes_uploaded += path.stat().st_size

    for tar in sorted(p for p in src.glob("*.tar") if is_shard_tar(p.name)):
        _, parquet_name, stats_name = upload_order(tar.name)
        stats, parquet = src / stats_name, src / parquet_name
        if not stats.is_file():
            res.shards_unfinished += 1
            continue
        md5 = _md5(tar)
        tkey = f"{prefix}/{tar.name}" if prefix else tar.name
        if (stats_name in remote
                and _same(client, bucket, tkey, remote.get(tar.name), tar, md5)):
            res.shards_skipped += 1
            continue
        if stats_name in remote:  # a changed shard: unfinished until re-uploaded
            skey = f"{prefix}/{stats_name}" if prefix else stats_name
            client.delete_object(Bucket=bucket, Key=skey)
        put(tar, tar.name, md5)
        if parquet.is_file():
            put(parquet, parquet.name)
        put(stats, stats.name)  # LAST: marks the shard finished
        res.shards_uploaded += 1
    for name in SET_FILES:
        if (src / name).is_file():
            put(src / name, name)
    return res.as_dict()


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))
