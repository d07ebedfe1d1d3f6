"""File sinks: a folder of PNGs (names sort in frame order) and H.264 MP4 via PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from latentscape.errors import OutputError
from latentscape.outputs import Staged, write_error
from latentscape.sinks.base import FrameSink


class PngSequenceSink(FrameSink):
    """``frame_00000.png``, ``frame_00001.png``, ... in ``folder``, written to a hidden
    temporary sibling folder and renamed into place at close, with the
    ``.latentscape-output`` marker (see :mod:`latentscape.outputs`: ``overwrite``
    replaces only a folder latentscape wrote)."""

    def __init__(self, folder: str | Path, *, overwrite: bool = False):
        self.folder = Path(folder)
        self.overwrite = overwrite
        self._stage = Staged(self.folder, kind="dir", force=overwrite, command="render")
        self._tmp: Path | None = None
        self._n = 0

    def open(self, width: int, height: int, fps: float) -> None:
        self._tmp = self._stage.begin()
        self._n = 0
        self._size = (width, height)

    def write(self, rgb: np.ndarray) -> None:
        from PIL import Image

        assert self._tmp is not None, "open() first"
        try:
            Image.fromarray(rgb).save(self._tmp / f"frame_{self._n:05d}.png")
        except OSError as err:
            self.abort()
            raise OutputError(f"cannot write frame {self._n}: {err.strerror or err}; nothing was written",
                              path=self.folder, hint="check free space and permissions") from None
        self._n += 1

    def close(self) -> None:
        if self._tmp is None:
            return
        self._tmp = None
        self._stage.commit()

    def abort(self) -> None:
        self._tmp = None
        self._stage.abort()


class Mp4Sink(FrameSink):
    """H.264 (libx264, yuv420p) in MP4 through PyAV; written as a hidden temporary
    file and renamed into place when the stream is finalised."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, crf: int = 18):
        self.path = Path(path)
        self.overwrite = overwrite
        self.crf = crf
        self._stage = Staged(self.path, kind="file", force=overwrite, command="render", suffix=".mp4")
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
        self._tmp = self._stage.begin()
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
        except OSError as err:
            self.abort()
            raise write_error(self.path, err) from None
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
            raise write_error(self.path, err, "cannot write video") from None

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except OSError as err:  # the end of the stream does not fit (disk full): no half file
            self.abort()
            raise write_error(self.path, err, "cannot finish the video") from None
        except BaseException:
            self.abort()
            raise
        self._container = None
        self._tmp = None
        self._stage.commit()

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is discarded anyway
                pass
            self._container = None
        self._tmp = None
        self._stage.abort()
