"""File sinks: a folder of PNGs (names sort in frame order) and H.264 MP4 via PyAV."""

from __future__ import annotations

import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from latentscape.errors import OutputError
from latentscape.sinks.base import FrameSink


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        if out.is_dir() and not any(out.iterdir()):
            return
        raise OutputError("already exists", path=out, hint="choose another output or pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{parent} is not a folder", path=out)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder: {err.strerror}", path=parent, hint="choose a writable location") from None
    if not os.access(parent, os.W_OK):
        raise OutputError("output folder is not writable", path=parent, hint="choose a writable location")


class PngSequenceSink(FrameSink):
    """``frame_00000.png``, ``frame_00001.png``, ... in ``folder`` (written to a
    temporary sibling folder, renamed at close)."""

    def __init__(self, folder: str | Path, *, overwrite: bool = False):
        self.folder = Path(folder)
        self.overwrite = overwrite
        _check_target(self.folder, overwrite)
        self._tmp: Path | None = None
        self._n = 0

    def open(self, width: int, height: int, fps: float) -> None:
        _check_target(self.folder, self.overwrite)
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.partial-", dir=self.folder.parent))
        except OSError as err:
            raise OutputError(f"cannot write: {err.strerror}", path=self.folder) from None
        self._size = (width, height)

    def write(self, rgb: np.ndarray) -> None:
        from PIL import Image

        assert self._tmp is not None, "open() first"
        try:
            Image.fromarray(rgb).save(self._tmp / f"frame_{self._n:05d}.png")
        except OSError as err:
            self.abort()
            raise OutputError(f"cannot write frame {self._n}: {err.strerror or err}", path=self.folder, hint="check free space and permissions") from None
        self._n += 1

    def close(self) -> None:
        if self._tmp is None:
            return
        if self.folder.exists():
            shutil.rmtree(self.folder) if self.folder.is_dir() else self.folder.unlink()
        os.replace(self._tmp, self.folder)
        self._tmp = None

    def abort(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class Mp4Sink(FrameSink):
    """H.264 (libx264, yuv420p) in MP4 through PyAV; written as a hidden temporary
    file and renamed into place when the stream is finalised."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, crf: int = 18):
        self.path = Path(path)
        self.overwrite = overwrite
        self.crf = crf
        _check_target(self.path, overwrite)
        try:
            import av  # noqa: F401
        except ImportError:
            raise OutputError("MP4 output needs PyAV", path=self.path, hint="pip install 'latentscape[video]' or write PNGs (an --out without .mp4)") from None
        self._container = None
        self._tmp: Path | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        import av

        if width % 2 or height % 2:
            raise OutputError(f"H.264 (yuv420p) needs an even width and height, got {width}x{height}", path=self.path,
                              hint="choose an even size, or write PNGs")
        _check_target(self.path, self.overwrite)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.partial-", suffix=".mp4", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # Deterministic bytes: one encoder thread, fixed options.
        stream.options = {"crf": str(self.crf), "preset": "medium", "threads": "1"}
        stream.thread_count = 1
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as err:
            self.abort()
            raise OutputError(f"cannot write video: {err}", path=self.path, hint="check free space and permissions") from None

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        self._tmp = None

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is discarded anyway
                pass
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
