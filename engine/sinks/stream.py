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
* **after open**, files (HLS, fMP4): a write error (a full disk) stops that sink;
  the next ``write()`` or the ``close()`` raises :class:`OutputError` (never a
  silent success), and the files this sink wrote are removed: a stream the disk
  could not hold is absent, not half there with 0-byte files.
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
import errno
import glob
import logging
import os
import queue
import threading
import time
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from latentscape.errors import OutputError
from latentscape.interrupts import exit_on_sigterm
from latentscape.outputs import check_output, make_parents, remove_created
from latentscape.sinks.base import FrameSink

log = logging.getLogger("latentscape.sinks.stream")

_OPEN_SINKS: "weakref.WeakSet[_EncodedStreamSink]" = weakref.WeakSet()
_STOP = object()


@atexit.register
def _close_open_sinks() -> None:
    for sink in list(_OPEN_SINKS):
        try:
            sink.close()
        except OutputError as err:
            log.error("%s", err)
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("closing %s at exit failed", sink)


def redact_url(url: str) -> str:
    """``rtmp://user:pw@host/app/streamkey?x`` -> ``rtmp://host/app/***``: what logs and
    ``/status`` show of a stream URL (credentials, the stream key and the query are secrets)."""
    from urllib.parse import urlsplit

    text = str(url)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return text.split("://", 1)[0] + "://***"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    segs = [s for s in parts.path.split("/") if s]
    path = "/".join(segs[:1] + (["***"] if len(segs) > 1 else []))
    return f"{parts.scheme}://{netloc}/{path}" if path else f"{parts.scheme}://{netloc}"


def _need_av(target: Any):
    try:
        import av
    except ImportError:
        raise OutputError("streaming needs PyAV", path=redact_url(str(target)), hint="pip install 'latentscape[video]'") from None
    return av


