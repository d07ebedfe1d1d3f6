"""Memory of ``latentscape serve`` under large request bodies sent without the token.

    python -m latentscape.tools.benchmarks.serve_bodies [--bodies 3] [--mib 41] [--latentscape PATH]

Starts ``latentscape serve`` (``--latentscape``: which executable, e.g. another checkout's, to
compare) on a tiny random scene, sends ``--bodies`` POST /params requests of ``--mib`` MiB of
JSON (an array of zeros) each without a token, and prints the server's resident memory
(VmRSS) and peak (VmHWM) before and after, and the status codes. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _mem(pid: int, key: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bodies", type=int, default=3)
    ap.add_argument("--mib", type=float, default=41.0)
    ap.add_argument("--latentscape", default=shutil.which("latentscape") or "latentscape")
    a = ap.parse_args(argv)

    from latentscape.testing import make_tiny_scene

    tmp = Path(tempfile.mkdtemp(prefix="serve-bodies-"))
    scene = make_tiny_scene(tmp / "tiny")
    port = _free_port()
    proc = subprocess.Popen([a.latentscape, "serve", str(scene), "--port", str(port), "--token", "bench-token",
                             "--width", "16", "--height", "16", "--max-fps", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                print("serve did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.5)
        size = int(a.mib * 2**20)
        body = b"[" + b"0," * ((size - 3) // 2) + b"0]"
        rss0, peak0 = _mem(proc.pid, "VmRSS"), _mem(proc.pid, "VmHWM")
        codes = []
        for _ in range(a.bodies):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST /params HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body))
                try:
                    s.sendall(body)
                except OSError:  # the server answered and closed before reading it all
                    pass
                s.settimeout(60)
                data = s.recv(64)
                codes.append(data.split(b" ")[1].decode() if data.count(b" ") else "closed")
        time.sleep(1.0)
        print(f"{a.latentscape}: {a.bodies} x {len(body) / 2**20:.0f} MiB without a token -> {codes}; "
              f"RSS {rss0:.0f} -> {_mem(proc.pid, 'VmRSS'):.0f} MB, peak {peak0:.0f} -> {_mem(proc.pid, 'VmHWM'):.0f} MB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
