"""Artifact storage behind one interface, addressed by URI.

``open_store("file:///abs/dir")``, ``open_store("file://./relative")`` or a plain
path give a :class:`LocalStore`; ``open_store("s3://bucket/prefix")`` gives an
:class:`S3Store` (boto3; endpoint and credentials from the environment).

Contract shared by every store:
  * keys are ``/``-separated relative paths (no ``..``, no leading ``/``);
  * writes are atomic and visible-on-complete: a reader sees the old object or
    the whole new one, never a partial write (local: temp file + fsync +
    ``os.replace``; S3: single PUT or a multipart upload that is only visible
    after ``CompleteMultipartUpload``);
  * every object carries a SHA-256 checksum, verified on read
    (:class:`ChecksumError` on mismatch).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """A storage operation failed (missing object, bad key, backend error)."""


class ChecksumError(StorageError):
    """An object's content does not match the checksum recorded when it was written."""


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed in ``chunk_size`` chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}: use a relative a/b/c path without '..'")
    return key


def stream_to_file(
    dest: Path, chunks: Iterable[bytes], *, before_replace: Callable[[str], None] | None = None
) -> str:
    """Atomically write ``chunks`` to ``dest``; returns their hex SHA-256.

    The bytes go to a temp file beside ``dest`` (fsynced); ``before_replace(digest)``
    runs next and may raise (e.g. a checksum mismatch), in which case ``dest`` is left
    untouched and the temp file removed; only then is the temp file renamed over ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        digest = h.hexdigest()
        if before_replace is not None:
            before_replace(digest)
        os.replace(tmp, dest)
        return digest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checksum_check(expected: str | None, key: str, uri: str) -> Callable[[str], None]:
    """A ``before_replace`` hook raising ChecksumError unless the digest is ``expected``
    (no check when the object carries no checksum)."""

    def check(digest: str) -> None:
        if expected is not None and digest != expected:
            raise ChecksumError(f"checksum mismatch for {key!r} in {uri}")

    return check


class ArtifactStore(ABC):
    """A flat key -> bytes store rooted at ``uri``."""

    uri: str

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomically write ``data`` under ``key`` (replacing any old object)."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Read the object; raises StorageError if missing, ChecksumError if corrupt."""

    @abstractmethod
    def put_file(self, key: str, local_path: str | Path) -> None:
        """Atomically upload a local file (multipart for large files on S3)."""

    @abstractmethod
    def get_file(self, key: str, local_path: str | Path) -> None:
        """Download to ``local_path`` (atomically replaced), checksum verified."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a complete object exists under ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under ``prefix`` (complete objects only)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object if present."""

    def child(self, prefix: str) -> ArtifactStore:
        """A store rooted at ``{uri}/{prefix}``."""
        return open_store(f"{self.uri.rstrip('/')}/{_check_key(prefix.strip('/'))}")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def put_dir(self, prefix: str, local_dir: str | Path) -> list[str]:
        """Upload every file under ``local_dir`` to ``prefix/<relative path>``; returns the keys."""
        local_dir = Path(local_dir)
        keys = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{path.relative_to(local_dir).as_posix()}".lstrip("/")
            self.put_file(key, path)
            keys.append(key)
        return keys

    def get_dir(self, prefix: str, local_dir: str | Path) -> list[Path]:
        """Download every object under ``prefix/`` into ``local_dir``; returns the paths."""
        prefix = prefix.strip("/") + "/"
        out = []
        for key in self.list(prefix):
            dest = Path(local_dir) / key[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.get_file(key, dest)
            out.append(dest)
        return out


class LocalStore(ArtifactStore):
    """Files under a local directory. Checksums live in a ``.sha256`` sidecar per object."""

    _SIDECAR = ".sha256"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _atomic_write(self, dest: Path, chunks: Iterator[bytes]) -> str:
        """Write an object and its checksum sidecar; returns the SHA-256."""

        def write_sidecar(digest: str) -> None:
            # Sidecar first: a crash between the two replaces leaves a stale object
            # whose checksum mismatches (detected on read), never a silently wrong one.
            side_tmp = dest.parent / f".{dest.name}.sha256.part"
            side_tmp.write_text(digest)
            os.replace(side_tmp, dest.parent / f"{dest.name}{self._SIDECAR}")

        return stream_to_file(dest, chunks, before_replace=write_sidecar)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), iter([data]))

    def put_file(self, key: str, local_path: str | Path) -> None:
        with open(local_path, "rb") as f:
            self._atomic_write(self._path(key), iter(lambda: f.read(1 << 20), b""))

    def _expected_digest(self, path: Path) -> str | None:
        side = path.parent / f"{path.name}{self._SIDECAR}"
        return side.read_text().strip() if side.exists() else None

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"no object {key!r} in {self.uri}") from None
        expected = self._expected_digest(path)
        if expected is not None and sha256_bytes(data) != expected:
            raise ChecksumError(f"checksum mismatch for {key!r} in {self.uri}")
        return data

    def get_file(self, key: str, local_path: str | Path) -> None:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} in {self.uri}")
        with open(path, "rb") as f:
            stream_to_file(Path(local_path).resolve(), iter(lambda: f.read(1 << 20), b""),
                           before_replace=checksum_check(self._expected_digest(path), key, self.uri))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = []
        for p in self.root.rglob("*"):
            if not p.is_file() or p.name.endswith(self._SIDECAR) or p.name.endswith(".part"):
                continue
            key = p.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        (path.parent / f"{path.name}{self._SIDECAR}").unlink(missing_ok=True)


def open_store(uri: str | Path, *, multipart_threshold_mb: int = 64) -> ArtifactStore:
    """Open the store for ``uri``: ``file://...``, a plain path, or ``s3://bucket/prefix``.

    ``multipart_threshold_mb`` (S3 only; ``cfg.storage.multipart_threshold_mb``): files
    larger than this are uploaded as multipart uploads with parts of this size.
    """
    uri = str(uri)
    if uri.startswith("s3://"):
        from components.storage_s3 import S3Store  # boto3 is only imported when used

        return S3Store(uri, multipart_threshold_mb=multipart_threshold_mb)
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        # file://./runs (relative) and file:///abs/path
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        return LocalStore(path)
    if "://" in uri:
        raise StorageError(f"unsupported storage URI {uri!r}: use file:// or s3://")
    return LocalStore(uri)
