"""The sink contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class FrameSink:
    """Receives RGB frames (uint8 [H, W, 3]) of one fixed size, in order."""

    def open(self, width: int, height: int, fps: float) -> None:
        raise NotImplementedError

    def write(self, rgb: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (flush, rename into place)."""

    def abort(self) -> None:
        """Discard everything written so far; never leaves a partial output behind."""


def open_sink(out: str | Path, *, overwrite: bool = False) -> FrameSink:
    """A sink for ``out``: a live stream for ``rtmp://...``, ``*.m3u8`` (HLS) or ``*.fmp4.mp4``
    (see :mod:`latentscape.sinks.stream`); MP4 (H.264) when it ends in ``.mp4``; else a PNG folder."""
    from latentscape.sinks.files import Mp4Sink, PngSequenceSink
    from latentscape.sinks.stream import is_stream_target, open_stream_sink

    text = str(out)
    if is_stream_target(text):
        return open_stream_sink(text, overwrite=overwrite)
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        return Mp4Sink(out, overwrite=overwrite)
    return PngSequenceSink(out, overwrite=overwrite)
