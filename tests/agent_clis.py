"""The real agent CLIs the end-to-end tests run, installed from the npm registry at the versions
pinned in ``tests/agent-clis/package.json``, into a cache directory (``$MC_TEST_CACHE``, default
``~/.cache/mc-tests``). ``python tests/agent_clis.py`` installs them (``.ci/run`` does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).with_name("agent-clis") / "package.json"
PINNED: dict[str, str] = json.loads(PACKAGE.read_text(encoding="utf-8"))["dependencies"]
BINARIES = {"claude": "@anthropic-ai/claude-code"}


def cache_dir() -> Path:
    base = os.environ.get("MC_TEST_CACHE") or str(Path.home() / ".cache" / "mc-tests")
    return Path(base) / "agent-clis"


def binary(name: str) -> Path:
    """Where the installed CLI ``name`` is (it may not be there yet)."""
    return cache_dir() / "node_modules" / ".bin" / name


def installed_version(name: str) -> str | None:
    path = binary(name)
    if not path.exists():
        return None
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else None


def ensure(name: str) -> tuple[Path | None, str]:
    """Install the pinned CLI ``name`` if it is not there at its version; (path, "") or (None, why)."""
    want = PINNED[BINARIES[name]]
    if installed_version(name) == want:
        return binary(name), ""
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not installed"
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACKAGE, target / "package.json")
    try:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(target)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "npm install timed out"
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"npm install failed: {last[0]}"
    got = installed_version(name)
    if got != want:
        return None, f"{BINARIES[name]} installed, but `{name} --version` says {got!r}, not {want}"
    return binary(name), ""


if __name__ == "__main__":
    for cli in BINARIES:
        path, why = ensure(cli)
        if path is None:
            print(f"agent_clis: {cli}: {why}", file=sys.stderr)
            sys.exit(1)
        print(f"agent_clis: {cli} {PINNED[BINARIES[cli]]} at {path}")
