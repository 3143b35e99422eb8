"""training/README.md's CPU walk-through runs as written, from a fresh folder, with the installed commands."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "training" / "README.md"


def _tested_block() -> str:
    text = README.read_text()
    match = re.search(r"<!-- tested: tests/test_training_readme.py -->\n```bash\n(.*?)```", text, re.S)
    assert match, "the tested block is missing from training/README.md"
    return match.group(1)


def test_cpu_walkthrough_runs_as_written(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    script = "set -euo pipefail\n" + _tested_block()
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "tiny-train" / "run" / "pipeline" / "model_index.json").is_file()
    assert "wrote 3 pair(s)" in proc.stdout
