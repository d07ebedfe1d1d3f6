"""Shipping a scene (and the files a job names) to workers by content hash.

A worker never reads a path only the driver has. The driver packs the scene bundle
(every file of its ``scene.lock`` plus the lock) into an uncompressed tar in memory and
puts it in Ray's object store; its **digest** is the sha256 of ``scene.lock``, which
pins every file's sha256. A worker unpacks it into ``<cache>/<digest>`` (written under a
temporary name, renamed into place, then verified against the lock and the digest) and
loads it from there; a worker whose cache already holds that digest, verified, does
not fetch the bytes at all. Other job inputs (a ``--camera-path`` file, a ``--stylizer``
folder) travel the same way, keyed by the sha256 of their file list and file hashes.

The cache is ``$LATENTSCAPE_FARM_CACHE`` on the worker's machine (default
``~/.cache/latentscape/farm``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from latentscape.errors import LockMismatchError, SceneError
from latentscape.scene.lock import LOCK_NAME, read_lock, sha256_file, verify_lock

CACHE_ENV = "LATENTSCAPE_FARM_CACHE"


def cache_root() -> Path:
    """Where this machine keeps shipped bundles."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "latentscape" / "farm")


@dataclass
class Payload:
    """A folder's bytes and the digest that names them. ``ref`` is where the bytes live
    for workers (a Ray object reference, kept in a list so Ray does not fetch it eagerly)."""

    kind: str
    """``scene``, ``folder`` or ``file``."""
    digest: str
    name: str
    """The file name (``file``) or folder name, kept for error messages."""
    data: bytes | None = field(default=None, repr=False)
    ref: list[Any] = field(default_factory=list, repr=False)

    def without_data(self) -> "Payload":
        return Payload(self.kind, self.digest, self.name, None, list(self.ref))


def _tar(root: Path, rels: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(rels):
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tree_digest(root: Path, rels: list[str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(rels):
        h.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return h.hexdigest()


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def scene_digest(root: Path) -> str:
    """The sha256 of ``scene.lock``: the digest a scene travels under."""
    return sha256_file(root / LOCK_NAME)


def pack_scene(root: str | Path) -> Payload:
    """Verify the bundle against its lock and pack exactly the locked files."""
    root = Path(root)
    if not (root / "scene.toml").is_file():
        raise SceneError("no scene bundle here (no scene.toml)", path=root,
                         hint="give a scene bundle folder; `latentscape train` writes one")
    verify_lock(root)  # a typed error here names the file and the fix, before any worker starts
    rels = [*read_lock(root), LOCK_NAME]
    return Payload("scene", scene_digest(root), root.name, _tar(root, rels))


def pack_path(path: str | Path) -> Payload:
    """A file or a folder (``--camera-path``, ``--stylizer``) by the hash of its contents."""
    path = Path(path)
    if path.is_dir():
        rels = _files_under(path)
        return Payload("folder", _tree_digest(path, rels), path.name, _tar(path, rels))
    if not path.is_file():
        raise SceneError("not found", path=path, hint="give a file or folder that exists on this machine")
    return Payload("file", _tree_digest(path.parent, [path.name]), path.name, _tar(path.parent, [path.name]))


def _valid(payload: Payload, target: Path) -> bool:
    if payload.kind == "scene":
        if not (target / LOCK_NAME).is_file() or scene_digest(target) != payload.digest:
            return False
        try:
            verify_lock(target)
        except (LockMismatchError, SceneError):
            return False
        return True
    return target.is_dir() and _tree_digest(target, _files_under(target)) == payload.digest


def materialize(payload: Payload, fetch: Callable[[Payload], bytes], root: Path | None = None) -> Path:
    """The local folder holding ``payload`` (``<root>/<kind>-<digest>``), unpacked from
    ``fetch(payload)`` unless the cache already holds it, verified. For a ``file`` the
    path of the file itself. Raises :class:`LockMismatchError` when the bytes do not match
    their digest."""
    root = root or cache_root()
    target = root / f"{payload.kind}-{payload.digest}"
    if not _valid(payload, target):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=root))
        try:
            with tarfile.open(fileobj=io.BytesIO(fetch(payload)), mode="r") as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, links out or device files
            if not _valid(payload, tmp):
                raise LockMismatchError(f"the shipped {payload.kind} {payload.name!r} does not match its digest "
                                        f"{payload.digest[:16]}", path=target,
                                        hint="the driver's copy changed while the job ran; run the job again")
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:  # another worker on this machine got there first
                if not _valid(payload, target):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target / payload.name if payload.kind == "file" else target
