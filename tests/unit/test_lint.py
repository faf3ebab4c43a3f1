"""ruff and mypy, as part of the one test command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]])
def test_clean(command: list[str]) -> None:
    tool = Path(sys.executable).parent / command[0]
    executable = str(tool) if tool.exists() else shutil.which(command[0])
    assert executable, f"{command[0]} is not installed; install the test extras: pip install '.[test]'"
    result = subprocess.run([executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
