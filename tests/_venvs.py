"""Real wheels in real virtual environments, for tests of what an installed user sees.

The wheels of every workspace package (plus the fixture plugins that are not workspace
members) are built once per test session with ``uv build``; each scenario then gets a
throwaway venv made with ``uv venv`` + ``uv pip install``, pinned to ``uv.lock`` so the
third-party wheels come from uv's cache.

Test modules load this file by path (see ``tests/plugins/conftest.py``) because the
tests tree is not a package.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "plugins" / "fixtures"
# Fixture plugins that are deliberately not workspace members: the dev env stays clean.
EXTRA_FIXTURES = ("themis-fixture-broken", "themis-fixture-acme-dup", "themis-fixture-sneaky")

# Variables that would make a venv's Python see the dev environment or change plugin loading.
_SCRUBBED_PREFIXES = ("THEMIS_", "PYTHON", "VIRTUAL_ENV", "CONDA_", "__PYVENV")


def uv_executable() -> str:
    """The ``uv`` running this session (``uv run`` exports ``UV``), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise RuntimeError("these tests need uv: pip install uv (CI installs it in .ci/run)")
    return found


def _run(cmd: Sequence[str | os.PathLike[str]], *, cwd: Path = REPO) -> None:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without THEMIS_*/PYTHON*/venv variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(extra or {})
    return env


def build_wheelhouse(dest: Path) -> Path:
    """Build every workspace wheel and the extra fixtures into ``dest`` (once per ``dest``)."""
    done = dest / ".complete"
    if done.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    uv = uv_executable()
    _run([uv, "build", "--all-packages", "--wheel", "--quiet", "-o", dest])
    for name in EXTRA_FIXTURES:
        _run([uv, "build", "--wheel", "--quiet", "-o", dest, FIXTURES / name])
    # Pins for third-party dependencies, so installs match the lock file and hit the cache.
    _run(
        [
            uv,
            "export",
            "--frozen",
            "--no-hashes",
            "--no-emit-workspace",
            "--all-packages",
            "--all-extras",
            "--quiet",
            "-o",
            dest / "constraints.txt",
        ]
    )
    done.touch()
    return dest


def wheel_for(wheelhouse: Path, distribution: str) -> Path:
    """The wheel file of ``distribution`` in ``wheelhouse``."""
    stem = re.sub(r"[-_.]+", "_", distribution).lower()
    matches = sorted(wheelhouse.glob(f"{stem}-*.whl"))
    if len(matches) != 1:
        raise RuntimeError(f"expected one wheel for {distribution} in {wheelhouse}, got {matches}")
    return matches[0]


@dataclasses.dataclass(frozen=True)
class Venv:
    """A virtual environment with some of the wheels installed."""

    path: Path

    @property
    def bin(self) -> Path:
        return self.path / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    def run(
        self,
        *args: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with this venv first on PATH and a scrubbed environment."""
        run_env = clean_env(env)
        run_env["PATH"] = f"{self.bin}{os.pathsep}{run_env.get('PATH', '')}"
        run_env["VIRTUAL_ENV"] = str(self.path)
        return subprocess.run(
            [str(a) for a in args],
            env=run_env,
            cwd=cwd or self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python_c(
        self, code: str, *, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -c code`` inside the venv."""
        return self.run(self.python, "-c", code, env=env)

    def themis(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The installed ``themis`` console script."""
        return self.run(self.bin / "themis", *args, env=env)


def make_venv(path: Path, wheelhouse: Path, distributions: Sequence[str]) -> Venv:
    """A fresh venv at ``path`` with exactly ``distributions`` (and their dependencies)."""
    uv = uv_executable()
    _run([uv, "venv", "--quiet", "--python", sys.executable, path])
    venv = Venv(path)
    _run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            venv.python,
            "-c",
            wheelhouse / "constraints.txt",
            *(wheel_for(wheelhouse, d) for d in distributions),
        ]
    )
    return venv
