"""The render farm against a real local Ray cluster started here: a head node and a second
node (`ray start`, one CPU each, on loopback, temp dir under this module's tmp), torn
down in every case. Faults: a worker process killed mid-job, a poison frame, a driver
killed and run again. Every frame the farm keeps must be byte-identical to
``latentscape render`` of that frame in one process.

Bounded: tiny 32x32 scenes, the torch backend (no numba compile in fresh workers), a
per-frame sleep from a test plugin where a job has to last long enough to be hurt."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from latentscape.testing import make_tiny_scene

PLUGINS = Path(__file__).parent / "farm_plugins"
FRAMES = 12
pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen) -> None:
    """Every process a `ray start` left behind shares its process group (its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(1.0)


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Token auth with this cluster's own token: nothing read from or written to ~/.ray.
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", LATENTSCAPE_FARM_CACHE=str(root / "cache"),
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                        LATENTSCAPE_PLUGIN_ALLOW="farm_test_plugins",  # main's plugin allow-list
                        PYTHONPATH=os.pathsep.join([str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.starts: list[subprocess.Popen] = []

    def start(self, *args: str) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        log = open(self.root / f"ray_start_{len(self.starts)}.log", "w")
        proc = subprocess.Popen([ray, "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                 "--disable-usage-stats"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.starts.append(proc)
        if proc.wait(timeout=120) != 0:
            raise RuntimeError(f"ray start failed: {(self.root / log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        for proc in reversed(self.starts):
            _kill_group(proc)


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("Ray is not installed (pip install 'latentscape[farm]')")
    # a short root: Ray's unix socket paths must stay under 108 characters
    root = Path(tempfile.mkdtemp(prefix="lsfarm-"))
    c = Cluster(root)
    try:
        c.start("--head", f"--port={c.port}", f"--temp-dir={root / 'ray'}", "--include-dashboard=false")
        c.start(f"--address={c.address}")
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def plugin(name: str, cls: str, **settings) -> dict:
    return {"name": name, "module": f"farm_test_plugins:{cls}", "isolation": "inline", "budget_ms": 5000,
            "settings": settings}


def scene_with(tmp: Path, name: str, *plugins: dict) -> Path:
    return make_tiny_scene(tmp / name, size=32, frames=FRAMES, extra_config={"plugins": list(plugins)})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Frame bytes from `latentscape render` in this one process (no plugins: they change no
    pixel), with the workers' one thread (docs/farm.md: the thread count is part of the guarantee)."""
    import torch
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    tmp = tmp_path_factory.mktemp("reference")
    scene = scene_with(tmp, "scene")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(app, ["render", str(scene), "--out", str(tmp / "frames"), "--backend", "torch"])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    frames = sorted((tmp / "frames").glob("*.png"))
    assert len(frames) == FRAMES
    return [p.read_bytes() for p in frames]


def farm_cmd(cluster: Cluster, scene: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "latentscape.tools.cli", "farm", "render", str(scene), "--out", str(out),
            "--address", cluster.address, "--workers", "2", "--backend", "torch", "--no-progress", *extra]


def run(cmd: list[str], env: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(env or os.environ, PYTHONUNBUFFERED="1"))


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def wait_for(pred, proc: subprocess.Popen, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"the job ended first: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("timed out")


def frames_of(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((out / "frames").glob("frame_*.png"))]


def assert_complete(out: Path, reference: list[bytes]) -> None:
    names = sorted(p.name for p in (out / "frames").iterdir())
    want = sorted([f"frame_{i:05d}.png" for i in range(FRAMES)] + [f"frame_{i:05d}.png.sha256" for i in range(FRAMES)])
    assert names == want  # every frame exactly once, no temporary files left
    got = frames_of(out)
    assert [i for i in range(FRAMES) if got[i] != reference[i]] == []


@pytest.mark.slow
def test_a_killed_worker_loses_no_frame(cluster, tmp_path, reference):
    scene = scene_with(tmp_path, "scene", plugin("slow", "Slow", sleep_s=0.25))
    out = tmp_path / "out"
    proc = subprocess.Popen(farm_cmd(cluster, scene, out, "--chunk", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cluster.env)
    try:
        def a_worker_with_work_left():
            try:
                m = manifest(out)
            except (OSError, ValueError):
                return None
            done = [f for f in m["frames"].values() if f["status"] == "done"]
            return done[0]["pid"] if done and len(done) <= FRAMES - 4 else None

        victim = wait_for(a_worker_with_work_left, proc)
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert_complete(out, reference)
    m = manifest(out)
    assert m["summary"] == {"frames": FRAMES, "done": FRAMES, "failed": 0, "missing": 0}
    died = [i for i, f in m["frames"].items() if "died" in (f["error"] or "")]
    assert died, "the kill did not hit a chunk in flight"  # ... whose frames were rendered again
    assert all(m["frames"][i]["attempts"] >= 2 and m["frames"][i]["pid"] != victim for i in died)
    assert (out / "render.mp4").stat().st_size > 0


@pytest.mark.slow
def test_a_poison_frame_is_retried_elsewhere_then_reported(cluster, tmp_path, reference):
    scene = scene_with(tmp_path, "scene", plugin("poison", "Poison", frames=[5]))
    out = tmp_path / "out"
    res = run(farm_cmd(cluster, scene, out, "--chunk", "4"), cluster.env)
    assert res.returncode != 0
    assert "frame 5" in res.stderr and "poison" in res.stderr and "Traceback" not in res.stderr, res.stderr
    rec = manifest(out)["frames"]["5"]
    assert rec["status"] == "failed" and rec["attempts"] == 4 and "poison" in rec["error"]
    assert set(rec["tried"]) == {"w0", "w1"}  # the retries went to the other worker too
    got = frames_of(out)
    assert len(got) == FRAMES - 1 and not (out / "frames" / "frame_00005.png").exists()
    assert [i for i in range(FRAMES) if i != 5 and got[i - (i > 5)] != reference[i]] == []
    assert not (out / "render.mp4").exists()  # no assembled output with a hole in it
    st = run([sys.executable, "-m", "latentscape.tools.cli", "farm", "status", str(out)])
    assert st.returncode == 1
    assert f"done {FRAMES - 1}, missing 0, failed 1" in st.stdout
    assert "failed frame 5 after 4 attempts" in st.stdout and "poisoned frame 5" in st.stdout


@pytest.mark.slow
def test_a_killed_driver_resumes_without_rendering_finished_frames(cluster, tmp_path, reference):
    scene = scene_with(tmp_path, "scene", plugin("slow", "Slow", sleep_s=0.3))
    out = tmp_path / "out"
    cmd = farm_cmd(cluster, scene, out, "--chunk", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env)
    try:
        wait_for(lambda: len(list((out / "frames").glob("*.sha256"))) >= 4, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    done = sorted(out.glob("frames/*.sha256"))
    assert 4 <= len(done) < FRAMES
    kept = {p.name[:-7]: (out / "frames" / p.name[:-7]).stat() for p in done}
    corrupt = sorted(kept)[0]  # a frame damaged on disk is rendered again
    (out / "frames" / corrupt).write_bytes(b"not a png")
    res = run(cmd, cluster.env)
    assert res.returncode == 0, res.stderr
    assert f"already done {len(kept) - 1}" in res.stdout
    for name, st in kept.items():
        if name != corrupt:  # untouched: same inode, same mtime
            now = (out / "frames" / name).stat()
            assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert_complete(out, reference)
    assert manifest(out)["summary"]["done"] == FRAMES


def test_farm_render_takes_every_render_option():
    import typer

    from latentscape.tools.cli import app
    from latentscape.tools.render_options import RENDER_PARAMETERS

    root = typer.main.get_command(app)
    render = {p.name for p in root.commands["render"].params}
    farm = {p.name for p in root.commands["farm"].commands["render"].params}
    assert set(RENDER_PARAMETERS) <= render  # the shared options, plus render's own (--track)
    assert render <= farm and {"address", "chunk", "workers", "gpus_per_worker"} <= farm


def test_without_ray_it_says_how_to_install(tmp_path, monkeypatch, capsys):
    from latentscape.tools.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["farm", "render", "--out", str(tmp_path / "out")])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert "needs Ray" in err and "pip install 'latentscape[farm]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_addresses():
    from latentscape.errors import ConfigError
    from latentscape.farm import normalize_address

    assert normalize_address(None) is None
    assert normalize_address("auto") == "auto"
    assert normalize_address("ray://head:10001") == "ray://head:10001"
    assert normalize_address("10.0.0.5:6379") == "10.0.0.5:6379"
    for bad in ("head", "head:port", ":6379"):
        with pytest.raises(ConfigError, match="--address"):
            normalize_address(bad)


def test_an_unreachable_cluster_is_one_line(tmp_path):
    res = run([sys.executable, "-m", "latentscape.tools.cli", "farm", "render", "--out", str(tmp_path / "out"),
               "--address", f"127.0.0.1:{_free_port()}"], timeout=60)
    assert res.returncode != 0 and "cannot reach the Ray cluster" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_shipped_scene_is_verified_and_cached(tmp_path):
    from latentscape.errors import LockMismatchError
    from latentscape.farm.ship import materialize, pack_scene

    scene = make_tiny_scene(tmp_path / "scene", size=8, frames=2)
    payload = pack_scene(scene)
    fetched = []

    def fetch(p):
        fetched.append(p.digest)
        return p.data

    cache = tmp_path / "cache"
    got = materialize(payload, fetch, cache)
    assert got.name.endswith(payload.digest) and (got / "scene.toml").read_bytes() == (scene / "scene.toml").read_bytes()
    assert materialize(payload, fetch, cache) == got and len(fetched) == 1  # cached: not fetched again
    (got / "scene.toml").write_text("tampered")
    materialize(payload, fetch, cache)  # a damaged cache entry is replaced
    assert len(fetched) == 2 and (got / "scene.toml").read_bytes() == (scene / "scene.toml").read_bytes()
    other = pack_scene(make_tiny_scene(tmp_path / "other", size=8, frames=2, seed=5))
    with pytest.raises(LockMismatchError, match="does not match its digest"):
        materialize(payload, lambda p: other.data, tmp_path / "cache2")  # bytes that are not the digest's


def test_a_folder_holds_one_job(tmp_path):
    from latentscape.errors import OutputError
    from latentscape.farm.manifest import FarmFolder

    job = {"scene": "s", "frames": 2, "key": "aaaa"}
    f = FarmFolder(tmp_path / "out")
    f.prepare(job, force=False)
    f.write_frame(0, b"png bytes", hashlib.sha256(b"png bytes").hexdigest())
    f.record(0).status = "done"
    f.save()
    assert FarmFolder(tmp_path / "out").read() and FarmFolder(tmp_path / "out").verify(0) is not None
    with pytest.raises(OutputError, match="another job"):
        FarmFolder(tmp_path / "out").prepare({**job, "key": "bbbb"}, force=False)
    g = FarmFolder(tmp_path / "out")
    g.prepare({**job, "key": "bbbb"}, force=True)  # --force starts it over
    assert g.verify(0) is None and not any((tmp_path / "out" / "frames").iterdir())
    with pytest.raises(OutputError, match="corrupted"):
        g.write_frame(1, b"x", "0" * 64)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a farm folder"):
        FarmFolder(tmp_path / "other").prepare(job, force=False)
