"""The control API (FastAPI TestClient, and one real uvicorn process): health, readiness,
metrics, auth, a failed reload that keeps the old scene, malformed bodies, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from latentscape.serve import Engine, ServeConfig, create_app  # noqa: E402
from latentscape.testing import make_tiny_scene  # noqa: E402

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# The engine renders in its own thread: one intra-op thread keeps a 16x16 frame at ~20 ms
# on 2 shared cores (two threads oversubscribe them: ~500 ms, and timing checks flake).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def scene(tmp_path):
    return make_tiny_scene(tmp_path / "tiny", adapters=["warm"], extra_config={
        "plugins": [{"name": "flash_guard", "module": "latentscape.plugins.flash", "isolation": "inline"}]})


def wait_ready(client, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {client.get('/status').json()}")


@pytest.fixture
def client(scene):
    cfg = ServeConfig(scene=scene, width=16, height=16, orbit_frames=8, max_fps=50)
    with TestClient(create_app(cfg, TOKEN)) as c:
        wait_ready(c)
        yield c


def test_not_ready_before_first_frame(scene):
    eng = Engine(ServeConfig(scene=scene, width=16, height=16))
    app = create_app(eng.cfg, TOKEN, engine=eng)
    c = TestClient(app)  # no lifespan: the engine never starts
    assert c.get("/health/live").status_code == 200
    r = c.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "not ready"


def test_health_metrics_status(client):
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json()["status"] == "ready"
    text = client.get("/metrics").text
    for name in ("latentscape_frames_total", "latentscape_frame_seconds_bucket", "latentscape_dropped_frames_total",
                 "latentscape_adapter_swaps_total", "latentscape_guardrail_verdicts_total"):
        assert name in text, name
    assert 'latentscape_guardrail_verdicts_total{plugin="flash_guard",verdict="pass"}' in text
    s = client.get("/status").json()
    assert s["ready"] and s["frames"] >= 1 and s["scene"]["name"] == "tiny"
    assert "nerf" in s["stage_ms"]
    assert "flash_guard" in s["plugins"]


def test_mutating_calls_need_the_token(client):
    for path, body in (("/scene/reload", None), ("/scene", {"path": None}), ("/adapters/nerf.color", {"mix": "warm"}),
                       ("/params", {"params": {"a": 1}})):
        assert client.post(path, json=body).status_code == 401, path
        assert client.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert client.post("/scene/reload", headers=AUTH).status_code == 200


def test_malformed_requests(client):
    r = client.post("/params", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "malformed request"
    assert client.post("/params", json={"nope": 1}, headers=AUTH).status_code == 422
    assert client.post("/adapters/nerf.color", json={"mix": [1, 2]}, headers=AUTH).status_code == 422
    r = client.post("/adapters/nerf.color", json={"mix": "no_such_adapter"}, headers=AUTH)
    assert r.status_code == 400 and "error" in r.json(), r.text
    r = client.post("/adapters/no.target", json={"mix": "warm"}, headers=AUTH)
    assert r.status_code == 400


def test_adapter_swap_and_params(client):
    r = client.post("/adapters/nerf.color", json={"mix": "warm"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["ok"], r.json()
    assert client.post("/params", json={"params": {"speed": 2}}, headers=AUTH).json()["ok"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "latentscape_adapter_swaps_total 1.0" in client.get("/metrics").text:
            break
        time.sleep(0.05)
    assert "latentscape_adapter_swaps_total 1.0" in client.get("/metrics").text
    assert client.get("/status").json()["adapters"]["nerf.color"].startswith("warm")


def test_failed_reload_keeps_the_old_scene(client, scene):
    before = client.get("/status").json()
    lock = scene / "scene.lock"
    good = lock.read_bytes()
    lock.write_text("this is not a lock file\n")
    r = client.post("/scene/reload", headers=AUTH)
    assert r.status_code == 422, r.text
    body = r.json()
    assert "still serving" in body["error"] and body["serving"]["version"] == before["scene"]["version"]
    frames = client.get("/status").json()["frames"]
    time.sleep(0.3)
    after = client.get("/status").json()
    assert after["frames"] > frames and after["scene"] == before["scene"]  # still rendering the old scene
    assert client.get("/health/ready").status_code == 200
    assert 'latentscape_scene_loads_total{result="failed"} 1.0' in client.get("/metrics").text
    r = client.post("/scene", json={"path": str(scene / "missing")}, headers=AUTH)  # inside the scene root
    assert r.status_code == 422
    lock.write_bytes(good)
    r = client.post("/scene/reload", headers=AUTH)
    assert r.status_code == 200 and r.json()["scene"]["version"] == before["scene"]["version"]


def test_scene_without_a_path_is_the_demo(client):
    from latentscape.scene import demo_scene_path

    r = client.post("/scene", json={"path": None}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["scene"]["path"] == str(demo_scene_path())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_and_sigterm(scene):
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "latentscape.tools.cli", "serve", str(scene), "--port", str(port),
                             "--token", TOKEN, "--width", "16", "--height", "16", "--max-fps", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready, proc.stdout.read() if proc.poll() is not None else "not ready in 90 s"
        assert httpx.post(f"{base}/scene/reload").status_code == 401
        assert "latentscape_frames_total" in httpx.get(f"{base}/metrics").text
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        out = proc.stdout.read()
        assert proc.returncode in (0, -signal.SIGTERM), out  # uvicorn re-raises the signal after a clean shutdown
        assert "Shutting down" in out or "Finished server process" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
