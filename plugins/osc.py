"""OSC trigger: adapter swaps and scene parameters from a lighting desk, TouchOSC, Max/MSP...

Listens on UDP (python-osc ``ThreadingOSCUDPServer``) for::

    /latentscape/adapter <name> [fade_s] [target]   swap the target's adapter ("none" or "" for base weights)
    /latentscape/blend <target> <name> <weight> [<name> <weight> ...] [fade_s]
    /latentscape/param <key> <value>                set a scene parameter (ctx.params[key])

Requests go through the host's Controls, so they land at a frame boundary.
Anything else is counted and dropped, never raised: packets that are not OSC
(``garbage``), larger than ``max_packet`` bytes (``oversized``), unknown addresses
(``unknown``), wrong argument types or unknown adapters (``rejected``). ``counts``
holds the tallies; ``port`` the bound port (``port = 0`` picks a free one).

Settings: ``host`` ("127.0.0.1"; "0.0.0.0" to listen on the network), ``port``
(9000), ``prefix`` ("/latentscape"), ``target`` ("nerf.color": the default adapter
target), ``fade_s`` (0.0: default cross-fade), ``max_packet`` (1024 bytes),
``params``: list of allowed parameter keys (default: any).

Needs the ``plugins`` extra (python-osc).
"""

from __future__ import annotations

import logging
import threading

from latentscape.config import with_defaults
from latentscape.errors import ConfigError, PluginError
from latentscape.hooks import hookimpl

log = logging.getLogger("latentscape.plugins.osc")

DEFAULTS = {"host": "127.0.0.1", "port": 9000, "prefix": "/latentscape", "target": "nerf.color", "fade_s": 0.0,
            "max_packet": 1024, "params": None}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


class OscTrigger:
    def __init__(self):
        self.cfg = dict(DEFAULTS)
        self.counts = {"packets": 0, "adapter": 0, "blend": 0, "param": 0, "garbage": 0, "oversized": 0,
                       "unknown": 0, "rejected": 0}
        self._lock = threading.Lock()
        self.server = None
        self._thread = None
        self.port = None
        self.controls = None

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    @hookimpl
    def latentscape_configure(self, settings: dict, controls) -> None:
        try:
            from pythonosc import dispatcher as osc_dispatcher
            from pythonosc import osc_packet
            from pythonosc.osc_server import ThreadingOSCUDPServer
        except ImportError:
            raise PluginError("the OSC trigger needs python-osc", hint="pip install 'latentscape[plugins]'") from None
        cfg = with_defaults(settings, DEFAULTS, where="osc settings")
        if not (isinstance(cfg["port"], int) and 0 <= cfg["port"] < 65536):
            raise ConfigError(f"osc: port must be 0..65535, got {cfg['port']!r}")
        if not (isinstance(cfg["max_packet"], int) and 16 <= cfg["max_packet"] <= 65507):
            raise ConfigError("osc: max_packet must be 16..65507 bytes")
        if not (_number(cfg["fade_s"]) and cfg["fade_s"] >= 0):
            raise ConfigError("osc: fade_s must be a number >= 0")
        self.cfg, self.controls = cfg, controls
        # strict_timing=False: a bundle timetagged far in the future must not park a server thread in sleep().
        d = osc_dispatcher.Dispatcher(strict_timing=False)
        p = cfg["prefix"].rstrip("/")
        d.map(f"{p}/adapter", self._guarded(self._on_adapter))
        d.map(f"{p}/blend", self._guarded(self._on_blend))
        d.map(f"{p}/param", self._guarded(self._on_param))
        d.set_default_handler(lambda address, *args: self._count("unknown"))
        plugin = self
        max_packet = cfg["max_packet"]

        class Server(ThreadingOSCUDPServer):
            daemon_threads = True
            max_packet_size = max_packet + 1  # one byte more than allowed: a longer datagram shows as oversized

            def verify_request(self, request, client_address):
                data = request[0]
                plugin._count("packets")
                if len(data) > max_packet:
                    plugin._count("oversized")
                    return False
                try:
                    osc_packet.OscPacket(data)
                except Exception:  # noqa: BLE001 - python-osc raises ParseError and, on some junk, others
                    plugin._count("garbage")
                    return False
                return True

            def handle_error(self, request, client_address):
                plugin._count("rejected")  # never print a traceback for what a sender did

        try:
            self.server = Server((cfg["host"], cfg["port"]), d)
        except OSError as err:
            raise ConfigError(f"osc: cannot listen on {cfg['host']}:{cfg['port']}: {err.strerror}",
                              hint="choose another port in the osc plugin's settings") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="latentscape-osc", daemon=True)
        self._thread.start()
        log.info("OSC trigger listening on %s:%d", cfg["host"], self.port)

    def _guarded(self, fn):
        def handler(address, *args):
            try:
                ok = fn(*args)
            except Exception as err:  # noqa: BLE001 - a bad message is the sender's problem
                log.info("OSC %s %r rejected: %s", address, args[:4], err)
                ok = False
            if not ok:
                self._count("rejected")
        return handler

    def _on_adapter(self, *args) -> bool:
        if not 1 <= len(args) <= 3 or not isinstance(args[0], str):
            return False
        name = args[0] or None
        if name in ("none", "base"):
            name = None
        fade = args[1] if len(args) > 1 else self.cfg["fade_s"]
        target = args[2] if len(args) > 2 else self.cfg["target"]
        if not (_number(fade) and fade >= 0 and isinstance(target, str)):
            return False
        self.controls.request_adapter(target, name, fade_s=float(fade))
        self._count("adapter")
        return True

    def _on_blend(self, *args) -> bool:
        if len(args) < 3 or not isinstance(args[0], str):
            return False
        target, rest = args[0], list(args[1:])
        fade = self.cfg["fade_s"]
        if len(rest) % 2 == 1:
            fade = rest.pop()
        pairs = list(zip(rest[::2], rest[1::2]))
        if not (_number(fade) and fade >= 0) or not all(isinstance(n, str) and _number(w) for n, w in pairs):
            return False
        self.controls.request_adapter(target, {n: float(w) for n, w in pairs}, fade_s=float(fade))
        self._count("blend")
        return True

    def _on_param(self, *args) -> bool:
        if len(args) != 2 or not isinstance(args[0], str) or not args[0]:
            return False
        key, value = args
        allowed = self.cfg["params"]
        if allowed is not None and key not in allowed:
            return False
        if not (_number(value) or isinstance(value, (str, bool))):
            return False
        self.controls.set_param(key, value)
        self._count("param")
        return True

    @hookimpl
    def latentscape_scene_unloaded(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


latentscape_plugin = OscTrigger
