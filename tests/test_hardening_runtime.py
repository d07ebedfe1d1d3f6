"""Issue 11, runtime classes: ``--force`` replaces only what latentscape wrote (3), every output
is complete or absent after a full disk or a signal (7). Serve (5) and the plugin host (8)
have their own sections below."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentscape.errors import OutputError
from latentscape.outputs import MARKER, check_output, read_marker, staged

import test_stylegan3_import as _sg3_import  # noqa: E402  (its fixtures: a pickle laid out as the official one)

canary = _sg3_import.canary
fake_official = _sg3_import.fake_official


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from latentscape.testing import make_tiny_scene

    return make_tiny_scene(tmp_path_factory.mktemp("tiny") / "scene")


def _cli(args: list, **kw):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], **kw)


# ---- class 3: --force replaces only what latentscape wrote ---------------------------------


def test_save_trained_scene_overwrites_only_a_bundle_it_wrote(tmp_path):
    """``overwrite=True`` (``make_tiny_scene``'s default) used to ``rmtree`` whatever was at ``out``."""
    from latentscape.scene.bundle import load_scene
    from latentscape.testing import make_tiny_scene

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="no .latentscape-output marker"):
        make_tiny_scene(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert _files(tmp_path) == ["mine", "mine/thesis.tex"], "a partial bundle was left beside it"

    scene = make_tiny_scene(tmp_path / "scene", seed=0)
    first = load_scene(scene).version
    make_tiny_scene(scene, seed=1)  # a bundle it wrote: replaced
    assert load_scene(scene).version != first
    with pytest.raises(OutputError, match="already exists"):
        make_tiny_scene(scene, overwrite=False)

def test_outputs_get_the_modes_of_a_plain_mkdir_and_open(tmp_path):
    """Staged outputs came out 0700 / 0600 (mkdtemp / mkstemp): a render on shared storage was
    unreadable to the web server or the other farm users."""
    mask = os.umask(0o022)
    os.umask(mask)
    with staged(tmp_path / "frames", command="test") as tmp:
        (tmp / "a.png").write_bytes(b"png")
    with staged(tmp_path / "v.mp4", kind="file", command="test") as tmp:
        tmp.write_bytes(b"mp4")
    plain_dir, plain_file = tmp_path / "plain", tmp_path / "plain.bin"
    plain_dir.mkdir()
    plain_file.write_bytes(b"x")
    assert (tmp_path / "frames").stat().st_mode & 0o777 == plain_dir.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "v.mp4").stat().st_mode & 0o777 == plain_file.stat().st_mode & 0o777 == 0o666 & ~mask

def test_force_refuses_folders_latentscape_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="already exists"):
        check_output(mine, force=False)
    with pytest.raises(OutputError, match="no .latentscape-output marker"):
        check_output(mine, force=True)
    # A folder latentscape wrote, where the user added a file since: refused too.
    with staged(tmp_path / "ours", command="test") as tmp:
        (tmp / "frame_00000.png").write_bytes(b"png")
    assert read_marker(tmp_path / "ours")["entries"] == ["frame_00000.png"]
    check_output(tmp_path / "ours", force=True)  # replaceable as written
    (tmp_path / "ours" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write.*notes.txt"):
        check_output(tmp_path / "ours", force=True)
    # A forged marker that is a link to a real one does not count.
    (mine / MARKER).symlink_to(tmp_path / "ours" / MARKER)
    with pytest.raises(OutputError, match="marker"):
        check_output(mine, force=True)
    # An empty folder is fine without --force; a file where a folder goes is not replaced.
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output(tmp_path / "afile", force=True, kind="dir")
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_force_never_touches_cwd_parents_root_home_links_devices(tmp_path, monkeypatch):
    work = tmp_path / "home" / "me" / "work"
    work.mkdir(parents=True)
    (work / "precious.txt").write_text("x")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "me"))
    for target, why in ((".", "current folder"), (work, "current folder"), ("..", "home folder"),
                        (tmp_path, "parent of the current"), ("/", "root"), ("~", "home")):
        target = Path(target).expanduser()
        for kind in ("dir", "file"):
            with pytest.raises(OutputError, match=why):
                check_output(target, force=True, kind=kind)
    # symbolic links: to a folder latentscape wrote (outside), to a file, dangling
    with staged(tmp_path / "render", command="test") as tmp:
        (tmp / "f.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "render")
    (tmp_path / "flink.mp4").symlink_to(work / "precious.txt")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "nowhere")
    for link, kind in (("link", "dir"), ("flink.mp4", "file"), ("dangling.mp4", "file")):
        with pytest.raises(OutputError, match="symbolic link"):
            check_output(tmp_path / link, force=True, kind=kind)
    # devices and FIFOs are never written over
    with pytest.raises(OutputError, match="device, FIFO"):
        check_output("/dev/null", force=True, kind="file")
    os.mkfifo(tmp_path / "fifo.mp4")
    with pytest.raises(OutputError, match="device, FIFO"):
        check_output(tmp_path / "fifo.mp4", force=True, kind="file")
    # a regular file is replaced by a single-file output; a folder is not
    (tmp_path / "old.mp4").write_bytes(b"old")
    check_output(tmp_path / "old.mp4", force=True, kind="file")
    (tmp_path / "dir.mp4").mkdir()
    (tmp_path / "dir.mp4" / "x").write_text("x")
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path / "dir.mp4", force=True, kind="file")
    assert (work / "precious.txt").read_text() == "x"


