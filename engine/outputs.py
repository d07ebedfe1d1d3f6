"""Every output latentscape writes is complete or absent, and ``--force`` replaces only what latentscape wrote.

One module, used by every command that writes files (render's sinks, train, import,
distill, the make_adapter and demo_layer recipes):

* **Staging.** A folder output (PNG frames, a scene bundle, an imported generator, ...)
  is built in a hidden temporary sibling (``.NAME.partial-XXXX``) and renamed into
  place when complete, with a marker file :data:`MARKER` (``.latentscape-output``:
  JSON with the command and the top-level entries written). A single-file output
  (MP4, an adapter) is written to a hidden temporary sibling and renamed. On any
  failure (an exception, a full disk, SIGINT, SIGTERM turned into ``SystemExit`` by
  :mod:`latentscape.interrupts`) the temporary output is removed, and so are the parent
  folders this output created; an output that was there before stays untouched.
* **Refusals** (:class:`OutputError`, before any work): an existing output without
  ``force``; with ``force``, a non-empty folder without the marker or holding entries
  the marker does not list, a file where a folder output goes, anything that is not
  a regular file for a single-file output; and always a symbolic link, a device, FIFO
  or socket, ``/``, the home folder, the current folder or one of its parents.

Scene bundles skip dot-files in ``scene.lock``, so the marker inside a bundle does not
change its version.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import json
import os
import shutil
import stat
import tempfile
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from latentscape.errors import OutputError

MARKER = ".latentscape-output"
"""Marker file in every folder latentscape writes (JSON, see :func:`write_marker`)."""
MARKER_FORMAT = "latentscape-output-1"
_MAX_MARKER_BYTES = 1 << 20

Kind = Literal["dir", "file"]

_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
_FORCE_HINT = "--force only replaces outputs latentscape wrote; choose another output, or move this one away yourself"


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be written over (None if it may)."""
    real = path.resolve()
    if real == Path(real.anchor):
        return "the filesystem root"
    try:
        if real == Path.home().resolve():
            return "your home folder"
    except RuntimeError:  # no home folder known
        pass
    cwd = Path.cwd().resolve()
    if real == cwd:
        return "the current folder"
    if cwd.is_relative_to(real):
        return "a parent of the current folder"
    return None


def read_marker(folder: str | Path) -> dict | None:
    """The marker of ``folder`` if it holds a valid one (a regular file, not a link), else None."""
    path = Path(folder) / MARKER
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_MARKER_BYTES:
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    entries = data.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return data


def write_marker(folder: str | Path, command: str, entries: list[str] | None = None) -> Path:
    """Write :data:`MARKER` into ``folder``, listing ``entries`` (default: its top-level
    entries now; call it when the folder is complete)."""
    from latentscape import __version__

    folder = Path(folder)
    entries = sorted(e for e in (os.listdir(folder) if entries is None else entries) if e != MARKER)
    data = {"format": MARKER_FORMAT, "tool": "latentscape", "version": __version__, "command": command,
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "entries": entries}
    path = folder / MARKER
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def check_output(out: str | Path, *, force: bool = False, kind: Kind = "dir") -> None:
    """Refuse (:class:`OutputError`) unless ``out`` may be written: absent, an empty folder
    (``kind="dir"``), or with ``force`` an output latentscape wrote (see the module docstring).

    Nothing is created or changed."""
    out = Path(out)
    if not os.path.lexists(out):
        anc = _first_existing(out.parent if str(out.parent) else Path("."))
        anc = anc if str(anc) else Path(".")
        if not anc.is_dir():
            raise OutputError(f"{anc} is not a folder", path=out, hint="choose an output inside a folder")
        if not os.access(anc, os.W_OK | os.X_OK):
            raise OutputError("output folder is not writable", path=anc, hint="choose a writable location")
        return
    st = os.lstat(out)
    if stat.S_ISLNK(st.st_mode):
        raise OutputError("is a symbolic link; latentscape never writes through or replaces a link", path=out,
                          hint="give the real path of a new output")
    reason = _protected(out)
    if reason is not None:
        raise OutputError(f"is {reason}; latentscape never writes over it", path=out,
                          hint="choose a new output, e.g. --out ./render")
    if stat.S_ISDIR(st.st_mode):
        if kind == "file":
            raise OutputError("is a folder", path=out, hint="give a file name (or remove the folder yourself)")
        try:
            entries = set(os.listdir(out))
        except OSError as err:
            raise OutputError(f"cannot read the existing output: {err.strerror}", path=out) from None
        if not entries:
            return
        if not force:
            raise OutputError("already exists", path=out, hint="choose another output or pass --force to replace it")
        marker = read_marker(out)
        if marker is None:
            raise OutputError(f"is not empty and has no {MARKER} marker (latentscape did not write it)", path=out,
                              hint=_FORCE_HINT)
        extra = sorted(entries - set(marker["entries"]) - {MARKER})
        if extra:
            shown = ", ".join(repr(e[:40]) for e in extra[:3]) + (", ..." if len(extra) > 3 else "")
            raise OutputError(f"holds entries latentscape did not write ({shown})", path=out, hint=_FORCE_HINT)
        return
    if stat.S_ISREG(st.st_mode):
        if not force:
            raise OutputError("already exists", path=out, hint="choose another output or pass --force to replace it")
        if kind == "dir":
            raise OutputError("is a file; this output is a folder", path=out, hint=_FORCE_HINT)
        return
    raise OutputError("is a device, FIFO or socket; latentscape never writes over it", path=out,
                      hint="choose a regular file or folder as the output")


