"""Stream sinks: HLS and fragmented MP4 decode back; RTMP against a real nginx-rtmp on
loopback (push, record, read back; a server that goes away is reconnected); a slow
consumer drops frames instead of growing memory; SIGTERM leaves valid files.

nginx with the RTMP module: ``apt-get install -y nginx libnginx-mod-rtmp`` (skipped
with the reason when absent).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from latentscape.errors import OutputError  # noqa: E402
from latentscape.sinks import open_sink  # noqa: E402
from latentscape.sinks.stream import FragmentedMp4Sink, HlsSink, RtmpSink  # noqa: E402

W, H, FPS = 64, 48, 10
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def frames(n: int, w: int = W, h: int = H):
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (i * 20) % 256
        img[:, : (i * 4) % w, 1] = 200
        yield img


def decode(path, fmt: str | None = None) -> list[np.ndarray]:
    path = Path(path)
    if path.suffix == ".m3u8" and "#EXT-X-MAP" not in path.read_text():
        # Each listed MPEG-TS segment on its own: FFmpeg's probe of a playlist whose
        # first segment is tiny (a few 32x32 frames) can fail, a stand-alone segment does not.
        segs = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        return [f for seg in segs for f in decode(path.parent / seg, "mpegts")]
    with av.open(str(path), format=fmt) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- files

def test_hls_playlist_and_segments_decode(tmp_path):
    out = tmp_path / "live" / "stream.m3u8"
    assert isinstance(open_sink(out), HlsSink)
    sink = HlsSink(out, segment_s=1.0, queue_size=64)
    sink.open(W, H, FPS)
    for img in frames(25):
        sink.write(img)
    sink.close()
    text = out.read_text()
    assert "#EXT-X-ENDLIST" in text
    segs = sink.segments()
    assert len(segs) >= 2, text
    assert not list(out.parent.glob("*.tmp"))
    got = decode(out)
    assert len(got) == 25 and sink.stats["dropped"] == 0
    assert got[0].shape == (H, W, 3)
    for seg in segs:  # each segment stands alone
        assert decode(seg, "mpegts")


def test_hls_fmp4_segments(tmp_path):
    out = tmp_path / "s.m3u8"
    sink = HlsSink(out, segment_s=1.0, fmp4=True, queue_size=64)
    sink.open(W, H, FPS)
    for img in frames(15):
        sink.write(img)
    sink.close()
    assert (tmp_path / "s_init.mp4").is_file()
    assert len(decode(out)) == 15


def test_fragmented_mp4_decodes(tmp_path):
    out = tmp_path / "live.fmp4.mp4"
    sink = open_sink(out)
    assert isinstance(sink, FragmentedMp4Sink)
    sink.queue_size = 64
    sink.open(W, H, FPS)
    for img in frames(12):
        sink.write(img)
    sink.close()
    got = decode(out)
    assert len(got) == 12 and got[0].shape == (H, W, 3)
    assert abs(int(got[5][0, 0, 0]) - 100) < 12  # colours survive the encode


def test_bad_outputs_are_typed(tmp_path):
    (tmp_path / "x.m3u8").write_text("")
    with pytest.raises(OutputError, match="already exists"):
        open_sink(tmp_path / "x.m3u8")
    with pytest.raises(OutputError, match="even"):
        HlsSink(tmp_path / "y.m3u8").open(33, 32, 10)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError):
        HlsSink(blocker / "sub" / "s.m3u8").open(32, 32, 10)


class SlowHls(HlsSink):
    def _send(self, index, rgb):
        time.sleep(0.05)
        super()._send(index, rgb)


def test_slow_consumer_drops_frames_not_memory(tmp_path):
    sink = SlowHls(tmp_path / "s.m3u8", queue_size=4)
    sink.open(W, H, FPS)
    for img in frames(100):
        sink.write(img)
        assert sink._q.qsize() <= 4
    sink.close()
    s = sink.stats
    assert s["dropped"] > 50, s
    assert s["encoded"] + s["dropped"] == 100, s
    assert len(decode(tmp_path / "s.m3u8")) == s["encoded"]


_SIGTERM_CHILD = textwrap.dedent("""
    import sys, time, numpy as np
    from latentscape.sinks import open_sink
    outs = [open_sink(p) for p in sys.argv[1:]]
    for s in outs:
        s.open(64, 48, 10)
    print("ready", flush=True)
    i = 0
    while True:
        img = np.full((48, 64, 3), i % 256, np.uint8)
        for s in outs:
            s.write(img)
        i += 1
        time.sleep(0.02)
