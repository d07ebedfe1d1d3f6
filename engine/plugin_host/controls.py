"""The :class:`latentscape.hooks.Controls` a plugin gets: in the host's process every
request is tagged with the plugin's name; in a subprocess worker requests are
queued and travel back with each reply."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from latentscape.plugin_host.host import PluginHost

log = logging.getLogger("latentscape.plugins")


class PluginControls:
    """The Controls a plugin gets: every request is tagged with the plugin's name."""

    def __init__(self, host: "PluginHost", name: str):
        self._host = weakref.proxy(host)
        self._name = name

    def request_adapter(self, target, mix, *, fade_s=0.0):
        self._host.request_adapter(target, mix, fade_s=fade_s, source=self._name)

    def set_param(self, key, value):
        self._host.set_param(key, value, source=self._name)

    def adapters(self):
        return self._host.adapter_names()

    def log(self, message, **fields):
        log.info("[%s] %s %s", self._name, message, fields or "")


class QueuedControls:
    """Controls inside a subprocess worker: requests travel back with each reply."""

    def __init__(self, adapters: dict):
        self.requests: list[tuple] = []
        self._adapters = adapters

    def request_adapter(self, target, mix, *, fade_s=0.0):
        self.requests.append(("adapter", target, mix, fade_s))

    def set_param(self, key, value):
        self.requests.append(("param", key, value))

    def adapters(self):
        return dict(self._adapters)

    def log(self, message, **fields):
        self.requests.append(("log", message, fields))
