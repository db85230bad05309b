"""What the wheel installs: every package of the source tree, and no top-level `plugins` package."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_source_package_is_installed() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    mapping = {source: name for name, source in setuptools["package-dir"].items()}
    found = set()
    for top in ("mc_hooks", "mission_control", "plugins"):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = list(init.parent.relative_to(ROOT).parts)
            parts[0] = mapping.get(parts[0], parts[0])
            found.add(".".join(parts))
    assert sorted(setuptools["packages"]) == sorted(found)


def test_the_built_in_plugins_install_as_mc_plugins_not_plugins() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert "plugins" not in setuptools["packages"]
    assert setuptools["package-dir"] == {"mc_plugins": "plugins"}
