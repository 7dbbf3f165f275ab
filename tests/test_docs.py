"""The Python example in docs/usage.md runs and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "usage.md").read_text()
    section = text.split("## Python API", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    code = code.replace("/tmp/alice", str(tmp_path / "alice")).replace(
        "/tmp/bob", str(tmp_path / "bob")
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice says hello bob"