""")


def test_sigterm_leaves_valid_files(tmp_path):
    hls, frag = tmp_path / "h" / "s.m3u8", tmp_path / "f.fmp4.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_CHILD, str(hls), str(frag)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == 143, proc.stderr.read()
    assert "#EXT-X-ENDLIST" in hls.read_text()
    assert len(decode(hls)) > 5
    assert len(decode(frag)) > 5


# --------------------------------------------------------------------------- RTMP

def _nginx_skip_reason() -> str | None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install -y nginx libnginx-mod-rtmp)"
    if not RTMP_MODULE.exists():
        return f"nginx RTMP module missing at {RTMP_MODULE} (apt-get install -y libnginx-mod-rtmp)"
    return None


class Nginx:
    """nginx-rtmp on loopback, recording every published stream as FLV."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.rec = root / "rec"
        self.rec.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        conf = root / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""
            load_module {RTMP_MODULE};
            daemon off;
            master_process off;
            worker_processes 1;
            user root;
            error_log {root}/logs/error.log info;
            pid {root}/nginx.pid;
            events {{ worker_connections 64; }}
            rtmp {{
              server {{
                listen 127.0.0.1:{self.port};
                application live {{
                  live on;
                  record all;
                  record_path {self.rec};
                  record_unique on;
                }}
              }}
            }}
        """))
        self.conf = conf
        self.proc = None

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-p", str(self.root), "-e", str(self.root / "logs" / "early.log"),
                                      "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish recordings
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, key: str = "key") -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def recordings(self) -> list[Path]:
        return sorted(self.rec.glob("*.flv"), key=os.path.getmtime)


@pytest.fixture
def nginx(tmp_path):
    reason = _nginx_skip_reason()
    if reason:
        pytest.skip(reason)
    server = Nginx(tmp_path / "nginx")
    try:
        server.start()
    except RuntimeError as err:
        pytest.skip(f"nginx with the RTMP module does not start here: {err}")
    yield server
    server.stop()


def _wait_encoded(sink, n, timeout=20.0):
    deadline = time.monotonic() + timeout
    while sink.stats["encoded"] + sink.stats["dropped"] < n and time.monotonic() < deadline:
        time.sleep(0.02)


def test_rtmp_push_recorded_by_nginx(nginx):
    sink = open_sink(nginx.url())  # through open_sink, as the CLI does
    assert isinstance(sink, RtmpSink)
    sink.queue_size = 64
    sink.open(W, H, FPS)
    for img in frames(20):
        sink.write(img)
    sink.close()
    assert sink.stats["dropped"] == 0, sink.stats
    nginx.stop()
    recs = nginx.recordings()
    assert recs, list(nginx.rec.iterdir())
    got = decode(recs[-1])
    assert len(got) == 20
    assert got[0].shape == (H, W, 3)


def test_rtmp_read_back_live(nginx):
    """A player pulling rtmp://.../live/key while we push sees our frames."""
    import threading

    sink = RtmpSink(nginx.url("k2"), queue_size=64)
    sink.open(W, H, FPS)
    got: list = []

    def play():
        with av.open(nginx.url("k2"), timeout=10, options={"rtmp_live": "live"}) as c:
            for f in c.decode(video=0):
                got.append(f.to_ndarray(format="rgb24"))
                if len(got) >= 5:
                    return

    t = threading.Thread(target=play, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    gen = frames(10_000)
    while t.is_alive() and time.monotonic() < deadline:
        sink.write(next(gen))
        time.sleep(1 / FPS)
    sink.close()
    assert len(got) >= 5
    assert got[0].shape == (H, W, 3)


def test_rtmp_unreachable_is_typed_error_at_open():
    sink = RtmpSink(f"rtmp://127.0.0.1:{free_port()}/live/key", connect_timeout_s=2)
    with pytest.raises(OutputError, match="cannot open the stream"):
        sink.open(W, H, FPS)


def test_rtmp_server_restart_is_reconnected(nginx):
    other = HlsSink(nginx.root / "hls" / "s.m3u8", queue_size=256)  # a second output of the same loop
    sink = RtmpSink(nginx.url(), queue_size=64, backoff_s=0.2, max_backoff_s=0.5, connect_timeout_s=2)
    sink.open(W, H, FPS)
    other.open(W, H, FPS)
    gen = frames(10_000)

    def push(n):
        for _ in range(n):
            img = next(gen)
            sink.write(img)
            other.write(img)
            time.sleep(0.02)

    push(10)
    _wait_encoded(sink, 10)
    nginx.stop()
    push(30)  # the server is gone: sends fail, frames drop, retries back off
    nginx.start()
    deadline = time.monotonic() + 20
    while sink.stats["reconnects"] == 0 and time.monotonic() < deadline:
        push(5)
    push(20)
    sink.close()
    other.close()
    assert sink.stats["reconnects"] >= 1, sink.stats
    assert sink.stats["dropped"] > 0, sink.stats
    assert other.stats["dropped"] == 0 and len(decode(other.path)) == other.stats["written"]
    nginx.stop()
    recs = nginx.recordings()
    assert len(recs) >= 2, recs  # one recording per connection
    assert len(decode(recs[-1])) >= 10


def test_cli_render_to_rtmp_and_hls(nginx, tmp_path):
    """`latentscape render --out rtmp://...` and `--out DIR/stream.m3u8` (a tiny scene, 32x32)."""
    from helpers_core import run_cli

    from latentscape.testing import make_tiny_scene

    scene = make_tiny_scene(tmp_path / "tiny", size=32)
    r = run_cli("render", scene, "--orbit", "4", "--width", "32", "--height", "32", "--out", nginx.url("cli"), timeout=240)
    assert r.returncode == 0, r.stderr
    hls = tmp_path / "out" / "stream.m3u8"
    r = run_cli("render", scene, "--orbit", "4", "--width", "32", "--height", "32", "--out", hls, timeout=240)
    assert r.returncode == 0, r.stderr
    assert len(decode(hls)) == 4
    nginx.stop()
    recs = [p for p in nginx.recordings() if p.name.startswith("cli")]
    assert recs and len(decode(recs[-1])) == 4
