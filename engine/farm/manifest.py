"""The farm folder: frames, their checksums, and ``manifest.json``.

::

    OUT/
      manifest.json            the job and every frame's state (rewritten atomically)
      frames/frame_00000.png   frame 0 (the names PngSequenceSink writes)
      frames/frame_00000.png.sha256   "<sha256>  frame_00000.png" (sha256sum -c reads it)
      audit.jsonl              guardrail decisions of the frames kept (unless --audit-log)

A frame is written under a temporary name and renamed, then its sidecar the same way, so
a frame with a sidecar whose hash matches its bytes is whole. That check, not the
manifest, decides what a rerun skips: a driver killed between a frame and the next
manifest write loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentscape.errors import OutputError

MANIFEST = "manifest.json"
FORMAT = 1
FRAMES = "frames"


def frame_name(index: int) -> str:
    return f"frame_{index:05d}.png"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def job_key(job: dict[str, Any]) -> str:
    """What decides a frame's pixels, hashed: a folder holds the frames of one job."""
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FrameRecord:
    status: str = "missing"
    """``done``, ``failed`` or ``missing`` (not rendered yet, or its file did not verify)."""
    sha256: str | None = None
    attempts: int = 0
    worker: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    ms: float | None = None
    tried: list[str] | None = None
    """Workers that failed this frame (a retry goes to another one when it can)."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None or k in ("status", "attempts", "error")}


class FarmFolder:
    """``OUT``: frames, sidecars and the manifest of one job."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.frames_dir = self.out / FRAMES
        self.manifest_path = self.out / MANIFEST
        self.job: dict[str, Any] = {}
        self.frames: dict[int, FrameRecord] = {}
        self.exports: list[str] = []
        self.started: float | None = None
        self._saved = 0.0

    # ---- reading
    def read(self) -> bool:
        """Load ``manifest.json``; False when there is none. A malformed one is an
        :class:`OutputError` naming it."""
        if not self.manifest_path.is_file():
            return False
        try:
            data = json.loads(self.manifest_path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            self.job = dict(data["job"])
            self.frames = {int(k): FrameRecord(**v) for k, v in data.get("frames", {}).items()}
            self.exports = list(data.get("exports", []))
            self.started = data.get("started")
        except (ValueError, KeyError, TypeError) as err:
            raise OutputError(f"not a farm manifest: {err}", path=self.manifest_path,
                              hint="choose another --out, or pass --force to start this folder over") from None
        return True

    def frame_path(self, index: int) -> Path:
        return self.frames_dir / frame_name(index)

    def verify(self, index: int) -> str | None:
        """The frame's sha256 when its file and sidecar are present and agree, else None."""
        path = self.frame_path(index)
        side = path.with_name(path.name + ".sha256")
        try:
            want = side.read_text().split()[0]
            got = hashlib.sha256(path.read_bytes()).hexdigest()
        except (OSError, IndexError):
            return None
        return got if got == want else None

    # ---- writing
    def prepare(self, job: dict[str, Any], *, force: bool) -> None:
        """Make OUT hold this job: a new folder, or the same job's folder to resume.
        Another job's folder is an error unless ``force`` (then its frames are dropped)."""
        existing = self.read() if self.out.exists() else False
        if self.out.exists() and not self.out.is_dir():
            raise OutputError("is a file, not a farm folder", path=self.out, hint="choose another --out")
        if existing and self.job.get("key") != job["key"] and not force:
            raise OutputError(f"holds frames of another job (scene, cameras or options differ: {self.job.get('key')} "
                              f"!= {job['key']})", path=self.out,
                              hint="choose another --out, or pass --force to start this folder over")
        if not existing and self.out.is_dir() and any(self.out.iterdir()) and not force:
            raise OutputError("already exists and is not a farm folder", path=self.out,
                              hint="choose another --out, or pass --force to replace it")
        if force and (not existing or self.job.get("key") != job["key"]):
            self.frames = {}
            self.exports = []
            if self.frames_dir.is_dir():
                for p in self.frames_dir.iterdir():
                    p.unlink()
        try:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create the farm folder: {err.strerror}", path=self.out,
                              hint="choose a writable location") from None
        self.job = job
        self.started = self.started or time.time()

    def write_frame(self, index: int, png: bytes, sha256: str) -> None:
        """Frame bytes, then the sidecar, each under a temporary name and renamed."""
        if hashlib.sha256(png).hexdigest() != sha256:
            raise OutputError(f"frame {index} arrived corrupted (sha256 mismatch)", path=self.frame_path(index))
        path = self.frame_path(index)
        try:
            _atomic_write(path, png)
            _atomic_write(path.with_name(path.name + ".sha256"), f"{sha256}  {path.name}\n".encode())
        except OSError as err:
            raise OutputError(f"cannot write frame {index}: {err.strerror or err}", path=path,
                              hint="check free space and permissions") from None

    def save(self, *, every: float = 0.0) -> None:
        """Rewrite ``manifest.json`` atomically (at most once per ``every`` seconds)."""
        now = time.monotonic()
        if every and now - self._saved < every:
            return
        self._saved = now
        data = {"format": FORMAT, "job": self.job, "started": self.started, "updated": time.time(),
                "summary": self.summary(), "exports": self.exports,
                "frames": {str(i): self.frames[i].to_json() for i in sorted(self.frames)}}
        _atomic_write(self.manifest_path, (json.dumps(data, indent=1) + "\n").encode())

    # ---- state
    def record(self, index: int) -> FrameRecord:
        return self.frames.setdefault(index, FrameRecord())

    def summary(self) -> dict[str, int]:
        n = int(self.job.get("frames", 0))
        done = sum(1 for i in range(n) if self.frames.get(i, FrameRecord()).status == "done")
        failed = sum(1 for i in range(n) if self.frames.get(i, FrameRecord()).status == "failed")
        return {"frames": n, "done": done, "failed": failed, "missing": n - done - failed}
