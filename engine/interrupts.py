"""Ctrl-C and SIGTERM become exceptions that unwind cleanly, every time.

The CLI (and a stream sink opened by any program) installs these handlers in the main
thread, so ``finally`` blocks and :mod:`latentscape.outputs` remove partial outputs and
close sinks on the way out:

* **SIGTERM** -> :class:`Terminated` (a ``SystemExit`` with code 143), when SIGTERM still
  has its default action.
* **SIGINT** -> :class:`Interrupted` (a ``KeyboardInterrupt``; the CLI exits 130), when
  SIGINT still has Python's default handler.

Two CPython behaviours made Ctrl-C unreliable during a render's first frame, when numba
compiles kernels and scipy builds modules from generated code (measured: a
``python -m latentscape.tools.cli render`` interrupted then died *by* SIGINT with no
message about 1 run in 16, or ignored Ctrl-C and rendered on, 1 in 14):

1. A bare ``KeyboardInterrupt`` that leaves any ``exec(str)`` sets an interpreter-wide
   flag (CPython 3.11's ``_Py_UnhandledKeyboardInterrupt``); even when the CLI then
   handles it and exits 130, ``python -m`` ends by killing itself with SIGINT. The flag
   checks the exception's exact type, so :class:`Interrupted`, a subclass that every
   ``except KeyboardInterrupt`` still catches, does not set it.
2. An exception raised while a finalizer (``__del__``, a weakref callback) runs is printed
   as "Exception ignored" and dropped: the signal is lost. The ``sys.unraisablehook``
   installed here recognises a dropped :class:`Interrupted` / :class:`Terminated` and
   delivers the signal again a moment later, from outside the finalizer, silently.

And one of numba's: an exception raised in the middle of its compiler leaves llvmlite's
objects half torn down, which later print tracebacks from their finalizers. While the JIT
compiler (a numba or llvmlite frame) is on the interrupted stack, the handlers defer: the
signal is delivered again every :data:`REDELIVER_AFTER_S` until the stack is clear, so a
Ctrl-C during a compile takes effect when that kernel is compiled (a few seconds at most).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["Interrupted", "Terminated", "exit_on_sigterm", "install"]

REDELIVER_AFTER_S = 0.01


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) as raised by latentscape's handler; caught by ``except KeyboardInterrupt``."""


class Terminated(SystemExit):
    """SIGTERM as raised by latentscape's handler: ``SystemExit(128 + SIGTERM)``."""


_DEFER_IN = (f"{os.sep}numba{os.sep}", f"{os.sep}llvmlite{os.sep}")


def _in_compiler(frame) -> bool:
    """True if a numba / llvmlite frame is on the stack (the JIT compiler is running)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if any(part in name for part in _DEFER_IN):
            return True
        frame = frame.f_back
    return False


def _later(signum: int) -> None:
    timer = threading.Timer(REDELIVER_AFTER_S, _redeliver, (signum,))
    timer.daemon = True
    timer.start()


def _on_signal(signum, frame) -> None:
    """SIGINT -> :class:`Interrupted`, SIGTERM -> :class:`Terminated`, once no compiler frame is on the stack."""
    if _in_compiler(frame):
        _later(signum)
        return
    raise Interrupted() if signum == signal.SIGINT else Terminated(128 + signum)


_previous_hook = sys.unraisablehook


def _redeliver(signum: int) -> None:
    if not sys.is_finalizing():
        os.kill(os.getpid(), signum)


def _unraisable(unraisable) -> None:
    """A finalizer swallowed our exception: the signal would be lost; send it again."""
    exc = unraisable.exc_value
    signum = (signal.SIGINT if isinstance(exc, Interrupted)
              else signal.SIGTERM if isinstance(exc, Terminated) else None)
    if signum is None:
        _previous_hook(unraisable)
        return
    _later(signum)


def _install_hook() -> None:
    global _previous_hook
    if sys.unraisablehook is not _unraisable:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable


def _replace(signum: int, expected, handler) -> bool:
    """Install ``handler`` for ``signum`` if the current handler is ``expected``."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = signal.getsignal(signum)
        if current is handler:
            return True
        if current is not expected:  # ignored (a background job), or the embedding program's own handler
            return False
        signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main interpreter / unsupported platform
        return False
    _install_hook()
    return True


def exit_on_sigterm() -> bool:
    """SIGTERM -> :class:`Terminated` (exit 143) in the main thread, when SIGTERM still has
    its default action. True if our handler is in place."""
    return _replace(signal.SIGTERM, signal.SIG_DFL, _on_signal)


def install() -> None:
    """SIGTERM and SIGINT handlers for a command-line run (see the module docstring).
    A signal that is ignored or already has someone else's handler is left alone."""
    exit_on_sigterm()
    _replace(signal.SIGINT, signal.default_int_handler, _on_signal)