def test_render_force_dot_and_foreign_folder_refused_cli(tiny, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    args = ["render", tiny, "--orbit", "2", "--width", "8", "--height", "8", "--force"]
    res = _cli([*args, "--out", "."])
    assert isinstance(res.exception, OutputError) and "current folder" in str(res.exception)
    res = _cli([*args, "--out", work])
    assert isinstance(res.exception, OutputError)
    assert _files(work) == ["keep.txt"]
    # A folder latentscape rendered is replaced by --force; once the user adds a file, it is not.
    out = tmp_path / "frames"
    assert _cli([*args, "--out", out]).exit_code == 0
    assert sorted(os.listdir(out)) == [MARKER, "frame_00000.png", "frame_00001.png"]
    assert json.loads((out / MARKER).read_text())["command"] == "render"
    assert _cli([*args[:2], "--orbit", "3", *args[4:], "--out", out]).exit_code == 0
    assert len(list(out.glob("*.png"))) == 3
    (out / "mine.txt").write_text("mine")
    res = _cli([*args, "--out", out])
    assert isinstance(res.exception, OutputError) and "mine.txt" in str(res.exception)
    assert (out / "mine.txt").exists() and len(list(out.glob("*.png"))) == 3
    # no --force: an existing file is kept
    (tmp_path / "v.mp4").write_bytes(b"v")
    res = _cli([*args[:-1], "--out", tmp_path / "v.mp4"])
    assert isinstance(res.exception, OutputError) and "already exists" in str(res.exception)


def test_train_import_adapter_layer_force_refused_on_foreign_outputs(tmp_path, tiny):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2")
    # train: refused before loading the dataset (which does not even exist)
    res = _cli(["train", tmp_path / "no-data", "--out", foreign, "--force", "--steps", "1"])
    assert isinstance(res.exception, OutputError) and "marker" in str(res.exception)
    # import: refused before reading the pickle
    res = _cli(["import", "stylegan3", tmp_path / "none.pkl", "--out", foreign, "--force"])
    assert isinstance(res.exception, OutputError) and "marker" in str(res.exception)
    # make_adapter: a single-file output replaces only a regular file
    from latentscape.tools.recipes.make_adapter import train_adapter

    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(OutputError, match="device, FIFO"):
        train_adapter(tiny, "warm", tmp_path / "pipe.safetensors", force=True)
    (tmp_path / "ln.safetensors").symlink_to(foreign / "data.csv")
    with pytest.raises(OutputError, match="symbolic link"):
        train_adapter(tiny, "warm", tmp_path / "ln.safetensors", force=True)
    # demo_layer: a generator folder without the marker is not replaced by --force
    import shutil

    from latentscape.scene.lock import write_lock
    from latentscape.tools.recipes.demo_layer import add_layer

    scene = tmp_path / "scene"
    shutil.copytree(tiny, scene)
    (scene / "generators" / "gan").mkdir(parents=True)
    (scene / "generators" / "gan" / "mine.bin").write_bytes(b"x")
    write_lock(scene)
    with pytest.raises(OutputError, match="marker"):
        add_layer(scene, mesh="screen", name="gan", force=True)
    assert _files(scene / "generators") == ["gan", "gan/mine.bin"]
    assert _files(foreign) == ["data.csv"]


def test_distill_refuses_a_foreign_folder_and_resumes_its_own(tmp_path):
    from latentscape.outputs import open_resumable
    from latentscape.stylize.distill import OUTPUT_ENTRIES

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "student.json").write_text("{}")  # not written by distill: no marker
    with pytest.raises(OutputError, match="marker"):
        open_resumable(foreign, command="distill", entries=OUTPUT_ENTRIES)
    mine = tmp_path / "a" / "b"
    open_resumable(mine, command="distill", entries=OUTPUT_ENTRIES)
    (mine / "checkpoint").mkdir()
    open_resumable(mine, command="distill", entries=OUTPUT_ENTRIES)  # resumable
    assert read_marker(mine)["command"] == "distill"


