"""Subprocess isolation: a plugin that exits, aborts or loops forever cannot take the engine down."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from latentscape.errors import PluginError
from latentscape.plugin_host import HostConfig, PluginHost, PluginSpec

PLUGIN = textwrap.dedent('''
    import os, sys, time
    from latentscape.hooks import hookimpl, Verdict

    class Plugin:
        def __init__(self):
            self.mode = "pass"

        @hookimpl
        def latentscape_configure(self, settings, controls):
            self.mode = settings.get("mode", "pass")
            self.controls = controls

        @hookimpl
        def latentscape_check_frame(self, ctx, frame):
            bad = ctx.index in (1, 2)   # misbehave on frames 1 and 2 only
            if bad and self.mode == "exit":
                sys.exit(3)
            if bad and self.mode == "hard_exit":
                os._exit(3)
            if bad and self.mode == "abort":
                os.abort()
            if bad and self.mode == "segv":
                import ctypes
                ctypes.string_at(0)
            if bad and self.mode == "loop":
                while True:
                    pass
            if self.mode == "always_exit":
                sys.exit(1)
            self.controls.set_param("seen", int(ctx.index))
            return Verdict.ok(float(frame.mean()))

    latentscape_plugin = Plugin
''')


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "ls_untrusted_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawn workers inherit sys.path
    return "ls_untrusted_plugin"


# sys.exit is caught inside the worker (SystemExit is an exception there): an error, no restart.
@pytest.mark.parametrize("mode,restarts", [("exit", 0), ("hard_exit", 2), ("abort", 2), ("segv", 2), ("loop", 2)])
def test_subprocess_plugin_failures_show_slate_and_worker_restarts(plugin_module, mode, restarts, tmp_path, frame_ctx):
    audit = tmp_path / "audit.jsonl"
    h = PluginHost([PluginSpec("untrusted", module=plugin_module, isolation="subprocess", budget_ms=1500,
                               settings={"mode": mode})],
                   HostConfig(quarantine_after=3, slate_hold_s=0.0), audit_log=audit)
    f = np.full((6, 6, 3), 200, np.uint8)
    shown = []
    for i in range(4):
        c = frame_ctx(i)
        h.frame_begin(c)
        shown.append(int(h.check_frame(c, f)[0, 0, 0]))
        h.frame_end(c, f)
    assert shown == [200, 0, 0, 200]
    st = h.plugin("untrusted")
    assert not st.quarantined and st.runner.restarts == restarts
    assert sum(st.failures.values()) == 2
    assert h.params.get("seen") == 0  # requests from the worker travel back with its replies
    h.close()
    verdicts = [json.loads(line)["verdict"] for line in audit.read_text().splitlines()]
    assert verdicts[0] == "pass" and verdicts[1] == {"exit": "error", "loop": "timeout"}.get(mode, "crash") and verdicts[3] == "pass"


def test_subprocess_plugin_quarantined_after_repeated_crashes(plugin_module, frame_ctx):
    h = PluginHost([PluginSpec("untrusted", module=plugin_module, isolation="subprocess", budget_ms=3000,
                               settings={"mode": "always_exit"})], HostConfig(quarantine_after=2, slate_hold_s=0.0))
    f = np.full((4, 4, 3), 255, np.uint8)
    for i in range(4):
        assert (h.check_frame(frame_ctx(i), f) == 0).all()
    st = h.plugin("untrusted")
    assert st.quarantined and st.calls == 2
    h.close()


def test_subprocess_plugin_that_fails_to_load_is_a_plugin_error(tmp_path, monkeypatch):
    (tmp_path / "ls_broken_plugin.py").write_text("raise SystemExit('no')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="broken"):
        PluginHost([PluginSpec("broken", module="ls_broken_plugin", isolation="subprocess")])
