"""A plugin's settings: its section of config.yaml, read key by key with validation.

A plugin class receives its section in its constructor and reads each setting with a type and a
default; :meth:`Section.finish` (called by the manager after the constructor) rejects any key the
plugin never read, so a typo is a one-line error at start-up, not a silent default::

    class Notify:
        def __init__(self, settings: Section) -> None:
            self.channel = settings.text("channel", None)  # no default: required
            self.retries = settings.integer("retries", 3, minimum=0)

Every mistake is a :class:`ConfigError` whose message is one line naming the file, the key path and
what was expected; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any


class ConfigError(Exception):
    """A user mistake in configuration or input; ``str(err)`` is the one line to show."""


def describe(value: Any) -> str:
    """A value as a short repr for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Section(Mapping[str, Any]):
    """One mapping of the config file, read key by key with validation.

    Reading a key marks it known; :meth:`finish` rejects any key that was never read.
    Plugins receive their own section as a ``Section`` (datasette's ``plugin_config`` idea).
    """

    def __init__(self, data: Mapping[str, Any] | None, path: str, file: str) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.path = path
        self.file = file
        self._known: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self._known.add(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def error(self, key: str | None, expected: str, got: Any = ...) -> ConfigError:
        """Build the one-line error for ``key`` of this section."""
        where = ".".join(p for p in (self.path, key) if p)
        tail = "" if got is ... else f", got {describe(got)}"
        return ConfigError(f"{self.file}: {where or '(top level)'}: expected {expected}{tail}")

    def _get(self, key: str, default: Any) -> Any:
        self._known.add(key)
        value = self.data.get(key, default)
        return default if value is None and default is not None else value

    def text(self, key: str, default: str | None, pattern: str | None = None, what: str = "a string") -> str:
        """A string (matching ``pattern`` if given); required when ``default`` is None."""
        value = self._get(key, default)
        if value is None:
            raise self.error(key, f"{what} (required)")
        if not isinstance(value, str) or (pattern and not re.fullmatch(pattern, value)):
            raise self.error(key, what, value)
        return value

    def integer(self, key: str, default: int, minimum: int | None = None) -> int:
        """An integer, at least ``minimum`` if given."""
        value = self._get(key, default)
        bound = f" >= {minimum}" if minimum is not None else ""
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(key, f"an integer{bound}", value)
        return value

    def number(
        self, key: str, default: float, minimum: float = 0.0, strict: bool = True, unit: str = "seconds"
    ) -> float:
        """A finite number above ``minimum`` (at least, with ``strict=False``), in ``unit``."""
        value = self._get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (value <= minimum if strict else value < minimum):
            raise self.error(key, f"a number {'>' if strict else '>='} {minimum:g} ({unit})", value)
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def mapping(self, key: str) -> Section:
        """A nested mapping, as a Section of its own (finish it too)."""
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, "a mapping", value)
        return Section(value, ".".join(p for p in (self.path, key) if p), self.file)

    def text_list(self, key: str, default: list[str] | None) -> list[str] | None:
        """A list of strings, or None when absent and ``default`` is None."""
        value = self._get(key, default)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "a list of strings", value)
        return list(value)

    def accept(self, *keys: str) -> None:
        """Count ``keys`` as known without reading them here (they are checked elsewhere)."""
        self._known.update(keys)

    def finish(self) -> None:
        """Reject keys nobody asked for (typos must not be silently ignored)."""
        unknown = sorted(set(map(str, self.data)) - self._known)
        if unknown:
            known = ", ".join(sorted(self._known)) or "none"
            raise self.error(unknown[0], f"one of the known keys ({known})", ...)