def open_resumable(out: str | Path, *, command: str, entries: list[str]) -> list[Path]:
    """Make ``out`` for a command that fills it over several runs and resumes (``distill``):
    it must be absent, empty, or a folder this kind of output wrote (its marker lists no
    fewer entries than are there); links, devices and protected folders are refused as by
    :func:`check_output`. Writes the marker (listing ``entries``) at once; returns the
    folders created (for :func:`remove_created`)."""
    out = Path(out)
    if os.path.lexists(out):
        check_output(out, force=True, kind="dir")
    created = make_parents(out)
    try:
        write_marker(out, command, entries)
    except OSError as err:
        remove_created(created)
        raise write_error(out, err) from None
    return created


def make_parents(folder: str | Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first (for :func:`remove_created`)."""
    folder = Path(folder) if str(folder) else Path(".")
    missing: list[Path] = []
    p = folder
    while not os.path.lexists(p) and p.parent != p:
        missing.append(p)
        p = p.parent
    if os.path.lexists(p) and not p.is_dir():
        raise OutputError(f"{p} is not a folder", path=folder, hint="choose an output inside a folder")
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            remove_created(created)
            raise OutputError(f"cannot create the output folder: {err.strerror}", path=d,
                              hint="choose a writable location") from None
        created.append(d)
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders :func:`make_parents` created, innermost first, where they are still empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def is_write_error(err: BaseException) -> bool:
    """An OSError that means the output cannot be written (disk full, quota, read-only, permissions)."""
    return isinstance(err, OSError) and err.errno in _WRITE_ERRNOS


def write_error(out: str | Path, err: OSError, what: str = "cannot write") -> OutputError:
    """The one-line :class:`OutputError` for an OSError while writing ``out``."""
    reason = err.strerror or str(err) or type(err).__name__
    return OutputError(f"{what}: {reason}; nothing was written", path=out, hint="check free space and permissions")


_LIVE: "weakref.WeakSet[Staged]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import (os.umask can only be read by setting it)


class Staged:
    """One output being written: ``begin()`` -> a temporary path to write, ``commit()``
    renames it into place (with the marker for a folder), ``abort()`` removes it and the
    parent folders it created. ``__init__`` checks the output (:func:`check_output`)."""

    def __init__(self, out: str | Path, *, kind: Kind = "dir", force: bool = False, command: str = "", suffix: str = ""):
        self.out = Path(out)
        self.kind = kind
        self.force = force
        self.command = command
        self.suffix = suffix if suffix else ("" if kind == "dir" else self.out.suffix)
        check_output(self.out, force=force, kind=kind)
        self.tmp: Path | None = None
        self.created: list[Path] = []

    def begin(self) -> Path:
        check_output(self.out, force=self.force, kind=self.kind)
        parent = self.out.parent if str(self.out.parent) else Path(".")
        self.created = make_parents(parent)
        name = self.out.name if self.kind == "dir" else self.out.stem
        try:
            if self.kind == "dir":
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent))
            else:
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.partial-", suffix=self.suffix, dir=parent)
                os.close(fd)
                self.tmp = Path(tmp)
        except OSError as err:
            self.abort()
            raise write_error(self.out, err) from None
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self.tmp

    def commit(self) -> Path:
        if self.tmp is None:
            raise RuntimeError("commit() without begin()")
        try:
            check_output(self.out, force=self.force, kind=self.kind)  # again: the output may have changed meanwhile
            # mkdtemp/mkstemp made it private (0700 / 0600); the output gets the modes a plain
            # mkdir/open would have given it under this process's umask
            os.chmod(self.tmp, 0o777 & ~_UMASK if self.kind == "dir" else 0o666 & ~_UMASK)
            if self.kind == "dir":
                write_marker(self.tmp, self.command)
                old = None
                if os.path.lexists(self.out):
                    # Move the old output aside first: it is never half-deleted if the new one cannot land.
                    old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
                    os.replace(self.out, old / "x")
                try:
                    os.replace(self.tmp, self.out)
                except BaseException:
                    if old is not None:
                        os.replace(old / "x", self.out)
                        old.rmdir()
                    raise
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.tmp, self.out)
        except OSError as err:
            self.abort()
            raise write_error(self.out, err, "cannot finish writing") from None
        except BaseException:
            self.abort()
            raise
        self.tmp = None
        self.created = []
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return self.out

    def abort(self) -> None:
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                try:
                    tmp.unlink()
                except OSError:
                    pass
        remove_created(self.created)
        self.created = []
        with _LIVE_LOCK:
            _LIVE.discard(self)


@contextmanager
def staged(out: str | Path, *, kind: Kind = "dir", force: bool = False, command: str = "",
           suffix: str = "") -> Iterator[Path]:
    """``with staged(out, force=..., command="train") as tmp:`` write into ``tmp``; on a clean
    exit it becomes ``out`` (with the marker, for a folder); on any error nothing is left
    (an OSError from a full disk or a read-only folder becomes :class:`OutputError`)."""
    st = Staged(out, kind=kind, force=force, command=command, suffix=suffix)
    tmp = st.begin()
    try:
        yield tmp
    except OSError as err:
        st.abort()
        if is_write_error(err):
            raise write_error(out, err) from None
        raise
    except BaseException:
        st.abort()
        raise
    st.commit()


@atexit.register
def _abort_live() -> None:
    """Backstop at interpreter exit: any output still being written is removed."""
    for st in list(_LIVE):
        st.abort()
