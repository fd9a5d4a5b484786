"""Where shard sets live, a local folder or an object store: the one module that tells the two
kinds of location apart.

The object store is an S3-compatible one (AWS S3, MinIO, Ceph, a local ``moto`` server), reached
through ``fsspec``'s ``s3fs``. Every other module names a location (a path, or an ``s3://`` URL)
and reads, lists and writes it through these functions:

    locate(root, *parts)     a local Path (``~`` expanded), or an ``s3://`` URL string
    is_set / parent          a shard set (local folder; a prefix not naming a ``.tar``), a parent
    open_read(url)           a binary reader: the file itself (unbuffered: the tar reader reads
                             large blocks), or an object streamed in ranged reads
    list_finished(url)       the finished shards of a set (contract: its stats file exists)
    writer_for(out)          where a job writes sets (the lake, or a staging folder) and
                             ``publish`` (nothing, or :func:`upload_set`: stats last)
    local_copy(url)          a local folder holding a lake (itself, or a downloaded copy)

One job, long because both kinds of location are answered here, so that no other module asks.

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

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from pipeline.core.errors import InputMissing, PipelineError
from pipeline.lake.contract import SET_FILES, finished_names, is_shard_tar, upload_order
from pipeline.core.config import ConfigError

S3_PREFIX = "s3://"
ENDPOINT_ENV = "STCNN_S3_ENDPOINT_URL"
CRED_FIX = ("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS "
            "store)")

_filesystems: dict[tuple, Any] = {}
_filesystems_lock = threading.Lock()


class ObjectStoreError(PipelineError, RuntimeError):
    """An object-store call failed for a reason the user fixes (bucket, credentials, endpoint)."""


class NotLocalError(ObjectStoreError, ValueError):
    """A lake on the object store was to be rewritten in place, which works on a local one only."""


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
        raise ConfigError(f"{s!r} is not an s3:// URL")
    bucket, _, key = s[len(S3_PREFIX):].partition("/")
    if not bucket:
        raise ConfigError(f"{s!r} names no bucket (expected s3://<bucket>/<prefix>)")
    return bucket, key.strip("/")


def join(url: str, *parts: str) -> str:
    return "/".join([normalize(url).rstrip("/"), *(p.strip("/") for p in parts)])


def locate(root: "str | os.PathLike", *parts: str) -> "Path | str":
    """``root/parts``: an ``s3://`` URL (a str, no trailing slash) for a location on the object
    store, else a local :class:`Path` (``~`` expanded)."""
    if is_s3(root):
        return join(root, *parts) if parts else normalize(root).rstrip("/")
    return Path(root).expanduser().joinpath(*parts)


def is_set(url: "str | os.PathLike") -> bool:
    """``url`` names a shard set rather than one shard: an existing local folder; on the object
    store any prefix not ending in ``.tar`` (a prefix does not exist apart from its objects:
    the shards it holds are listed, :func:`list_finished`)."""
    loc = locate(url)
    return not loc.endswith(".tar") if isinstance(loc, str) else loc.is_dir()


def parent(url: "str | os.PathLike") -> str:
    """The folder or prefix holding ``url`` (``.`` for a bare local name)."""
    loc = locate(url)
    return loc.rsplit("/", 1)[0] if isinstance(loc, str) else str(loc.parent)




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
    """An s3fs/botocore error -> an :class:`ObjectStoreError` (or :class:`InputMissing`) naming the
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
        return InputMissing(f"{action} {url}: no such object{where}")
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


def open_read(url: "str | os.PathLike") -> IO[bytes]:
    """A readable, seekable binary stream of one file or object. A local file is opened
    unbuffered (its reader asks for large blocks; a buffer would only copy them). An object is
    s3fs's file: ranged GETs read ahead in 8 MiB blocks, so memory stays bounded and no
    temporary file is written; its ``size`` is the object's. Raises FileNotFoundError for a
    missing file or object, :class:`ObjectStoreError` for a store that refuses."""
    if not is_s3(url):
        return open(os.fspath(url), "rb", buffering=0)
    url = normalize(url)
    try:
        return filesystem().open(_path(url), "rb", block_size=8 << 20, cache_type="readahead")
    except _store_errors() as e:
        raise _error(e, url, "reading") from e


def read_bytes(url: "str | os.PathLike") -> bytes:
    """The bytes of one file or object (FileNotFoundError when it is missing)."""
    if not is_s3(url):
        return Path(url).read_bytes()
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


