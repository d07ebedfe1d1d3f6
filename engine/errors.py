"""Typed errors a user can cause, each naming the file and the fix.

Everything a user can get wrong (a malformed dataset, a scene whose lock does not
match, a camera path with a missing field, an unwritable output, a malicious
pickle, a plugin that raises) surfaces as a subclass of :class:`LatentscapeError`.
The CLI prints the message and exits non-zero; it never shows a traceback for
these.
"""

from __future__ import annotations

from pathlib import Path


class LatentscapeError(Exception):
    """Base of every error latentscape raises on purpose.

    ``path`` is the file the problem is in (if any) and ``hint`` says how to fix it;
    both are folded into ``str(err)`` so a plain ``print`` tells the whole story.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.hint = hint
        # Messages quote files, keys and paths from strangers: no terminal control reaches
        # the terminal (a path may not even fake a line break).
        text = f"{strip_control(str(self.path))}: " if self.path is not None else ""
        text += strip_control(str(message), keep_newlines=True)
        if hint:
            text += f"\n  fix: {strip_control(str(hint), keep_newlines=True)}"
        super().__init__(text)


class ConfigError(LatentscapeError):
    """A configuration value is missing, of the wrong type or out of range."""


class DatasetError(LatentscapeError):
    """A posed-image dataset (transforms.json and its images) cannot be used."""


class SceneError(LatentscapeError):
    """A scene bundle (scene.toml and its assets) is malformed or incomplete."""


class LockMismatchError(SceneError):
    """An asset's sha256 differs from the one recorded in scene.lock."""


class CameraPathError(LatentscapeError):
    """A camera path file is malformed or names an unsupported camera."""


class OutputError(LatentscapeError):
    """An output (file, folder, stream) cannot be written."""


class BackendError(LatentscapeError):
    """An explicitly requested compute backend cannot be loaded."""


class WeightsError(LatentscapeError):
    """Model weights are missing, malformed, or do not match their config."""


class UnsafeFileError(WeightsError):
    """A model file tries to run code or reference something not allowed."""


class PluginError(LatentscapeError):
    """A plugin cannot be found, imported or configured."""


class AdapterError(LatentscapeError):
    """A LoRA adapter is malformed or incompatible with its target."""


class ExportError(LatentscapeError):
    """A model cannot be exported to the requested target (or the target needs what this machine lacks)."""


class TrackingError(LatentscapeError):
    """Run tracking (MLflow) is unavailable: the extra is missing or the tracking URI is unusable."""


_CONTROL = {c: "?" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c not in (0x0A,)}
_CONTROL[0x0A] = "\\n"
for _c in (0x200B, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069):
    _CONTROL[_c] = "?"  # zero-width and bidirectional overrides: text that reads differently than it is


_CONTROL_KEEP_NL = {**_CONTROL, 0x0A: None}
del _CONTROL_KEEP_NL[0x0A]


def strip_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with terminal control characters (ESC sequences, BEL, carriage returns,
    bidirectional overrides) replaced by ``?`` and newlines by ``\\n`` (kept with
    ``keep_newlines``), so a message that quotes a stranger's file cannot recolour, rewrite
    or hide lines of the terminal."""
    return text.translate(_CONTROL_KEEP_NL if keep_newlines else _CONTROL)


def safe_repr(obj: object, limit: int = 200) -> str:
    """A short, printable ``repr`` of untrusted data for error messages.

    Containers are walked only as far as ``limit`` characters need (a tuple that
    doubles itself 60 times, or a 1 GB string, costs ``O(limit)``), recursion is cut at
    depth 6, and control characters are stripped (:func:`strip_control`). The result is
    at most ``limit`` characters (``...`` marks a cut)."""
    limit = max(int(limit), 8)
    parts: list[str] = []
    budget = [limit + 1]

    def emit(s: str) -> bool:
        if budget[0] <= 0:
            return False
        s = s[:budget[0]]
        parts.append(s)
        budget[0] -= len(s)
        return budget[0] > 0

    def walk(o: object, depth: int, seen: frozenset) -> bool:
        if id(o) in seen:
            return emit("...")
        if isinstance(o, (str, bytes, bytearray)):
            return emit(repr(o[:budget[0]]) + ("..." if len(o) > budget[0] else ""))
        if isinstance(o, (bool, int, float, complex, type(None))):
            if isinstance(o, int) and not isinstance(o, bool) and o.bit_length() > 256:
                return emit(f"<int of {o.bit_length()} bits>")
            return emit(repr(o))
        if isinstance(o, (list, tuple, set, frozenset, dict)):
            if depth >= 6:
                return emit("...")
            seen = seen | {id(o)}
            brackets = "[]" if isinstance(o, list) else "()" if isinstance(o, tuple) else "{}"
            if not emit(brackets[0]):
                return False
            items = o.items() if isinstance(o, dict) else o
            for i, item in enumerate(items):
                if i and not emit(", "):
                    return False
                if isinstance(o, dict):
                    k, v = item
                    if not (walk(k, depth + 1, seen) and emit(": ") and walk(v, depth + 1, seen)):
                        return False
                elif not walk(item, depth + 1, seen):
                    return False
            return emit(brackets[1])
        # Anything else: its type name only; its own __repr__ could be slow or huge.
        shape = getattr(o, "shape", None)
        if isinstance(shape, tuple) and len(shape) < 8 and all(isinstance(s, int) for s in shape):
            return emit(f"<{type(o).__name__} shape={tuple(shape)}>")
        return emit(f"<{type(o).__name__}>")

    walk(obj, 0, frozenset())
    text = "".join(parts)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return strip_control(text)
