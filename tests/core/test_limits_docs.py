"""Every Python example of docs/runtime.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
EXAMPLES = _BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_runtime_doc_has_its_examples() -> None:
    assert len(EXAMPLES) == 3


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_runtime_doc_example_runs(index: int, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", EXAMPLES[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