def list_finished(set_url: "str | os.PathLike") -> list[str]:
    """Paths or URLs of the finished shards of a set, sorted: ``NNNNN.tar`` files or objects
    whose ``NNNNN_stats.json`` exists (empty when the folder or prefix holds none, or is
    missing)."""
    loc = locate(set_url)
    return [str(locate(loc, n)) for n in finished_names(list_files(loc))]


def list_files(url: "str | os.PathLike") -> list[str]:
    """Names of the files (symlinks to files included) in a folder, or of the objects directly
    under a prefix; none when it is missing or empty (a missing bucket is an error)."""
    loc = locate(url)
    if isinstance(loc, str):
        return list(_list(loc))
    try:
        with os.scandir(loc) as entries:
            return [e.name for e in entries if e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []


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
        raise InputMissing(f"{url}: no objects there; check the URL (a lake root or a set "
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


@dataclasses.dataclass
class LakeWriter:
    """Where a job writes shard sets: ``root``, a local folder (the lake itself, or the staging
    folder of a lake on the object store, ``staged``), and :meth:`publish`, which puts a written
    set at its place in the lake."""

    lake: "Path | str"
    root: Path
    staged: bool = False
    kept: bool = False          # a staging folder the caller named (kept afterwards)

    def location(self, *parts: str) -> "Path | str":
        return locate(self.lake, *parts)

    def publish(self, local_set: "str | os.PathLike", *parts: str) -> dict | None:
        """Put the set written at ``local_set`` at ``lake/parts``: nothing to do for a local
        lake (None); an upload, stats last, for one on the object store (its counts,
        :func:`upload_set`)."""
        if not self.staged:
            return None
        return upload_set(local_set, self.location(*parts))


@contextlib.contextmanager
def writer_for(out: "str | os.PathLike",
               staging: "str | os.PathLike | None" = None) -> Iterator[LakeWriter]:
    """The :class:`LakeWriter` of the lake ``out``. A local lake is written in place (a
    ``staging`` folder is an error there: nothing is staged). For one on the object store the
    bucket and credentials are checked first (before any long job), and the sets are written
    to ``staging``, else to a temporary folder removed at the end."""
    lake = locate(out)
    if isinstance(lake, Path):
        if staging is not None:
            raise PipelineError(f"a staging folder ({staging}) is only used for a lake on an "
                                f"object store, not for the folder {out}",
                                "drop --staging, or write to s3://<bucket>/<prefix>")
        yield LakeWriter(lake, lake)
        return
    check_access(lake)
    if staging is not None:
        yield LakeWriter(lake, Path(staging), staged=True, kept=True)
        return
    with tempfile.TemporaryDirectory(prefix="stcnn-staging-") as tmp:
        yield LakeWriter(lake, Path(tmp), staged=True)


@dataclasses.dataclass
class LocalCopy:
    """A local folder holding a lake (``path``, a str) and ``show``, which names the lake
    instead of that folder in a text (the identity for a local lake)."""

    path: str
    show: Callable[[Any], str] = str


@contextlib.contextmanager
def local_copy(url: "str | os.PathLike", *, sets: "list[str] | None" = None, tars: bool = True,
               staging: "str | os.PathLike | None" = None, rewrite: bool = False,
               prefix: str = "stcnn-lake-") -> Iterator[LocalCopy]:
    """A local folder holding the lake (or set) ``url``: a local one is itself, as given; one
    on the object store is downloaded (only ``sets``, ``<dataset>/<split>`` under it, when
    given; no shard tars with ``tars=False``) to ``staging``, else to a temporary folder
    (``prefix``) removed at the end. ``rewrite=True`` (the caller writes there) is refused for
    a lake on the object store, before anything is downloaded: :class:`NotLocalError`."""
    if not is_s3(url):
        yield LocalCopy(os.fspath(url))
        return
    url = normalize(url).rstrip("/")
    if rewrite:
        raise NotLocalError(f"{url} is on an object store: a local copy of it would be "
                            "rewritten, not the lake")
    with contextlib.ExitStack() as stack:
        dest = (str(staging) if staging is not None else
                stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        for s in sets or [""]:
            download_prefix(join(url, s) if s else url, Path(dest) / s, tars=tars)
        yield LocalCopy(dest, lambda text: str(text).replace(dest, url))
