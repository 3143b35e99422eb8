"""Benchmarks are not timed in tests, but each script must at least import and parse its flags
when run the documented way (`python benchmarks/NAME.py` from the repository root)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))


def test_every_issue_benchmark_exists():
    assert {"bench_render.py", "bench_coarse.py", "bench_refine.py", "bench_reconstruct.py",
            "bench_train.py", "bench_end_to_end.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--device" in proc.stdout
