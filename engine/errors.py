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
        text = f"{self.path}: {message}" if self.path is not None else message
        if hint:
            text += f"\n  fix: {hint}"
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
