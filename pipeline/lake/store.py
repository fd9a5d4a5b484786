"""Shard sets on an S3-compatible object store (AWS S3, MinIO, Ceph, a local ``moto`` server),
through ``fsspec``'s ``s3fs``.

A set URL is ``s3://<bucket>/<prefix>/<dataset>/<split>``; its objects mirror a local set folder
(``shards/README.md``): ``NNNNN.tar``, ``NNNNN.parquet``, ``NNNNN_stats.json``, ``manifest.json``,
``catalog.parquet``. The shard contract holds on the store too: :func:`upload_set` puts each
shard's ``_stats.json`` LAST (fsspec's ``put`` has no order), and
:func:`list_finished` lists only the tars whose stats object exists, so readers never see a
half-uploaded shard; a re-run skips the shards whose objects already hold the same bytes (size,
then the ETag: an MD5, or for a multipart object the MD5 of its parts' MD5s and ``-<parts>``).
Everything else (listing, reads, uploads, retries, multipart) is s3fs's.

Credentials and endpoint come only from the environment (never from configs, logs or params):
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or any source of botocore's default chain: a
profile, an instance role), ``AWS_DEFAULT_REGION``, and for a non-AWS store the endpoint in
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` or ``STCNN_S3_ENDPOINT_URL`` (which wins).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import IO, Any

from pipeline.lake.contract import SET_FILES, finished_names, is_shard_tar, upload_order

S3_PREFIX = "s3://"
ENDPOINT_ENV = "STCNN_S3_ENDPOINT_URL"
CRED_FIX = ("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS "
            "store)")

_filesystems: dict[tuple, Any] = {}
_filesystems_lock = threading.Lock()


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
    ``$AWS_ENDPOINT_URL``, else None (AWS)."""
    for var in (ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def filesystem():
    """An ``s3fs.S3FileSystem`` configured from the environment only: one per process and
    setting (fsspec's own instance cache is keyed on arguments, not on the credentials in the
    environment), without a listings cache (a shard's stats object must be seen when it lands),
    so DataLoader workers never share a parent's connections."""
    import s3fs

    endpoint = endpoint_url()
    key = (os.getpid(), endpoint, os.environ.get("AWS_ACCESS_KEY_ID"),
           os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN"),
           os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_PROFILE"))
    with _filesystems_lock:
        fs = _filesystems.get(key)
        if fs is None:
            fs = s3fs.S3FileSystem(
                endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False,
                # 5 attempts in all (botocore's "max_attempts" counts retries, one more):
                # a store that stays unreachable is reported within ~15 s of back-off
                config_kwargs={"retries": {"total_max_attempts": 5, "mode": "standard"},
                               "connect_timeout": 10, "read_timeout": 60})
            _filesystems[key] = fs
    return fs


def _path(url: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key`` (s3fs's path), checking the URL."""
    bucket, key = split_url(url)
    return f"{bucket}/{key}" if key else bucket


def _code(exc: BaseException) -> str:
    """The S3 error code behind an s3fs exception (its ``__cause__`` is botocore's error)."""
    seen = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        seen = seen.__cause__ or seen.__context__
    return ""


def _error(exc: BaseException, url: str, action: str) -> Exception:
    """An s3fs/botocore error -> an :class:`ObjectStoreError` (or FileNotFoundError) naming the
    URL and the fix. Never includes credentials."""
    from botocore.exceptions import (EndpointConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    where = f" at endpoint {endpoint_url()}" if endpoint_url() else ""
    bucket = split_url(url)[0]
    code = _code(exc)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ObjectStoreError(f"{action} {url}: no S3 credentials found. Fix: {CRED_FIX}")
    if isinstance(exc, EndpointConnectionError):
        return ObjectStoreError(f"{action} {url}: cannot reach the S3 endpoint "
                                f"{endpoint_url() or '(AWS default)'} ({exc}). Fix: start the "
                                f"store or correct AWS_ENDPOINT_URL / {ENDPOINT_ENV}")
    if code == "NoSuchBucket":
        return ObjectStoreError(f"{action} {url}: bucket {bucket!r} does not exist{where}. Fix: "
                                f"create it (aws s3 mb s3://{bucket}) or fix the URL")
    if isinstance(exc, FileNotFoundError) or code in ("NoSuchKey", "404", "NotFound"):
        return FileNotFoundError(f"{action} {url}: no such object{where}")
    if isinstance(exc, PermissionError) or code in (
            "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken",
            "InvalidToken"):
        return ObjectStoreError(f"{action} {url}: access refused{where} ({code or exc}). Fix: "
                                f"check the credentials and their rights on bucket {bucket!r}: "
                                f"{CRED_FIX}")
    return ObjectStoreError(f"{action} {url}: S3 error {code or type(exc).__name__}{where}: {exc}")


def _store_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError, OSError)


def open_stream(url: "str | os.PathLike") -> IO[bytes]:
    """A readable, seekable binary stream of one object (s3fs's file: ranged GETs read ahead in
    8 MiB blocks, so memory stays bounded and no temporary file is written; its ``size`` is the
    object's). Raises FileNotFoundError for a missing object, :class:`ObjectStoreError`
    otherwise."""
    url = normalize(url)
    try:
        return filesystem().open(_path(url), "rb", block_size=8 << 20, cache_type="readahead")
    except _store_errors() as e:
        raise _error(e, url, "reading") from e


def read_bytes(url: "str | os.PathLike") -> bytes:
    url = normalize(url)
    try:
        return filesystem().cat_file(_path(url))
    except _store_errors() as e:
        raise _error(e, url, "reading") from e


def _list(url: str) -> dict[str, dict]:
    """Objects directly under the set URL (not in sub-prefixes): name -> s3fs entry (``size``,
    ``ETag``); empty for a prefix that holds none; an error for a missing bucket."""
    path = _path(url)
    try:
        entries = filesystem().ls(path, detail=True, refresh=True)
    except FileNotFoundError as e:
        if _code(e) == "NoSuchBucket":
            raise _error(e, url, "listing") from e
        return {}  # an empty prefix
    except _store_errors() as e:
        raise _error(e, url, "listing") from e
    prefix = path.rstrip("/") + "/"
    return {e["name"][len(prefix):]: e for e in entries
            if e.get("type") == "file" and e["name"].startswith(prefix)}


def check_access(url: "str | os.PathLike") -> None:
    """Raise :class:`ObjectStoreError` (naming the fix) unless the bucket of ``url`` exists and
    the credentials may list it: one cheap request, made before any long job writes there."""
    _list(normalize(url).rstrip("/"))


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
    path = _path(url)
    prefix = path + "/"
    dest = Path(dest)
    fs, n = filesystem(), 0
    try:
        try:
            found = fs.find(path)
        except FileNotFoundError as e:
            if _code(e) == "NoSuchBucket":
                raise
            found = []
        for name in found:
            rel = name[len(prefix):] if name.startswith(prefix) else ""
            parts = Path(rel).parts
            if not rel or rel.endswith("/") or ".." in parts or Path(rel).is_absolute():
                continue
            if not tars and rel.endswith(".tar"):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(target))
            n += 1
    except _store_errors() as e:
        raise _error(e, url, "downloading") from e
    if not n:
        raise FileNotFoundError(f"{url}: no objects there; check the URL (a lake root or a set "
                                "s3://bucket/prefix/<dataset>/<split>)")
    return n


UPLOAD_PART_SIZE = 50 << 20  # multipart upload part size (objects of 2 parts or more)
_MAX_PARTS = 10_000          # S3's limit on the parts of one object
_MIB = 1 << 20


def _part_size(size: int) -> int:
    """The part size :func:`upload_set` uploads an object of ``size`` bytes with."""
    return max(UPLOAD_PART_SIZE, -(-size // _MAX_PARTS))


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives ``path``'s bytes uploaded in parts of ``part_size``: the MD5 of the
    concatenated binary MD5s of the parts, then ``-<number of parts>``."""
    digests, n = hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            left = part_size
            while left:
                chunk = f.read(min(left, 8 * _MIB))
                if not chunk:
                    break
                part.update(chunk)
                left -= len(chunk)
            if left == part_size:  # nothing read: the end
                break
            digests.update(part.digest())
            n += 1
    return f"{digests.hexdigest()}-{n}"


def _etag_matches(etag: str, path: Path, md5: str) -> bool:
    """``etag`` (an object's, unquoted) is the one of ``path``'s bytes: their MD5 for a single
    PUT; for a multipart upload (``<hex>-N``) the multipart rule, trying the part sizes that give
    N parts among ours, the AWS CLI/boto3 defaults (8 and 16 MiB) and the size split in N whole
    MiB."""
    if "-" not in etag:
        return etag == md5
    head, _, count = etag.rpartition("-")
    if not count.isdigit() or int(count) < 1 or len(head) != 32:
        return False
    n, size = int(count), path.stat().st_size
    candidates = {_part_size(size), 8 * _MIB, 16 * _MIB, max(1, -(-size // (n * _MIB))) * _MIB}
    return any(-(-size // p) == n and _multipart_etag(path, p) == etag
               for p in sorted(candidates))


def _same(fs, rpath: str, listed: dict | None, path: Path, md5: str) -> bool:
    """The object holds ``path``'s bytes: same size and (its ETag, by the single or multipart
    rule, or its ``md5`` metadata)."""
    if listed is None or int(listed["size"]) != path.stat().st_size:
        return False
    if _etag_matches(listed.get("ETag", "").strip('"'), path, md5):
        return True
    return fs.metadata(rpath).get("md5") == md5  # an ETag of another rule (e.g. SSE-KMS)


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
    fs = filesystem()
    base = _path(url)
    res = UploadResult(url)
    remote = _list(url)  # also checks bucket and credentials before anything is sent

    def put(path: Path, name: str, md5: str | None = None) -> None:
        md5 = md5 or _md5(path)
        try:
            fs.put_file(str(path), f"{base}/{name}", Metadata={"md5": md5},
                        chunksize=_part_size(path.stat().st_size))
        except _store_errors() as e:
            raise _error(e, join(url, name), "uploading") from e
        res.files_uploaded += 1
        res.bytes_uploaded += path.stat().st_size

    for tar in sorted(p for p in src.glob("*.tar") if is_shard_tar(p.name)):
        _, parquet_name, stats_name = upload_order(tar.name)
        stats, parquet = src / stats_name, src / parquet_name
        if not stats.is_file():
            res.shards_unfinished += 1
            continue
        md5 = _md5(tar)
        if (stats_name in remote
                and _same(fs, f"{base}/{tar.name}", remote.get(tar.name), tar, md5)):
            res.shards_skipped += 1
            continue
        if stats_name in remote:  # a changed shard: unfinished until re-uploaded
            fs.rm_file(f"{base}/{stats_name}")
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
