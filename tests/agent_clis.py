"""The real agent CLIs the end-to-end tests run, at pinned versions, installed into a cache directory
(``$MC_TEST_CACHE``, default ``~/.cache/mc-tests``): Claude Code and Codex from the npm registry
(``tests/agent-clis/package.json``), Aider from PyPI into a virtualenv of its own, since it pins its
own dependencies (``tests/agent-clis/aider-requirements.txt``). ``python tests/agent_clis.py``
installs them all (``.ci/run`` does)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).with_name("agent-clis") / "package.json"
AIDER_REQUIREMENTS = Path(__file__).with_name("agent-clis") / "aider-requirements.txt"
PINNED: dict[str, str] = json.loads(PACKAGE.read_text(encoding="utf-8"))["dependencies"]
BINARIES = {
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "claude-older": "@anthropic-ai/claude-code",
}
# CLIs installed into a directory of their own, from a package.json of their own (another version of one above).
OWN_PACKAGE = {"claude-older": PACKAGE.with_name("claude-older") / "package.json"}
OWN_PACKAGE_BINARY = {"claude-older": "claude"}


def cache_dir() -> Path:
    base = os.environ.get("MC_TEST_CACHE") or str(Path.home() / ".cache" / "mc-tests")
    return Path(base) / "agent-clis"


def binary(name: str) -> Path:
    """Where the installed CLI ``name`` is (it may not be there yet)."""
    if name == "aider":
        return cache_dir() / "aider-venv" / "bin" / "aider"
    if name in OWN_PACKAGE:
        return _prefix(name) / "node_modules" / ".bin" / OWN_PACKAGE_BINARY[name]
    return cache_dir() / "node_modules" / ".bin" / name


def _package(name: str) -> Path:
    return OWN_PACKAGE.get(name, PACKAGE)


def _prefix(name: str) -> Path:
    return cache_dir() / name if name in OWN_PACKAGE else cache_dir()


def pinned(name: str) -> str:
    """The version of CLI ``name`` the tests run."""
    if name == "aider":
        return AIDER_REQUIREMENTS.read_text(encoding="utf-8").split("==")[1].strip()
    return json.loads(_package(name).read_text(encoding="utf-8"))["dependencies"][BINARIES[name]]


def installed_version(name: str) -> str | None:
    path = binary(name)
    if not path.exists():
        return None
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\d+\.\d+\.\d+\S*", out.stdout) if out.returncode == 0 else None
    return found.group(0) if found else None  # "2.1.330 (Claude Code)", "codex-cli 0.171.0"


def ensure(name: str) -> tuple[Path | None, str]:
    """Install the pinned CLI ``name`` if it is not there at its version; (path, "") or (None, why)."""
    want = pinned(name)
    if installed_version(name) == want:
        return binary(name), ""
    if name == "aider":
        return _install_aider(want)
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not installed"
    target = _prefix(name)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_package(name), target / "package.json")
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


def _install_aider(want: str) -> tuple[Path | None, str]:
    venv = cache_dir() / "aider-venv"
    try:
        if not (venv / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        result = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(AIDER_REQUIREMENTS)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not make Aider's virtualenv: {exc}"
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"pip install aider-chat failed: {last[0]}"
    got = installed_version("aider")
    if got != want:
        return None, f"aider-chat installed, but `aider --version` says {got!r}, not {want}"
    return binary("aider"), ""


if __name__ == "__main__":
    for cli in (*BINARIES, "aider"):
        path, why = ensure(cli)
        if path is None:
            print(f"agent_clis: {cli}: {why}", file=sys.stderr)
            sys.exit(1)
        print(f"agent_clis: {cli} {pinned(cli)} at {path}")
