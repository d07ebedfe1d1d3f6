"""``scene.lock``: the sha256 of every file of a scene bundle, and the one resolver
for every path a bundle names.

Loading a scene verifies it; ``latentscape scene lock DIR`` writes it. Weights,
latent programs (which live in ``scene.toml``) and adapters are versioned by these
hashes, and the scene version is the hash of the lock itself.

:func:`resolve_in_bundle` is how every path in ``scene.toml`` (``[field] weights``,
``[cameras.paths]``, ``[adapters] file``, ``[guardrails] slate`` and ``audit_log``,
``[generators] path``, ``[[layers]] mesh``/``texture``, ``[stylizer] path``) becomes a
file: relative, inside the bundle after symlinks are resolved, and in a place the lock
hashes (not hidden, not ``__pycache__``); anything else is a SceneError naming the key.
Lock entries go through the same test. The one file a bundle may name that is not an
asset is its ``[guardrails] audit_log`` (an output): it is not hashed.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path, PurePosixPath

import tomli_w

from latentscape.config import hashed_in_lock as _hashed_rel
from latentscape.config import resolve_in_bundle
from latentscape.errors import LockMismatchError, SceneError

__all__ = ["LOCK_NAME", "bundle_files", "compute_lock", "declared_outputs", "read_lock", "resolve_in_bundle",
           "sha256_file", "verify_lock", "write_lock"]

LOCK_NAME = "scene.lock"
LOCK_FORMAT = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def declared_outputs(root: Path) -> set[str]:
    """Bundle-relative files the scene writes rather than reads (``[guardrails] audit_log``):
    they change while the scene runs, so the lock does not hash them."""
    try:
        cfg = tomllib.loads((root / "scene.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return set()
    guard = cfg.get("guardrails")
    log = guard.get("audit_log") if isinstance(guard, dict) else None
    if isinstance(log, str) and log and not PurePosixPath(log).is_absolute():
        return {PurePosixPath(log.replace("\\", "/")).as_posix()}
    return set()


def bundle_files(root: Path) -> list[str]:
    """Every file of the bundle (posix paths relative to ``root``) except the lock itself
    and the outputs the scene declares."""
    out = []
    skip = {LOCK_NAME, *declared_outputs(root)}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or rel.as_posix() in skip:
            continue
        if not _hashed_rel(rel.parts):
            continue
        out.append(rel.as_posix())
    return out


def compute_lock(root: Path) -> dict[str, str]:
    files = bundle_files(root)
    for rel in files:  # a link out of the bundle is refused now, not at the next load
        resolve_in_bundle(root, rel, "bundle file", kind="any", toml=root / rel)
    return {rel: sha256_file(root / rel) for rel in files}


def write_lock(root: str | Path) -> Path:
    """Hash every file of the bundle into ``scene.lock`` (written atomically)."""
    root = Path(root)
    if not (root / "scene.toml").is_file():
        raise SceneError("no scene.toml here", path=root, hint="point at a scene bundle folder")
    data = {"format": LOCK_FORMAT, "assets": compute_lock(root)}
    tmp = root / f".{LOCK_NAME}.tmp"
    tmp.write_text(tomli_w.dumps(data))
    tmp.replace(root / LOCK_NAME)
    return root / LOCK_NAME


def read_lock(root: Path) -> dict[str, str]:
    path = root / LOCK_NAME
    if not path.is_file():
        raise LockMismatchError("scene.lock is missing", path=path, hint=f"run `latentscape scene lock {root}` after checking the assets")
    try:
        if path.stat().st_size > 64 * 2**20:
            raise LockMismatchError("scene.lock is larger than 64 MiB", path=path,
                                    hint=f"run `latentscape scene lock {root}`")
        data = tomllib.loads(path.read_text())
    except RecursionError:
        raise LockMismatchError("malformed lock file: nested too deeply", path=path,
                                hint=f"run `latentscape scene lock {root}`") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        raise LockMismatchError(f"malformed lock file: {err}", path=path, hint=f"run `latentscape scene lock {root}`") from None
    assets = data.get("assets")
    if not isinstance(assets, dict) or not all(isinstance(v, str) for v in assets.values()):
        raise LockMismatchError("lock file has no [assets] table of sha256 strings", path=path, hint=f"run `latentscape scene lock {root}`")
    for rel in assets:
        # a lock entry names a file of this bundle or nothing: never /etc/passwd, ../x or a link out
        resolve_in_bundle(root, rel, "scene.lock entry", kind="any", toml=path,
                          error=LockMismatchError)
    return assets


def verify_lock(root: str | Path) -> str:
    """Check every file against ``scene.lock``; return the scene version (hash of the lock)."""
    root = Path(root)
    assets = read_lock(root)
    fix = f"if the change is intended, run `latentscape scene lock {root}`; otherwise restore the file"
    for rel, digest in assets.items():
        p = root / rel
        if not p.is_file():
            raise LockMismatchError(f"{rel} is listed in scene.lock but missing", path=p, hint=fix)
        if sha256_file(p) != digest:
            raise LockMismatchError(f"{rel} does not match its sha256 in scene.lock", path=p, hint=fix)
    extra = sorted(set(bundle_files(root)) - set(assets))
    if extra:
        raise LockMismatchError(f"{extra[0]} is not in scene.lock" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
                                path=root / extra[0], hint=fix)
    return hashlib.sha256((root / LOCK_NAME).read_bytes()).hexdigest()[:16]