# ---- class 7: a full disk or a signal leaves every output complete or absent --------------


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_png_render_disk_full_leaves_nothing(tiny, tmp_path, monkeypatch):
    from PIL import Image

    out = tmp_path / "a" / "b" / "frames"
    n = {"saves": 0}
    real = Image.Image.save

    def save(self, fp, *a, **k):
        n["saves"] += 1
        if n["saves"] == 2:
            _enospc()
        return real(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    res = _cli(["render", tiny, "--orbit", "3", "--width", "8", "--height", "8", "--out", out])
    assert isinstance(res.exception, OutputError) and "No space left" in str(res.exception)
    assert _files(tmp_path) == [], "partial frames or created folders left behind"


def test_staged_output_disk_full_at_the_marker_or_rename(tmp_path, monkeypatch):
    """Even when the last step (marker, rename) fails, the old output stays and nothing else is left."""
    import latentscape.outputs as outputs

    with staged(tmp_path / "out", command="test") as tmp:
        (tmp / "v1").write_text("1")
    monkeypatch.setattr(outputs, "write_marker", _enospc)
    with pytest.raises(OutputError, match="No space left"):
        with staged(tmp_path / "out", force=True, command="test") as tmp:
            (tmp / "v2").write_text("2")
    assert _files(tmp_path) == ["out", f"out/{MARKER}", "out/v1"]
    monkeypatch.undo()
    with pytest.raises(OutputError, match="No space left"):
        with staged(tmp_path / "new" / "deep" / "x.bin", kind="file", command="test") as tmp:
            tmp.write_bytes(b"part")
            _enospc()
    assert _files(tmp_path) == ["out", f"out/{MARKER}", "out/v1"]


def test_train_disk_full_leaves_no_partial_bundle(tmp_path, monkeypatch):
    import safetensors.torch

    from latentscape.tools.recipes.synthetic import make_sphere_dataset
    from latentscape.tools.training_job import run_training

    data = make_sphere_dataset(tmp_path / "data", n_train=3, n_test=1, size=8)
    monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    out = tmp_path / "new" / "scene"
    with pytest.raises(OutputError, match="No space left"):
        run_training(data=data, out=out, steps=2, max_seconds=None, rays=32, levels=2, features=2,
                     log2_hashmap_size=8, finest_resolution=16, steps_per_diagonal=16, occupancy_resolution=8,
                     eval_every=0, downscale=1, name="t", device="cpu", backend="torch", seed=0, orbit_frames=2,
                     force=False)
    assert not (tmp_path / "new").exists()


def test_import_disk_full_leaves_no_partial_folder(tmp_path, fake_official, monkeypatch):
    import latentscape.texture.stylegan3 as sg3
    official_pickle, tiny_g = _sg3_import.official_pickle, _sg3_import.tiny

    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(official_pickle(tiny_g(), fake_official))
    real = sg3.save_generator

    def half(G, out_dir, source=None):
        Path(out_dir, "generator.safetensors").write_bytes(b"half")
        _enospc()

    monkeypatch.setattr(sg3, "save_generator", half)
    res = _cli(["import", "stylegan3", pkl, "--out", tmp_path / "gens" / "g"])
    assert isinstance(res.exception, OutputError) and "No space left" in str(res.exception)
    assert _files(tmp_path) == ["net.pkl"]
    monkeypatch.setattr(sg3, "save_generator", real)
    assert _cli(["import", "stylegan3", pkl, "--out", tmp_path / "gens" / "g"]).exit_code == 0
    assert read_marker(tmp_path / "gens" / "g")["command"] == "import stylegan3"
    assert _cli(["import", "stylegan3", pkl, "--out", tmp_path / "gens" / "g", "--force"]).exit_code == 0



def _limited_render(args: list, fsize: int, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a subprocess whose files may not grow past ``fsize`` bytes (a full disk: EFBIG)."""
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n"
            "from latentscape.tools.cli import main\n"
            "sys.argv = ['latentscape', *sys.argv[1:]]\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=240, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


@pytest.mark.parametrize("out,fsize", [("new/v.mp4", 1500), ("new/hls/stream.m3u8", 1500), ("new/frames", 100)])
def test_disk_full_render_fails_with_one_line_and_leaves_nothing(tiny, tmp_path, out, fsize):
    """HLS used to print success over truncated segments; MP4 and PNGs left partials and folders."""
    pytest.importorskip("av")
    proc = _limited_render(["render", tiny, "--orbit", "12", "--width", "32", "--height", "32", "--out", out],
                           fsize, tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "wrote" not in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr
    assert _files(tmp_path) == [], "a partial output, a 0-byte file or a created folder was left"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_render_removes_the_partial(tiny, tmp_path, sig):
    pytest.importorskip("av")
    proc = subprocess.Popen([sys.executable, "-m", "latentscape.tools.cli", "render", str(tiny), "--orbit", "4000",
                             "--width", "8", "--height", "8", "--out", "deep/v.mp4"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "deep").glob(".v.partial-*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # mid-render
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and proc.returncode > 0, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert _files(tmp_path) == [], "the hidden partial or the created folder was left"



def _run_module(tmp_path: Path, body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``body`` as a module run with ``python -m`` (the form whose exit status CPython rewrites)."""
    (tmp_path / "prog.py").write_text("import os, signal, sys, time\n"
                                      "from latentscape import interrupts\n"
                                      "interrupts.install()\n" + body)
    return subprocess.run([sys.executable, "-m", "prog"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


def test_ctrl_c_inside_generated_code_still_exits_130(tmp_path):
    """numba and scipy run generated code with exec(str); a bare KeyboardInterrupt leaving one made
    ``python -m latentscape.tools.cli`` die by SIGINT (-2, no message) after handling it (CI, twice)."""
    proc = _run_module(tmp_path, (
        "try:\n"
        "    exec('import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\n'\n"
        "         't = time.monotonic()\\nwhile time.monotonic() - t < 10: pass')\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
        "sys.exit(0)\n"))
    assert proc.returncode == 130, (proc.returncode, proc.stderr)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_landing_in_a_finalizer_is_not_lost(tmp_path, sig, code):
    """Python drops an exception raised inside ``__del__`` ("Exception ignored"): a Ctrl-C during a
    render's first frame (llvmlite finalizers while numba compiles) was lost and the render went on."""
    proc = _run_module(tmp_path, (
        "class Dropped:\n"
        "    def __del__(self):\n"
        f"        os.kill(os.getpid(), {int(sig)})\n"
        "        t = time.monotonic()\n"
        "        while time.monotonic() - t < 0.5: pass  # the handler runs here, inside the finalizer\n"
        "try:\n"
        "    Dropped()\n"
        "    t = time.monotonic()\n"
        "    while time.monotonic() - t < 20: time.sleep(0.001)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
        "sys.exit(0)\n"))
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Exception ignored" not in proc.stderr, proc.stderr


def test_ctrl_c_during_a_jit_compile_waits_for_the_compile(tmp_path):
    """Interrupting numba mid-compile left llvmlite objects half torn down (tracebacks from their
    finalizers at exit); the signal is held while a numba/llvmlite frame is on the stack."""
    compiler = tmp_path / "site" / "numba" / "compiler.py"
    compiler.parent.mkdir(parents=True)
    compiler.write_text("import os, signal, time\n"
                        "def compile_kernel():\n"
                        "    os.kill(os.getpid(), signal.SIGINT)\n"
                        "    t = time.monotonic()\n"
                        "    while time.monotonic() - t < 0.5: pass\n"
                        "    print('compiled', flush=True)\n")
    proc = _run_module(tmp_path, (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('fake_compiler', {str(compiler)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "try:\n"
        "    mod.compile_kernel()\n"
        "    t = time.monotonic()\n"
        "    while time.monotonic() - t < 20: time.sleep(0.001)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(130)\n"))
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert proc.stdout.split() == ["compiled", "interrupted"]


def test_interrupt_handlers_leave_an_ignored_sigint_alone(tmp_path):
    """A background job starts with SIGINT ignored; installing must not make it interruptible."""
    proc = subprocess.run([sys.executable, "-c", (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "from latentscape import interrupts; interrupts.install()\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL\n")], capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 0, proc.stderr

# ---- class 5: serve authenticates first, caps bodies, redacts secrets, confines reloads -------

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _asgi(app, method: str, path: str, headers: dict, chunks: list[bytes]):
    """One raw ASGI request; returns (status, body, number of receive() calls the app made)."""
    import asyncio

    calls = {"n": 0}
    out = {"status": None, "body": b""}

    async def receive():
        i = calls["n"]
        calls["n"] += 1
        if i < len(chunks):
            return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    return out["status"], out["body"], calls["n"]


@pytest.fixture(scope="module")
def serve_scene(tmp_path_factory):
    from latentscape.testing import make_tiny_scene

    root = tmp_path_factory.mktemp("shows")
    make_tiny_scene(root / "other")
    return make_tiny_scene(root / "main", adapters=["warm"])


@pytest.fixture(scope="module")
def serve_client(serve_scene, one_thread):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from latentscape.serve import ServeConfig, create_app

    cfg = ServeConfig(scene=serve_scene, width=16, height=16, orbit_frames=8, max_fps=50,
                      scene_roots=[serve_scene.parent])
    with TestClient(create_app(cfg, TOKEN)) as c:
        deadline = time.monotonic() + 60
        while c.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, c.get("/status").json()
            time.sleep(0.05)
        yield c


def test_serve_token_checked_before_any_body_is_read(serve_scene):
    pytest.importorskip("fastapi")
    from latentscape.serve import MAX_BODY_BYTES, ServeConfig, create_app

    app = create_app(ServeConfig(scene=serve_scene), TOKEN)  # no lifespan: nothing renders
    big = [b"x" * (1 << 20)] * 41  # 41 MiB that must never be read
    for path in ("/params", "/scene", "/adapters/nerf.color", "/scene/reload"):
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, _, reads = _asgi(app, "POST", path, {"content-type": "application/json", **auth}, big)
            assert (status, reads) == (401, 0), (path, auth)
    # the schema and the interactive docs are not public
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect", "/nothing"):
        assert _asgi(app, "GET", path, {}, [])[0] == 401, path
    assert _asgi(app, "GET", "/openapi.json", AUTH, [])[0] == 200
    assert _asgi(app, "GET", "/docs", AUTH, [])[0] == 404
    # bodies are capped: declared too large -> 413 unread; streamed past the cap -> 413 at the cap
    status, _, reads = _asgi(app, "POST", "/params", {**AUTH, "content-length": str(MAX_BODY_BYTES + 1)}, big)
    assert (status, reads) == (413, 0)
    status, _, reads = _asgi(app, "POST", "/params", AUTH, big)
    assert status == 413 and reads == 2
    # a body that is not declared JSON is 415, not 500
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "", "multipart/form-data; boundary=x"):
        status, body, _ = _asgi(app, "POST", "/params", {**AUTH, "content-type": ctype}, [b'{"params": {"a": 1}}'])
        assert status == 415, (ctype, body)


def test_serve_status_and_logs_redact_stream_keys(serve_scene, caplog):
    pytest.importorskip("av")
    from latentscape.serve import Engine, ServeConfig
    from latentscape.sinks.stream import RtmpSink, redact_url

    url = "rtmp://user:hunter2@127.0.0.1:1/live/SECRETKEY?token=abc"
    assert redact_url(url) == "rtmp://127.0.0.1:1/live/***"
    sink = RtmpSink(url, connect_timeout_s=2.0)
    eng = Engine(ServeConfig(scene=serve_scene))
    eng.sinks.append(sink)
    text = json.dumps(eng.status())
    assert "127.0.0.1:1/live/***" in text
    for secret in ("SECRETKEY", "hunter2", "token=abc"):
        assert secret not in text
    with caplog.at_level("DEBUG"), pytest.raises(OutputError) as err:
        sink.open(16, 16, 24.0)  # nothing listens on port 1
    for secret in ("SECRETKEY", "hunter2", "token=abc"):
        assert secret not in str(err.value) and secret not in caplog.text


def test_serve_scene_switch_confined_to_scene_roots(serve_client, serve_scene, tmp_path):
    from latentscape.testing import make_tiny_scene

    outside = make_tiny_scene(tmp_path / "elsewhere")  # a valid scene, but not under a root
    (serve_scene.parent / "link").symlink_to(outside)  # a link inside the root pointing out
    answers = []
    for path in (str(outside), "/etc", "/no/such/dir", str(serve_scene / ".." / ".." / "x"),
                 str(serve_scene.parent / "link"), "~", "scene\x00"):
        r = serve_client.post("/scene", json={"path": path}, headers=AUTH)
        assert r.status_code == 403, (path, r.text)
        answers.append(r.json()["error"])
    assert len(set(answers)) == 1  # the same answer whether the path exists or not
    assert "/etc" not in json.dumps(answers)
    r = serve_client.post("/scene", json={"path": str(serve_scene.parent / "other")}, headers=AUTH)
    assert r.status_code == 200 and r.json()["scene"]["path"].endswith("other"), r.text
    r = serve_client.post("/scene", json={"path": str(serve_scene)}, headers=AUTH)
    assert r.status_code == 200


def test_serve_token_sources_and_one_line_errors(serve_scene, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    import latentscape.serve as serve_mod

    seen = {}
    monkeypatch.setattr(serve_mod, "serve", lambda cfg, host, port, token: seen.update(cfg=cfg, token=token))
    monkeypatch.delenv("LATENTSCAPE_TOKEN", raising=False)
    tf = tmp_path / "token"
    tf.write_text("from-file\n")
    assert _cli(["serve", serve_scene, "--token-file", tf]).exit_code == 0 and seen["token"] == "from-file"
    assert seen["cfg"].roots() == [serve_scene.resolve()]  # default: only the served scene (and the demo)
    assert _cli(["serve", serve_scene, "--token", "t", "--scene-root", serve_scene.parent]).exit_code == 0
    assert seen["cfg"].roots() == [serve_scene.parent.resolve()]
    assert _cli(["serve", serve_scene], env={"LATENTSCAPE_TOKEN": "from-env"}).exit_code == 0
    assert seen["token"] == "from-env"
    tf.write_text("")
    res = _cli(["serve", serve_scene, "--token-file", tf])
    assert "no usable token" in str(res.exception)
    res = _cli(["serve", serve_scene, "--token-file", tmp_path / "missing"])
    assert "cannot read the token file" in str(res.exception)
    # without the [serve] extra: one line naming the extra
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    res = _cli(["serve", serve_scene, "--token", "t"])
    assert "latentscape[serve]" in str(res.exception) and "\n" in str(res.exception)
    assert str(res.exception).count("\n") == 1  # message + fix line, no traceback


def test_serve_unreachable_rtmp_is_one_line(serve_scene, monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("av")
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server must not start"))
    proc_err = _cli(["serve", serve_scene, "--token", "t", "--out", "rtmp://127.0.0.1:1/live/SECRETKEY"])
    assert isinstance(proc_err.exception, OutputError), proc_err.exception
    assert "cannot open the stream" in str(proc_err.exception) and "SECRETKEY" not in str(proc_err.exception)


def test_serve_request_bodies_fuzz(serve_client):
    """Hypothesis: any body, any content type, to every POST -> 2xx or 4xx, never 5xx."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                          max_leaves=12)
    shaped = st.fixed_dictionaries({}, optional={"path": values, "mix": values, "fade_s": values, "params": values})
    bodies = (values | shaped).map(lambda v: json.dumps(v, allow_nan=True).encode()) | st.binary(max_size=64)
    ctypes = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded"])
    paths = st.sampled_from(["/scene", "/params", "/adapters/nerf.color", "/adapters/x", "/scene/reload"])

    def loads_the_demo(path, body):  # a valid switch to the bundled demo: seconds each, not a fuzz finding
        try:
            v = json.loads(body)
        except ValueError:
            return False
        return path == "/scene" and isinstance(v, dict) and set(v) <= {"path"} and not v.get("path")

    @settings(max_examples=120, derandomize=True, deadline=3000, suppress_health_check=list(HealthCheck))
    @given(path=paths, body=bodies, ctype=ctypes)
    def run(path, body, ctype):
        assume(not loads_the_demo(path, body))
        headers = {**AUTH, **({"Content-Type": ctype} if ctype else {})}
        r = serve_client.post(path, content=body, headers=headers)
        assert 200 <= r.status_code < 500, (path, body, ctype, r.status_code, r.text)
        r.json()  # always a JSON answer

    run()


# ---- class 8: plugin host: per-hook counts, one stall = one failure, probation, honest audit --

def _frame(value: int = 128):
    import numpy as np

    return np.full((8, 8, 3), value, np.uint8)


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _host(*plugins, clock=None, audit=None, **cfg):
    from latentscape.plugin_host import HostConfig, PluginHost, PluginSpec

    specs = [PluginSpec(name, obj=obj, isolation=iso) for name, obj, iso in plugins]
    return PluginHost(specs, HostConfig(**{"slate_hold_s": 0.0, "quarantine_after": 3, **cfg}),
                      clock=clock or time.monotonic, audit_log=audit)


def test_guardrail_with_a_working_frame_begin_is_still_quarantined(frame_ctx):
    from latentscape.hooks import hookimpl

    class Mixed:
        @hookimpl
        def latentscape_frame_begin(self, ctx):
            pass  # works every frame: must not reset check_frame's count

        @hookimpl
        def latentscape_check_frame(self, frame):
            raise RuntimeError("broken guardrail")

    h = _host(("mixed", Mixed(), "inline"), probation_after_s=0)
    for i in range(5):
        ctx = frame_ctx(i)
        h.frame_begin(ctx)
        assert (h.check_frame(ctx, _frame(200)) == 0).all()
    st = h.plugin("mixed")
    assert st.quarantined and st.failures == {"error": 3}
    h.close()


def test_one_stall_under_thread_isolation_counts_once(frame_ctx):
    """A 1.2 s stall at 30 ms budget used to count every busy frame and quarantine the guardrail."""
    import threading

    from latentscape.hooks import hookimpl

    release = threading.Event()

    class Staller:
        n = 0

        @hookimpl
        def latentscape_check_frame(self, frame):
            self.n += 1
            if self.n == 1:
                release.wait(10)  # one long stall

    clock = _Clock()
    staller = Staller()
    h = _host(("stall", staller, "thread"), clock=clock, budget_ms=30, stall_limit_s=10.0)
    outs = []
    for i in range(40):  # 40 frames while the first call is stuck (1.2 s of 30 fps)
        clock.t += 0.03
        outs.append(int(h.check_frame(frame_ctx(i), _frame(200))[0, 0, 0]))
    st = h.plugin("stall")
    assert not st.quarantined and st.consecutive["latentscape_check_frame"] == 1
    assert st.failures["timeout"] == 1 and st.failures["busy"] == 39
    assert outs == [0] * 40  # fail closed while unchecked
    release.set()
    time.sleep(0.1)
    assert int(h.check_frame(frame_ctx(40), _frame(200))[0, 0, 0]) == 200  # back at once, never quarantined
    # a stall that never ends is quarantined after stall_limit_s
    release.clear()
    staller.n = 0
    for i in range(41, 45):
        clock.t += 4.0
        h.check_frame(frame_ctx(i), _frame(200))
    assert st.quarantined
    release.set()
    h.close()


def test_quarantined_guardrail_recovers_through_probation(frame_ctx, tmp_path):
    from latentscape.hooks import hookimpl

    class Flaky:
        broken = True

        @hookimpl
        def latentscape_check_frame(self, frame):
            if self.broken:
                raise RuntimeError("down")

    g = Flaky()
    clock = _Clock()
    audit = tmp_path / "audit.jsonl"
    h = _host(("g", g, "thread"), clock=clock, audit=audit, probation_after_s=30, probation_every_s=5, recover_after=2)

    def show(i):
        clock.t += 1.0
        return int(h.check_frame(frame_ctx(i), _frame(200))[0, 0, 0])

    assert [show(i) for i in range(3)] == [0, 0, 0]
    st = h.plugin("g")
    assert st.quarantined
    calls = st.calls
    assert [show(i) for i in range(3, 30)] == [0] * 27 and st.calls == calls  # cool-down: not called
    g.broken = False
    shown = [show(i) for i in range(30, 50)]
    # probes at +30 s (frame 32) and +35 s (frame 37) pass: back in; the probe frames stay on the slate
    assert not st.quarantined and st.recoveries == 1
    assert shown == [0] * 8 + [200] * 12
    h.close()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [e.get("event") for e in events if "event" in e]
    assert kinds == ["quarantine", "probe", "probe", "recovered"]
    # cool-down 30 s, then failed probes back off (10, 20, 40 s); probation_after_s = 0 means never
    h3 = _host(("g", Flaky(), "inline"), clock=clock, probation_after_s=30, probation_every_s=5)
    probe_times = []
    for i in range(200):
        clock.t += 1.0
        before = h3.plugin("g").calls
        h3.check_frame(frame_ctx(i), _frame())
        if h3.plugin("g").quarantined and h3.plugin("g").calls > before:
            probe_times.append(clock.t)
    h3.close()
    # (the first time is the quarantining call itself)
    assert [b - a for a, b in zip(probe_times, probe_times[1:])][:4] == [30.0, 10.0, 20.0, 40.0], probe_times
    h2 = _host(("g", Flaky(), "inline"), clock=clock, probation_after_s=0)
    for i in range(3):
        h2.check_frame(frame_ctx(i), _frame())
    clock.t += 1e6
    h2.check_frame(frame_ctx(4), _frame())
    assert h2.plugin("g").quarantined and h2.plugin("g").next_probe is None
    h2.close()


def test_audit_log_records_the_slate_hold_not_pass(frame_ctx, tmp_path):
    from latentscape.hooks import Verdict, hookimpl

    class BlockFirst:
        @hookimpl
        def latentscape_check_frame(self, ctx, frame):
            return Verdict.block(1.0, "bad") if ctx.index == 0 else None

    audit = tmp_path / "a.jsonl"
    h = _host(("b", BlockFirst(), "inline"), audit=audit, slate_hold_s=0.5)
    shown = [int(h.check_frame(frame_ctx(i, fps=10.0), _frame(200))[0, 0, 0]) for i in range(8)]
    h.close()
    assert shown == [0] * 5 + [200] * 3  # hold: frames 1-4 (t < 0.5 s) stay on the slate
    recs = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["verdict"] for r in recs] == ["block"] + ["slate_hold"] * 4 + ["pass"] * 3
    assert [r["shown"] for r in recs] == ["slate"] * 5 + ["frame"] * 3
    assert all(r["answer"] == "pass" for r in recs[1:5])


def test_wrong_return_types_from_open_hooks_are_failures(frame_ctx):
    from latentscape.hooks import SwapRequest, hookimpl

    class Chatty:
        @hookimpl
        def latentscape_frame_begin(self, ctx):
            return "something"

        @hookimpl
        def latentscape_adapter_swap_requested(self, request):
            return "no"  # not False: must not veto, and counts as a failure

    h = _host(("c", Chatty(), "inline"), probation_after_s=0)
    h.frame_begin(frame_ctx(0))
    assert h.plugin("c").failures == {"bad_return": 1}
    assert h._call_open(h.plugin("c"), "latentscape_adapter_swap_requested",
                        request=SwapRequest(target="t", mix={}, fade_s=0.0, source="x")) is None
    assert h.plugin("c").failures == {"bad_return": 2}
    for i in range(1, 4):
        h.frame_begin(frame_ctx(i))
    assert h.plugin("c").quarantined
    h.close()
