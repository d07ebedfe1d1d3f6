"""Live stream sinks: HLS and fragmented MP4 in a folder, RTMP push to a server.

Every stream sink encodes in its own sender thread, fed by a bounded queue of
``queue_size`` frames. The frame loop never waits for the network or the encoder:
when the queue is full the *oldest* queued frame is dropped (counted in
``stats["dropped"]``), so a slow consumer costs frames and never memory, and the
live picture stays as fresh as possible. Frame timestamps come from the frame's
position in the stream (dropped frames leave a gap), so playback keeps real time.

Failure policy (see docs/delivery.md):

* **open**: the output is checked and, for RTMP, connected once, synchronously. An
  unwritable folder or an unreachable server raises :class:`OutputError` at
  ``open()``: a typo in a URL fails at once instead of streaming into the void.
* **after open**, RTMP: a server that goes away is reconnected with exponential
  backoff (``backoff_s`` .. ``max_backoff_s``), logged and counted in
  ``stats["reconnects"]``; frames that arrive meanwhile are dropped and counted.
  Other sinks of the same loop are unaffected (each sink has its own thread).
* **after open**, files (HLS, fMP4): a write error stops that sink; the next
  ``write()`` raises :class:`OutputError`.
* **close/abort**: a live stream's published part cannot be taken back, so
  ``abort()`` finalises like ``close()`` (segments and playlist end valid,
  ``#EXT-X-ENDLIST`` written). On SIGTERM (the handler is installed at the first
  ``open()`` when SIGTERM still has its default action, in the main thread) the
  process raises ``SystemExit(143)``; ``FrameLoop.run`` then aborts its sinks, and an
  ``atexit`` hook finalises any stream sink still open.

Stream files are written in place (a player may read them while they grow), unlike
the MP4/PNG file sinks that rename into place at close. HLS segments and the
playlist are written under temporary names and renamed (``hls_flags temp_file``),
so a reader never sees half a segment.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import threading
import time
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from latentscape.errors import OutputError
from latentscape.sinks.base import FrameSink

log = logging.getLogger("latentscape.sinks.stream")

_OPEN_SINKS: "weakref.WeakSet[_EncodedStreamSink]" = weakref.WeakSet()
_SIGTERM_INSTALLED = False
_STOP = object()


def _sigterm(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)


def _install_sigterm() -> None:
    """SIGTERM -> SystemExit in the main thread, so sinks are closed by ``finally``/atexit."""
    global _SIGTERM_INSTALLED
    if _SIGTERM_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _sigterm)
    except (ValueError, OSError):  # not the main interpreter / unsupported
        return
    _SIGTERM_INSTALLED = True


@atexit.register
def _close_open_sinks() -> None:
    for sink in list(_OPEN_SINKS):
        try:
            sink.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("closing %s at exit failed", sink)


def _need_av(target: Any):
    try:
        import av
    except ImportError:
        raise OutputError("streaming needs PyAV", path=str(target), hint="pip install 'latentscape[video]'") from None
    return av


class _EncodedStreamSink(FrameSink):
    """H.264 through PyAV in a sender thread fed by a bounded queue (drop-oldest)."""

    format: str = ""
    reconnect: bool = False

    def __init__(self, target: str, *, queue_size: int = 8, gop_s: float = 1.0, crf: int = 23,
                 preset: str = "veryfast", close_timeout_s: float = 30.0):
        if queue_size < 1:
            raise OutputError(f"queue_size must be >= 1, got {queue_size}", path=target)
        self.target = target
        self.queue_size = queue_size
        self.gop_s = gop_s
        self.crf = crf
        self.preset = preset
        self.close_timeout_s = close_timeout_s
        self.stats = {"written": 0, "encoded": 0, "dropped": 0, "reconnects": 0, "errors": 0}
        """written: frames handed to ``write``; encoded: frames encoded and muxed;
        dropped: frames lost to a full queue or a disconnected server; reconnects:
        successful reconnections; errors: failed sends or connection attempts."""
        self.connected = False
        self.last_packet_time: float | None = None
        """time.perf_counter() when the last packet reached the muxer (latency benches)."""
        self._q: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._container = None
        self._stream = None
        self._closed = True
        _need_av(target)

    # ---- subclass points
    def _open_container(self):
        raise NotImplementedError

    def _stream_options(self) -> dict[str, str]:
        return {}

    # ---- contract
    def open(self, width: int, height: int, fps: float) -> None:
        if width % 2 or height % 2:
            raise OutputError(f"H.264 (yuv420p) needs an even width and height, got {width}x{height}",
                              path=self.target, hint="choose an even size")
        if not fps > 0:
            raise OutputError(f"fps must be positive, got {fps}", path=self.target)
        self.size, self.fps = (width, height), float(fps)
        self.rate = Fraction(fps).limit_denominator(1001)
        self._connect()  # raises OutputError: unreachable server, unwritable folder
        self._q = queue.Queue(maxsize=self.queue_size)
        self._index = 0
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name=f"stream-sink {self.target}", daemon=True)
        self._thread.start()
        _OPEN_SINKS.add(self)
        _install_sigterm()

    def write(self, rgb: np.ndarray) -> None:
        if self._closed or self._q is None:
            raise OutputError("write() on a stream that is not open", path=self.target)
        if self._error is not None:
            err, self._error = self._error, None
            raise OutputError(f"stream failed: {err}", path=self.target, hint="check free space, permissions and the server") from None
        if rgb.shape != (self.size[1], self.size[0], 3):
            raise OutputError(f"frame of shape {rgb.shape}, the stream was opened for {self.size[0]}x{self.size[1]}",
                              path=self.target)
        item = (self._index, np.ascontiguousarray(rgb, dtype=np.uint8).copy(), time.perf_counter())
        self._index += 1
        self.stats["written"] += 1
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()  # drop the oldest: the live picture stays fresh
                    with self._lock:
                        self.stats["dropped"] += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _OPEN_SINKS.discard(self)
        if self._q is not None:
            while True:  # the stop marker must get in, even past a full queue
                try:
                    self._q.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    if self._thread is None or not self._thread.is_alive():
                        break
        if self._thread is not None:
            self._thread.join(self.close_timeout_s)
            if self._thread.is_alive():
                log.warning("%s: sender did not finish within %.0f s", self.target, self.close_timeout_s)
        self._thread = None
        self._finish()
        if self.stats["dropped"] or self.stats["reconnects"]:
            log.info("%s closed: %s", self.target, self.stats)

    def abort(self) -> None:
        """A live stream cannot be taken back: finalise what was sent (see module doc)."""
        self.close()

    # ---- sender thread
    def _connect(self) -> None:
        av = _need_av(self.target)
        try:
            container = self._open_container()
        except OutputError:
            raise
        except (OSError, av.FFmpegError, ValueError) as err:
            raise OutputError(f"cannot open the stream: {err}", path=self.target,
                              hint="check that the server is running and the URL / folder is right") from None
        stream = container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        gop = max(1, int(round(self.fps * self.gop_s)))
        stream.gop_size = gop
        stream.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency", "threads": "1",
                          "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0"}
        stream.thread_count = 1
        stream.codec_context.time_base = Fraction(1) / self.rate
        try:
            container.start_encoding()  # writes the header: connects now, not at the first frame
        except (OSError, av.FFmpegError, ValueError) as err:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass
            raise OutputError(f"cannot open the stream: {err}", path=self.target,
                              hint="check that the server is running and the URL / folder is right") from None
        self._container, self._stream = container, stream
        self.connected = True

    def _disconnect(self, flush: bool) -> None:
        container, self._container = self._container, None
        stream, self._stream = self._stream, None
        self.connected = False
        if container is None:
            return
        try:
            if flush and stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        except Exception as err:  # noqa: BLE001 - the peer may be gone already
            log.debug("%s: flush failed: %s", self.target, err)
        try:
            container.close()
        except Exception as err:  # noqa: BLE001
            log.debug("%s: close failed: %s", self.target, err)

    def _finish(self) -> None:
        if self._container is not None:
            self._disconnect(flush=True)

    def _send(self, index: int, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = index
        frame.time_base = Fraction(1) / self.rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
            self.last_packet_time = time.perf_counter()
        self.stats["encoded"] += 1

    def _send_loop(self) -> None:
        backoff = getattr(self, "backoff_s", 0.5)
        next_try = 0.0
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            index, rgb, _t = item
            if self._container is None:
                if not self.reconnect or time.monotonic() < next_try:
                    with self._lock:
                        self.stats["dropped"] += 1
                    continue
                try:
                    self._connect()
                    self._base = index  # a new connection starts its clock at 0
                    self.stats["reconnects"] += 1
                    log.warning("%s: reconnected (%d reconnects)", self.target, self.stats["reconnects"])
                    backoff = getattr(self, "backoff_s", 0.5)
                except OutputError as err:
                    self.stats["errors"] += 1
                    next_try = time.monotonic() + backoff
                    log.warning("%s: reconnect failed (%s); next try in %.1f s", self.target, err.message, backoff)
                    backoff = min(backoff * 2, getattr(self, "max_backoff_s", 10.0))
                    with self._lock:
                        self.stats["dropped"] += 1
                    continue
            try:
                self._send(index - getattr(self, "_base", 0), rgb)
            except Exception as err:  # noqa: BLE001 - network / disk errors of any kind
                self.stats["errors"] += 1
                with self._lock:
                    self.stats["dropped"] += 1
                if self.reconnect:
                    log.warning("%s: send failed (%s); reconnecting", self.target, err)
                    self._disconnect(flush=False)
                    next_try = time.monotonic() + backoff
                else:
                    log.error("%s: write failed: %s", self.target, err)
                    self._error = err
                    self._disconnect(flush=False)
                    self._drain()
                    return

    def _drain(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return


def _prepare_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder: {err.strerror}", path=path.parent,
                          hint="choose a writable location") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError("output folder is not writable", path=path.parent, hint="choose a writable location")


class HlsSink(_EncodedStreamSink):
    """HLS: ``DIR/stream.m3u8`` and its segments (MPEG-TS, or fMP4 with ``fmp4=True``)
    beside it. ``list_size`` 0 keeps every segment in the playlist (an event/VOD
    playlist); N > 0 is a live sliding window that deletes old segments."""

    format = "hls"

    def __init__(self, playlist: str | Path, *, segment_s: float = 2.0, list_size: int = 0, fmp4: bool = False,
                 overwrite: bool = False, **kw):
        self.path = Path(playlist)
        if self.path.suffix.lower() != ".m3u8":
            raise OutputError("an HLS playlist ends in .m3u8", path=self.path)
        if self.path.exists() and not overwrite:
            raise OutputError("already exists", path=self.path, hint="choose another output or pass --force to replace it")
        self.segment_s, self.list_size, self.fmp4 = segment_s, list_size, fmp4
        kw.setdefault("gop_s", segment_s)
        super().__init__(str(self.path), **kw)

    def _open_container(self):
        import av

        _prepare_folder(self.path)
        stem = self.path.stem
        opts = {"hls_time": f"{self.segment_s:g}", "hls_list_size": str(self.list_size),
                "hls_flags": "temp_file+independent_segments" + ("+delete_segments" if self.list_size else ""),
                "hls_playlist_type": "event" if self.list_size == 0 else "",
                "hls_segment_filename": str(self.path.parent / f"{stem}_%05d.{'m4s' if self.fmp4 else 'ts'}")}
        if self.fmp4:
            opts["hls_segment_type"] = "fmp4"
            opts["hls_fmp4_init_filename"] = f"{stem}_init.mp4"
        opts = {k: v for k, v in opts.items() if v != ""}
        return av.open(str(self.path), mode="w", format="hls", options=opts)

    def segments(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}_*.ts")) + sorted(self.path.parent.glob(f"{self.path.stem}_*.m4s"))


class FragmentedMp4Sink(_EncodedStreamSink):
    """One fragmented MP4 (``frag_keyframe+empty_moov``), readable while it grows:
    every finished fragment decodes, even if the process is killed."""

    format = "mp4"

    def __init__(self, path: str | Path, *, overwrite: bool = False, **kw):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise OutputError("already exists", path=self.path, hint="choose another output or pass --force to replace it")
        super().__init__(str(self.path), **kw)

    def _open_container(self):
        import av

        _prepare_folder(self.path)
        return av.open(str(self.path), mode="w", format="mp4",
                       options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})


class RtmpSink(_EncodedStreamSink):
    """RTMP push (FLV over ``rtmp://host[:port]/app/key``) with reconnect and backoff."""

    format = "flv"
    reconnect = True

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 **kw):
        if not url.startswith(("rtmp://", "rtmps://")):
            raise OutputError("an RTMP URL starts with rtmp:// or rtmps://", path=url)
        self.connect_timeout_s = connect_timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        super().__init__(url, **kw)

    def _open_container(self):
        import av

        # PyAV's timeout (an interrupt callback) bounds the connect and each blocking I/O call.
        # Not the rtmp "timeout" option: that one means *listen* for a connection.
        return av.open(self.target, mode="w", format="flv", timeout=self.connect_timeout_s,
                       options={"flvflags": "no_duration_filesize"})


def open_stream_sink(out: str, *, overwrite: bool = False, **kw) -> FrameSink:
    """The stream sink for ``out``: ``rtmp://...`` push, ``*.m3u8`` HLS, ``*.fmp4.mp4``/``*.fmp4`` fragmented MP4."""
    low = out.lower()
    if low.startswith(("rtmp://", "rtmps://")):
        return RtmpSink(out, **kw)
    if low.endswith(".m3u8"):
        return HlsSink(out, overwrite=overwrite, **kw)
    if low.endswith((".fmp4", ".fmp4.mp4")):
        return FragmentedMp4Sink(out, overwrite=overwrite, **kw)
    raise OutputError("not a stream output", path=out, hint="rtmp://host/app/key, DIR/stream.m3u8 or NAME.fmp4.mp4")


def is_stream_target(out: str) -> bool:
    low = out.lower()
    return low.startswith(("rtmp:/", "rtmps:/")) or low.endswith((".m3u8", ".fmp4", ".fmp4.mp4"))
