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


def test_gpu_suite_passes_only_flags_the_benchmarks_know():
    """benchmarks/gpu_suite.sh runs on a scarce GPU session: a misspelt flag would cost the run."""
    import re

    suite = (REPO / "benchmarks" / "gpu_suite.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_suite.sh")]).returncode == 0
    values = {}
    for name, value in re.findall(r'^\s*(\w+_args)="([^"]*)"', suite, re.M):
        values.setdefault(name, []).append(value)
    steps = re.findall(r'^step \w+ "\$py" benchmarks/(bench_\w+\.py) --device "\$device" \$(\w+)', suite, re.M)
    assert len(steps) == 11 and {s for s, _ in steps} <= set(SCRIPTS)
    for script, var in steps:
        help_text = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO,
                                   capture_output=True, text=True, timeout=120).stdout
        for value in values[var]:
            for flag in re.findall(r"--[\w-]+", value):
                assert flag in help_text, f"{script} has no {flag}"
