"""Plugin host: fail-closed guardrails, fail-open triggers, quarantine, audit log, config."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest

from latentscape.errors import ConfigError, PluginError
from latentscape.hooks import HOOK_NAMES, SceneInfo, Verdict, hookimpl
from latentscape.plugin_host import HostConfig, PluginHost, PluginSpec, make_slate, parse_plugin_config


def frame(value: int = 128, h: int = 8, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


class Passer:
    def __init__(self):
        self.seen = 0

    @hookimpl
    def latentscape_check_frame(self, frame):
        self.seen += 1
        return Verdict.ok(0.1)


class Raiser:
    @hookimpl
    def latentscape_check_frame(self, ctx, frame):
        raise RuntimeError("boom")


class Hanger:
    def __init__(self):
        self.release = threading.Event()

    @hookimpl
    def latentscape_check_frame(self, frame):
        self.release.wait(5)


class WrongType:
    def __init__(self, out):
        self.out = out

    @hookimpl
    def latentscape_check_frame(self, frame):
        return self.out


class FlakyTrigger:
    @hookimpl
    def latentscape_frame_begin(self, ctx):
        raise ValueError("trigger bug")


def host(*plugins, config=None, **kw) -> PluginHost:
    specs = [PluginSpec(name=n, obj=o, **kw) for n, o in plugins]
    return PluginHost(specs, config or HostConfig(slate_hold_s=0.0))


def test_hook_names_are_prefixed_and_documented():
    from latentscape.hooks import LatentscapeSpecs

    assert "latentscape_check_frame" in HOOK_NAMES and "latentscape_configure" in HOOK_NAMES
    for name in HOOK_NAMES:
        assert (getattr(LatentscapeSpecs, name).__doc__ or "").strip(), name


def test_passing_guardrail_keeps_frame(frame_ctx):
    p = Passer()
    h = host(("ok", p))
    f = frame(77)
    out = h.check_frame(frame_ctx(0), f)
    assert np.array_equal(out, f) and p.seen == 1


@pytest.mark.parametrize("plugin", [Raiser(), WrongType("fine"), WrongType(Verdict.replace(np.zeros((4, 4, 3), np.uint8))),
                                    WrongType(Verdict.replace(np.zeros((8, 8, 3), np.float32))), WrongType(Verdict("maybe"))])
def test_bad_guardrail_shows_slate(plugin, tmp_path, frame_ctx):
    h = PluginHost([PluginSpec("bad", obj=plugin), PluginSpec("later", obj=Passer())],
                   HostConfig(slate="#102030", slate_hold_s=0.0), audit_log=tmp_path / "audit.jsonl")
    out = h.check_frame(frame_ctx(3, scene_version="v1"), frame(200))
    assert out.shape == (8, 8, 3) and (out == np.array([0x10, 0x20, 0x30], np.uint8)).all()
    h.frame_end(frame_ctx(3, scene_version="v1"), out)
    rec = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert rec[0]["plugin"] == "bad" and rec[0]["verdict"] in ("error", "bad_return") and rec[0]["frame"] == 3
    assert rec[0]["scene_version"] == "v1"
    assert h.report()["bad"]["failures"]
    h.close()


def test_hanging_guardrail_times_out_to_slate_and_is_busy_next(frame_ctx):
    hang = Hanger()
    h = host(("hang", hang), budget_ms=30)
    t0 = time.perf_counter()
    out = h.check_frame(frame_ctx(0), frame(255))
    assert time.perf_counter() - t0 < 1.0
    assert (out == 0).all()
    out = h.check_frame(frame_ctx(1), frame(255))  # previous call still running
    assert (out == 0).all()
    assert h.report()["hang"]["failures"] == {"timeout": 1, "busy": 1}
    hang.release.set()
    time.sleep(0.05)
    hang.release.set()
    out = h.check_frame(frame_ctx(2), frame(255))
    assert (out == 255).all()
    h.close()


def test_inline_overrun_fails_closed(frame_ctx):
    class Slow:
        @hookimpl
        def latentscape_check_frame(self, frame):
            time.sleep(0.03)

    h = host(("slow", Slow()), isolation="inline", budget_ms=5)
    assert (h.check_frame(frame_ctx(0), frame(255)) == 0).all()
    assert h.report()["slow"]["failures"] == {"timeout": 1}


def test_quarantine_after_repeated_failures(caplog, frame_ctx):
    h = PluginHost([PluginSpec("bad", obj=Raiser())], HostConfig(quarantine_after=3, slate_hold_s=0.0))
    with caplog.at_level(logging.ERROR, logger="latentscape.plugins"):
        for i in range(5):
            assert (h.check_frame(frame_ctx(i), frame(255)) == 0).all()
    st = h.plugin("bad")
    assert st.quarantined and st.calls == 3  # no calls once quarantined, still the slate
    assert any("quarantined" in r.message and "bad" in r.message for r in caplog.records)


def test_quarantined_guardrail_can_be_skipped(frame_ctx):
    h = PluginHost([PluginSpec("bad", obj=Raiser(), on_quarantine="skip")], HostConfig(quarantine_after=2, slate_hold_s=0.0))
    outs = [h.check_frame(frame_ctx(i), frame(255)) for i in range(4)]
    assert [int(o[0, 0, 0]) for o in outs] == [0, 0, 255, 255]


def test_success_resets_consecutive_count(frame_ctx):
    class Alternating:
        n = 0

        @hookimpl
        def latentscape_check_frame(self, frame):
            self.n += 1
            if self.n % 2:
                raise RuntimeError("odd")

    h = PluginHost([PluginSpec("alt", obj=Alternating())], HostConfig(quarantine_after=2, slate_hold_s=0.0))
    for i in range(10):
        h.check_frame(frame_ctx(i), frame())
    assert not h.plugin("alt").quarantined


def test_trigger_fails_open_and_is_quarantined(frame_ctx):
    h = PluginHost([PluginSpec("flaky", obj=FlakyTrigger()), PluginSpec("ok", obj=Passer())], HostConfig(quarantine_after=2))
    for i in range(3):
        c = frame_ctx(i)
        h.frame_begin(c)
        assert np.array_equal(h.check_frame(c, frame(9)), frame(9))
    assert h.plugin("flaky").quarantined and h.plugin("flaky").calls == 2


def test_replace_chains_and_slate_stops_chain(frame_ctx):
    class Dim:
        @hookimpl
        def latentscape_check_frame(self, frame):
            return Verdict.replace(frame // 2, score=0.5, reason="dim")

    class Blocker:
        @hookimpl
        def latentscape_check_frame(self, frame):
            return Verdict.block(1.0, "no") if frame[0, 0, 0] > 60 else None

    h = host(("dim", Dim()), ("block", Blocker()))
    assert (h.check_frame(frame_ctx(0), frame(100)) == 50).all()
    assert (h.check_frame(frame_ctx(1), frame(200)) == 0).all()


def test_frame_given_to_guardrail_is_read_only(frame_ctx):
    class Mutator:
        @hookimpl
        def latentscape_check_frame(self, frame):
            frame[:] = 0

    h = host(("mut", Mutator()))
    f = frame(99)
    out = h.check_frame(frame_ctx(0), f)
    assert (f == 99).all() and (out == 0).all()  # the write failed, so the guardrail failed closed


def test_slate_hold_prevents_slate_flicker(frame_ctx):
    class EveryOther:
        @hookimpl
        def latentscape_check_frame(self, ctx, frame):
            return Verdict.block() if ctx.index % 2 == 0 else None

    h = PluginHost([PluginSpec("eo", obj=EveryOther())], HostConfig(slate_hold_s=1.0))
    shown = [int(h.check_frame(frame_ctx(i), frame(255))[0, 0, 0]) for i in range(24)]
    assert shown == [0] * 24  # never toggles at frame rate
    assert int(h.check_frame(frame_ctx(49), frame(255))[0, 0, 0]) == 255


def test_params_land_at_next_frame_begin(frame_ctx):
    h = host()
    c0 = frame_ctx(0)
    h.frame_begin(c0)
    h.set_param("speed", 2)
    assert "speed" not in c0.params
    c1 = frame_ctx(1)
    h.frame_begin(c1)
    assert c1.params["speed"] == 2


def test_audit_log_records_every_decision(tmp_path, frame_ctx):
    log_path = tmp_path / "a" / "audit.jsonl"
    h = PluginHost([PluginSpec("ok", obj=Passer())], HostConfig(), audit_log=log_path,
                   scene=SceneInfo(path=None, name="s", version="v1", config={}))
    for i in range(3):
        c = frame_ctx(i)
        h.frame_end(c, h.check_frame(c, frame()))
    h.close()
    rec = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["frame"] for r in rec] == [0, 1, 2]
    assert {"frame", "time", "plugin", "verdict", "score", "scene_version"} <= set(rec[0])
    assert rec[0]["verdict"] == "pass" and rec[0]["score"] == pytest.approx(0.1)


def test_config_parsing_and_errors(tmp_path):
    cfg = {"guardrails": {"slate": [0.0, 0.0, 1.0], "budget_ms": 40.0},
           "plugins": [{"name": "flash_guard", "module": "latentscape.plugins.flash", "isolation": "inline",
                        "settings": {"mode": "hold"}}]}
    hc, specs = parse_plugin_config(cfg)
    assert hc.budget_ms == 40.0 and specs[0].settings == {"mode": "hold"} and specs[0].isolation == "inline"
    with pytest.raises(ConfigError, match="isolation"):
        parse_plugin_config({"plugins": [{"name": "x", "isolation": "docker"}]})
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_plugin_config({"plugins": [{"name": "x", "threshold": 3}]})
    with pytest.raises(ConfigError, match="unique"):
        parse_plugin_config({"plugins": [{"name": "x"}, {"name": "x"}]})
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_plugin_config({"guardrails": {"slat": "#000000"}})
    with pytest.raises(PluginError, match="no plugin called 'nope'"):
        PluginHost([PluginSpec("nope")])
    with pytest.raises(PluginError, match="cannot import"):
        PluginHost([PluginSpec("x", module="latentscape.plugins.does_not_exist")])
    assert (make_slate([0.0, 0.0, 1.0], 2, 2) == [0, 0, 255]).all()
    from PIL import Image

    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(tmp_path / "slate.png")
    assert (make_slate("slate.png", 3, 5, root=tmp_path) == 7).all()
    with pytest.raises(ConfigError, match="slate image"):
        make_slate("missing.png", 3, 5, root=tmp_path)


def test_misspelled_hook_is_reported_by_name():
    class Typo:
        @hookimpl
        def latentscape_check_frmae(self, frame):
            pass

    with pytest.raises(PluginError, match="typo"):
        PluginHost([PluginSpec("typo", obj=Typo())])


def test_bad_settings_fail_at_load():
    class Picky:
        @hookimpl
        def latentscape_configure(self, settings):
            if "level" not in settings:
                raise ConfigError("needs a level")

    with pytest.raises(PluginError, match="picky.*needs a level"):
        PluginHost([PluginSpec("picky", obj=Picky())])
