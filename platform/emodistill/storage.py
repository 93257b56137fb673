"""Local paths and ``s3://`` URIs through one interface (fsspec), with atomic writes.

S3 credentials and endpoint come from the usual AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_ENDPOINT_URL`` for any S3-compatible store, ``AWS_REGION``/``AWS_DEFAULT_REGION``)
or explicit options (the ``--s3-*`` flags of the commands).
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec
from pydantic import Field

from emodistill.config import Config


class S3Options(Config):
    """Explicit S3 settings; anything left unset falls back to the AWS environment."""

    endpoint_url: str | None = Field(None, description="S3 endpoint (e.g. http://127.0.0.1:9000); env AWS_ENDPOINT_URL.")
    key: str | None = Field(None, description="Access key id; env AWS_ACCESS_KEY_ID.")
    secret: str | None = Field(None, description="Secret access key; env AWS_SECRET_ACCESS_KEY.")
    region: str | None = Field(None, description="Region; env AWS_REGION or AWS_DEFAULT_REGION.")

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments."""
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        options: dict[str, Any] = {}
        client: dict[str, Any] = {}
        if endpoint:
            client["endpoint_url"] = endpoint
        if region:
            client["region_name"] = region
        if client:
            options["client_kwargs"] = client
        if self.key:
            options["key"] = self.key
        if self.secret:
            options["secret"] = self.secret
        return options


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def get_fs(uri: str, s3: S3Options | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or URI."""
    uri = str(uri)
    options = (s3 or S3Options()).storage_options() if uri.startswith("s3://") else {}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    if not is_remote(uri):
        path = os.path.abspath(path)
    return fs, path


def join(base: str, *parts: str) -> str:
    return posixpath.join(str(base).rstrip("/"), *parts)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old object or the whole new one, never a part.

    Locally: a temporary file in the same directory, then ``os.replace``. On S3 a PUT (or
    a completed multipart upload) is atomic by itself.
    """
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def replace_dir(staged: str | os.PathLike, target: str | os.PathLike) -> str:
    """Move the finished local directory ``staged`` to ``target``, replacing what is there:
    the old directory is renamed aside first, so ``target`` is never a mix of both, and
    removed after. Both on one filesystem (stage next to the target). Returns ``target``."""
    target = Path(target).absolute()
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
    return str(target)


def pyarrow_fs(fs: fsspec.AbstractFileSystem):
    """A pyarrow filesystem over ``fs`` (for pyarrow.parquet and Ray Data)."""
    import pyarrow.fs as pafs

    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def cache_dir() -> Path:
    """Where remote models are copied to: ``EMODISTILL_CACHE`` or ~/.cache/emodistill."""
    return Path(os.environ.get("EMODISTILL_CACHE", Path.home() / ".cache" / "emodistill"))


def cached_copy(uri: str, s3: S3Options | None = None, marker: str = "config.json") -> str:
    """A local directory holding the remote prefix ``uri``, downloaded once per machine.

    Several processes on one node (Ray Train workers) may ask at once: one downloads
    under a file lock while the others wait for it, then all use the same copy. The copy
    is made in a temporary directory and renamed into place only when complete (it must
    hold ``marker``), so a crash never leaves a partial model that looks whole.
    """
    import fcntl

    target = cache_dir() / "models" / hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    if (target / marker).exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (target / marker).exists():  # another process finished it while we waited
            return str(target)
        fs, path = get_fs(uri, s3)
        if not fs.exists(path):
            raise FileNotFoundError(f"no model at {uri}")
        tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=target.parent))
        try:
            fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
            if not (tmp / marker).exists():
                raise FileNotFoundError(f"{uri} holds no {marker}")
            if target.exists():  # an incomplete copy of an older version of this code
                shutil.rmtree(target)
            try:
                os.replace(tmp, target)
            except OSError as err:  # a process without the lock (another host on shared disk) won
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (target / marker).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
