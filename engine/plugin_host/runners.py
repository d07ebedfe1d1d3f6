"""Isolation: how one plugin's hooks are called (``inline``, ``thread``, ``subprocess``),
each call under a time budget. A call that raises, overruns or crashes its worker
is a :class:`CallFailed`; what that means (slate or not) is the host's policy."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import types
from typing import Any, Callable

from latentscape.errors import PluginError
from latentscape.hooks import make_plugin_manager
from latentscape.plugin_host.controls import QueuedControls
from latentscape.plugin_host.loading import impls_of, resolve_plugin_object


class CallFailed(Exception):
    """A hook call that did not give a usable answer: ``kind`` is error, timeout, busy, crash."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class InlineRunner:
    def __init__(self, impls: dict[str, Callable], argnames: dict[str, tuple[str, ...]]):
        self.impls, self.argnames = impls, argnames

    @property
    def hooks(self) -> set[str]:
        return set(self.impls)

    def call(self, hook: str, kwargs: dict, timeout: float) -> Any:
        fn = self.impls[hook]
        start = time.perf_counter()
        try:
            out = fn(**{a: kwargs[a] for a in self.argnames[hook]})
        except Exception as err:  # noqa: BLE001 - isolating foreign code is the point
            raise CallFailed("error", f"{type(err).__name__}: {err}") from err
        if time.perf_counter() - start > timeout:
            raise CallFailed("timeout", f"took {1000 * (time.perf_counter() - start):.1f} ms, budget {1000 * timeout:.1f} ms")
        return out

    def close(self) -> None:
        pass


class _Job:
    __slots__ = ("fn", "kwargs", "done", "result", "exc")

    def __init__(self, fn, kwargs):
        self.fn, self.kwargs = fn, kwargs
        self.done = threading.Event()
        self.result = None
        self.exc: BaseException | None = None


class ThreadRunner(InlineRunner):
    """One daemon worker thread per plugin (daemon: a plugin stuck forever cannot
    keep the process alive at exit, unlike concurrent.futures' joined workers)."""

    def __init__(self, impls, argnames, name: str):
        super().__init__(impls, argnames)
        self.name = name
        self._call_lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        """A fresh worker (at init, and for the first call after ``close()``: probation)."""
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, args=(self._q,), name=f"plugin:{self.name}", daemon=True)
        self._thread.start()

    @staticmethod
    def _work(q: queue.SimpleQueue) -> None:
        while True:
            job = q.get()
            if job is None:
                return
            try:
                job.result = job.fn(**job.kwargs)
            except BaseException as err:  # noqa: BLE001 - SystemExit from a plugin must not kill the worker silently
                job.exc = err
            job.done.set()

    def call(self, hook: str, kwargs: dict, timeout: float) -> Any:
        # Callers from several threads (the loop, the viewer's activity events) take turns.
        if not self._call_lock.acquire(timeout=timeout):
            raise CallFailed("busy", "another call to it did not finish within the budget")
        try:
            if self._closed:
                self._start()  # a stalled old worker, if any, finishes on its own and exits
            if self._pending is not None and not self._pending.done.is_set():
                raise CallFailed("busy", "its previous call is still running")
            job = _Job(self.impls[hook], {a: kwargs[a] for a in self.argnames[hook]})
            self._pending = job
            self._q.put(job)
            finished = job.done.wait(timeout)
        finally:
            self._call_lock.release()
        if not finished:
            raise CallFailed("timeout", f"no answer within {1000 * timeout:.1f} ms")
        if job.exc is not None:
            raise CallFailed("error", f"{type(job.exc).__name__}: {job.exc}") from job.exc
        return job.result

    def close(self) -> None:
        self._closed = True
        self._q.put(None)


def _slim_ctx(ctx) -> Any:
    """A picklable copy of a FrameContext for subprocess plugins (no camera, no extras)."""
    if ctx is None:
        return None
    return types.SimpleNamespace(index=ctx.index, time=ctx.time, deadline=ctx.deadline, scene_version=ctx.scene_version,
                                 adapters=dict(ctx.adapters), params=dict(ctx.params), stats=dict(ctx.stats),
                                 now=getattr(ctx, "now", None))


