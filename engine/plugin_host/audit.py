"""The audit log: every guardrail decision as one JSON line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from latentscape.errors import ConfigError


class AuditLog:
    """Guardrail decisions as JSON lines, appended (one object per line, flushed per frame)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"audit log cannot be written: {err.strerror}", path=self.path,
                              hint="choose a writable --audit-log / [guardrails] audit_log") from None
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()