class _EncodedStreamSink(FrameSink):
    """H.264 through PyAV in a sender thread fed by a bounded queue (drop-oldest)."""

    format: str = ""
    reconnect: bool = False

    def __init__(self, target: str, *, queue_size: int = 8, gop_s: float = 1.0, crf: int = 23,
                 preset: str = "veryfast", close_timeout_s: float = 30.0):
        if queue_size < 1:
            raise OutputError(f"queue_size must be >= 1, got {queue_size}", path=redact_url(target))
        self.target = target
        self.label = redact_url(target)
        """What logs, errors and ``/status`` show (an RTMP URL without its key and credentials)."""
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
        self._reported = False
        self._packets = 0
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
                              path=self.label, hint="choose an even size")
        if not fps > 0:
            raise OutputError(f"fps must be positive, got {fps}", path=self.label)
        self.size, self.fps = (width, height), float(fps)
        self.rate = Fraction(fps).limit_denominator(1001)
        self._connect()  # raises OutputError: unreachable server, unwritable folder
        self._q = queue.Queue(maxsize=self.queue_size)
        self._index = 0
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name=f"stream-sink {self.label}", daemon=True)
        self._thread.start()
        _OPEN_SINKS.add(self)
        exit_on_sigterm()  # SIGTERM -> SystemExit: sinks are closed by finally/atexit

    def write(self, rgb: np.ndarray) -> None:
        if self._closed or self._q is None:
            raise OutputError("write() on a stream that is not open", path=self.label)
        if self._error is not None:
            self._reported = True
            raise self._failure() from None
        if rgb.shape != (self.size[1], self.size[0], 3):
            raise OutputError(f"frame of shape {rgb.shape}, the stream was opened for {self.size[0]}x{self.size[1]}",
                              path=self.label)
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
                log.warning("%s: sender did not finish within %.0f s", self.label, self.close_timeout_s)
        self._thread = None
        self._finish()
        if self._error is None:
            self._verify()
        if self.stats["dropped"] or self.stats["reconnects"]:
            log.info("%s closed: %s", self.label, self.stats)
        if self._error is not None:
            self._discard_files()
            if not self._reported:
                self._reported = True
                raise self._failure()

    def abort(self) -> None:
        """A live stream cannot be taken back: finalise what was sent (see module doc);
        a stream that failed has its files removed (see :meth:`close`)."""
        try:
            self.close()
        except OutputError as err:  # abort runs while another error propagates: do not mask it
            log.error("%s", err)

    def _say(self, err: BaseException) -> str:
        """An error's text without the secret parts of the target (PyAV quotes the URL)."""
        text = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return text.replace(self.target, self.label)

    def _failure(self) -> OutputError:
        return OutputError(f"stream failed: {self._say(self._error)}; its files were removed", path=self.label,
                           hint="check free space, permissions and the server")

    def _discard_files(self) -> None:
        """Remove what a failed file stream wrote (nothing for network streams)."""

    def _verify(self) -> None:
        """After a clean finish: check the output holds what was sent (file streams)."""

    # ---- sender thread
    def _connect(self) -> None:
        av = _need_av(self.target)
        try:
            container = self._open_container()
        except OutputError:
            raise
        except (OSError, av.FFmpegError, ValueError) as err:
            raise OutputError(f"cannot open the stream: {self._say(err)}", path=self.label,
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
            raise OutputError(f"cannot open the stream: {self._say(err)}", path=self.label,
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
                    self._packets += 1
        except Exception as err:  # noqa: BLE001 - the peer may be gone already
            log.debug("%s: flush failed: %s", self.label, self._say(err))
            if flush and not self.reconnect and self._error is None:
                self._error = err  # a file stream whose end did not fit (disk full) is not a success
        try:
            container.close()
        except Exception as err:  # noqa: BLE001
            log.debug("%s: close failed: %s", self.label, self._say(err))
            if flush and not self.reconnect and self._error is None:
                self._error = err

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
            self._packets += 1
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
                    log.warning("%s: reconnected (%d reconnects)", self.label, self.stats["reconnects"])
                    backoff = getattr(self, "backoff_s", 0.5)
                except OutputError as err:
                    self.stats["errors"] += 1
                    next_try = time.monotonic() + backoff
                    log.warning("%s: reconnect failed (%s); next try in %.1f s", self.label, err.message, backoff)
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
                    log.warning("%s: send failed (%s); reconnecting", self.label, self._say(err))
                    self._disconnect(flush=False)
                    next_try = time.monotonic() + backoff
                else:
                    log.error("%s: write failed: %s", self.label, self._say(err))
                    self._error = err
                    self._disconnect(flush=False)
                    self._drain()
                    return

    def _drain(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return


class _FileStreamSink(_EncodedStreamSink):
    """A stream written to files in place (HLS, fMP4): checked like every output
    (:func:`latentscape.outputs.check_output`: ``overwrite`` replaces only a regular
    file, never a link or device); on failure its files and the folders it created go."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, **kw):
        self.path = Path(path)
        check_output(self.path, force=overwrite, kind="file")
        self._created: list[Path] = []
        self._started = 0.0
        super().__init__(str(self.path), **kw)

    def _prepare_folder(self) -> None:
        if not self._started:
            self._started = time.time()
            self._created = make_parents(self.path.parent)
        if not os.access(self.path.parent, os.W_OK):
            raise OutputError("output folder is not writable", path=self.path.parent, hint="choose a writable location")

    def _own_files(self) -> list[Path]:
        return [self.path]

    def _verify(self) -> None:
        """FFmpeg's segment writers ignore write errors (a full disk gives truncated or
        0-byte files and no error), so the finished stream is read back: every packet
        sent must demux from disk, else the stream failed (``close()`` raises and its
        files are removed). A sliding-window HLS (``list_size`` > 0) deletes old segments;
        there only the segments still listed are checked (present, not empty)."""
        if not self._started or not self._packets:
            return
        import av

        try:
            got = self._count_packets()
        except (OSError, av.FFmpegError, ValueError, IndexError, UnicodeDecodeError) as err:
            self._error = err
            return
        if got is not None and got < self._packets:
            self._error = OSError(errno.EIO, f"only {got} of {self._packets} packets reached the disk "
                                             "(disk full or write error)")

    @staticmethod
    def _demuxed(path: Path, fmt: str | None = None) -> int:
        import av

        with av.open(str(path), format=fmt) as c:
            return sum(1 for p in c.demux(video=0) if p.size)

    def _count_packets(self) -> int | None:
        """Video packets on disk (None: not countable, already checked otherwise)."""
        return self._demuxed(self.path, "mp4")

    def _discard_files(self) -> None:
        if not self._started:
            return
        for p in self._own_files():
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= self._started - 1.0:
                    p.unlink()
            except OSError:
                pass
        remove_created(self._created)
        self._created = []


class HlsSink(_FileStreamSink):
    """HLS: ``DIR/stream.m3u8`` and its segments (MPEG-TS, or fMP4 with ``fmp4=True``)
    beside it. ``list_size`` 0 keeps every segment in the playlist (an event/VOD
    playlist); N > 0 is a live sliding window that deletes old segments."""

    format = "hls"

    def __init__(self, playlist: str | Path, *, segment_s: float = 2.0, list_size: int = 0, fmp4: bool = False,
                 overwrite: bool = False, **kw):
        if Path(playlist).suffix.lower() != ".m3u8":
            raise OutputError("an HLS playlist ends in .m3u8", path=playlist)
        self.segment_s, self.list_size, self.fmp4 = segment_s, list_size, fmp4
        kw.setdefault("gop_s", segment_s)
        super().__init__(playlist, overwrite=overwrite, **kw)

    def _count_packets(self) -> int | None:
        text = self.path.read_text()
        listed = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not listed or any((self.path.parent / n).stat().st_size == 0 for n in listed):
            raise OSError(errno.EIO, "the playlist lists no segments, or an empty one")
        if self.list_size:
            return None  # old segments were deleted: only what is listed can be checked
        if "#EXT-X-MAP" in text:  # fMP4 segments need their init segment: read through the playlist
            return self._demuxed(self.path, "hls")
        # MPEG-TS segments one by one: FFmpeg's probe of a playlist whose first segment is
        # tiny can fail, a stand-alone segment's does not
        return sum(self._demuxed(self.path.parent / n, "mpegts") for n in listed)

    def _own_files(self) -> list[Path]:
        folder, stem = self.path.parent, self.path.stem
        return [self.path, *folder.glob(f"{glob.escape(self.path.name)}*.tmp"), *folder.glob(f"{glob.escape(stem)}_*")]

    def _open_container(self):
        import av

        self._prepare_folder()
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


class FragmentedMp4Sink(_FileStreamSink):
    """One fragmented MP4 (``frag_keyframe+empty_moov``), readable while it grows:
    every finished fragment decodes, even if the process is killed."""

    format = "mp4"

    def _open_container(self):
        import av

        self._prepare_folder()
        return av.open(str(self.path), mode="w", format="mp4",
                       options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})


class RtmpSink(_EncodedStreamSink):
    """RTMP push (FLV over ``rtmp://host[:port]/app/key``) with reconnect and backoff."""

    format = "flv"
    reconnect = True

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 **kw):
        if not url.startswith(("rtmp://", "rtmps://")):
            raise OutputError("an RTMP URL starts with rtmp:// or rtmps://", path=redact_url(url))
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