def _subprocess_main(conn, ref: str, name: str, settings: dict, adapters: dict) -> None:
    """Entry point of a subprocess worker: load the plugin, then answer calls until told to stop."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a plugin that aborts must not leave core files
    except (ImportError, ValueError, OSError):
        pass
    try:
        obj = resolve_plugin_object(ref, name=name)
        pm = make_plugin_manager()
        pm.register(obj, name=name)
        pm.check_pending()
        impls, argnames = impls_of(pm, name)
        controls = QueuedControls(adapters)
        if "latentscape_configure" in impls:
            impls["latentscape_configure"](**{a: {"settings": settings, "controls": controls}[a]
                                               for a in argnames["latentscape_configure"]})
        conn.send(("ready", sorted(impls), controls.requests))
        controls.requests = []
    except BaseException as err:  # noqa: BLE001
        conn.send(("failed", f"{type(err).__name__}: {err}", []))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        hook, kwargs = msg
        try:
            out = impls[hook](**{a: kwargs.get(a) for a in argnames[hook]})
            reply = ("ok", out, controls.requests)
        except BaseException as err:  # noqa: BLE001
            reply = ("err", f"{type(err).__name__}: {err}", controls.requests)
        controls.requests = []
        try:
            conn.send(reply)
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("err", f"result cannot be sent back: {type(err).__name__}: {err}", []))


class SubprocessRunner:
    """A plugin in a 'spawn' worker process; killed and restarted when a call fails hard."""

    def __init__(self, ref: str, name: str, settings: dict, adapters: dict, start_timeout: float,
                 on_requests: Callable[[list], None]):
        self.ref, self.name, self.settings, self.adapters_snapshot = ref, name, settings, adapters
        self.start_timeout = start_timeout
        self.on_requests = on_requests
        self._mp = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        self.restarts = -1
        self._hooks: set[str] = set()
        self._start()

    @property
    def hooks(self) -> set[str]:
        return self._hooks

    def _start(self) -> None:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(target=_subprocess_main, args=(child, self.ref, self.name, self.settings, self.adapters_snapshot),
                                name=f"latentscape-plugin:{self.name}", daemon=True)
        proc.start()
        child.close()
        self.restarts += 1
        if not parent.poll(self.start_timeout):
            self._kill(proc, parent)
            raise PluginError(f"plugin {self.name!r}: subprocess worker did not start within {self.start_timeout:.0f} s")
        try:
            kind, info, requests = parent.recv()
        except (EOFError, OSError):
            self._kill(proc, parent)
            raise PluginError(f"plugin {self.name!r}: subprocess worker died while loading the plugin") from None
        if kind != "ready":
            self._kill(proc, parent)
            raise PluginError(f"plugin {self.name!r}: {info}")
        self._hooks = set(info)
        self._proc, self._conn = proc, parent
        if requests:
            self.on_requests(requests)

    @staticmethod
    def _kill(proc, conn) -> None:
        try:
            conn.close()
        except OSError:
            pass
        if proc.is_alive():
            proc.kill()
        proc.join(5)

    def call(self, hook: str, kwargs: dict, timeout: float) -> Any:
        if self._proc is None:
            try:
                self._start()
            except PluginError as err:
                raise CallFailed("crash", f"restart failed: {err.message}") from None
        if "ctx" in kwargs:
            kwargs = {**kwargs, "ctx": _slim_ctx(kwargs["ctx"])}
        try:
            self._conn.send((hook, kwargs))
            if not self._conn.poll(timeout):
                self._reset()
                raise CallFailed("timeout", f"no answer within {1000 * timeout:.1f} ms; worker killed")
            kind, out, requests = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self._proc.exitcode if self._proc is not None else None
            self._reset()
            raise CallFailed("crash", f"worker died (exit code {code})") from None
        if requests:
            self.on_requests(requests)
        if kind == "err":
            raise CallFailed("error", out)
        return out

    def _reset(self) -> None:
        if self._proc is not None:
            self._kill(self._proc, self._conn)
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(1)
            self._reset()
