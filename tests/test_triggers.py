"""Schedule and activity triggers (injected clocks), through the real host and adapters."""

from __future__ import annotations

import datetime as dt

import pytest

from latentscape.errors import PluginError
from latentscape.plugins.activity import ActivityTrigger
from latentscape.plugins.schedule import ScheduleTrigger
from latentscape.plugin_host import PluginHost, PluginSpec
from latentscape.testing import PluginHarness, make_tiny_scene


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_tiny_scene(tmp_path_factory.mktemp("s") / "scene", adapters=("day", "night", "festive", "calm", "lively"))


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


RULES = {"target": "nerf.color", "default": "night", "check_every_s": 0.0,
         "rules": [{"dates": ["12-24", "2026-12-31"], "adapter": "festive"},
                   {"from": "08:00", "to": "20:00", "adapter": "day"}]}


def test_schedule_rules():
    s = ScheduleTrigger()
    s.latentscape_configure(RULES, controls=None)
    at = lambda *a: s.adapter_at(dt.datetime(*a))  # noqa: E731
    assert at(2026, 6, 1, 8, 0) == "day" and at(2026, 6, 1, 19, 59, 59) == "day"
    assert at(2026, 6, 1, 20, 0) == "night" and at(2026, 6, 1, 7, 59) == "night"
    assert at(2025, 12, 24, 3, 0) == "festive" and at(2026, 12, 31, 12, 0) == "festive" and at(2027, 12, 31, 12, 0) == "day"
    s2 = ScheduleTrigger()
    s2.latentscape_configure({"rules": [{"from": "22:00", "to": "06:00", "adapter": "late", "dates": ["01-01"]}]}, None)
    assert s2.adapter_at(dt.datetime(2026, 1, 1, 23, 0)) == "late"
    assert s2.adapter_at(dt.datetime(2026, 1, 2, 3, 0)) == "late"  # the night that began on 01-01
    assert s2.adapter_at(dt.datetime(2026, 1, 1, 3, 0)) == ""


@pytest.mark.parametrize("rule", [{"from": "25:00", "adapter": "x"}, {"from": "12:60", "adapter": "x"},
                                  {"to": "23:59:60", "adapter": "x"}, {"from": "8:00", "adapter": "x"},
                                  {"from": "noon", "adapter": "x"}, {"dates": ["02-30"], "adapter": "x"},
                                  {"dates": ["2026-02-29"], "adapter": "x"}, {"dates": ["13-01"], "adapter": "x"},
                                  {"from": "08:00"}, {"from": 8, "adapter": "x"}])
def test_schedule_impossible_times_are_config_errors(rule):
    with pytest.raises(PluginError, match="schedule"):
        PluginHost([PluginSpec("sched", obj=ScheduleTrigger(), settings={"rules": [rule]})])


def test_schedule_swaps_through_host_at_frame_boundaries(scene):
    clock = Clock(dt.datetime(2026, 6, 1, 19, 59, 58))
    with PluginHarness(scene, [("sched", ScheduleTrigger(clock))], settings={"sched": RULES}) as h:
        run = h.run(frames=2)
        assert all(v["nerf.color"].startswith("day@") for v in run.versions)
        clock.now = dt.datetime(2026, 6, 1, 20, 0, 1)
        run = h.run(frames=2)
        assert all(v["nerf.color"].startswith("night@") for v in run.versions)
        assert h.host.plugin("sched").spec.obj.requests == 2  # one request per change, not per frame


def test_activity_intensity_levels_and_param(scene):
    t = Clock(100.0)
    act = ActivityTrigger(t)
    settings = {"half_life_s": 1.0, "hysteresis": 0.2, "weights": {"mouse": 0.1},
                "levels": [{"above": 0.0, "adapter": "calm"}, {"above": 5.0, "adapter": "lively"}]}
    with PluginHarness(scene, [("act", act)], settings={"act": settings}, clock=t) as h:
        run = h.run(frames=1)
        assert run.versions[0]["nerf.color"].startswith("calm@") and run.contexts[0].params["activity"] == 0.0
        for _ in range(6):
            h.host.activity("key")
        h.host.activity("mouse", 20.0)  # 20 px * 0.1
        assert act.intensity() == pytest.approx(8.0)
        run = h.run(frames=1)
        assert run.versions[0]["nerf.color"].startswith("lively@") and run.contexts[0].params["activity"] == pytest.approx(8.0)
        t.now += 0.8  # 8 * 2**-0.8 = 4.6: below 5 but within the hysteresis band
        assert h.run(frames=1).versions[0]["nerf.color"].startswith("lively@")
        t.now += 1.0  # 2.3
        assert h.run(frames=1).versions[0]["nerf.color"].startswith("calm@")


def test_activity_from_another_thread_is_safe(scene):
    import threading

    act = ActivityTrigger()
    with PluginHarness(scene, [("act", act)], settings={"act": {"half_life_s": 1000.0}}) as h:
        threads = [threading.Thread(target=lambda: [h.host.activity("touch") for _ in range(500)]) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert act.intensity() == pytest.approx(2000.0, rel=1e-3)
