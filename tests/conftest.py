"""Shared test setup: offline hub, bounded threads, and the Khronos glTF validator."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# pytest-xdist runs one worker per core: more threads per worker only oversubscribe the CPU.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
_VALIDATOR = REPO / ".tools" / "node_modules" / "gltf-validator"
_SCRIPT = """
const v = require(process.argv[1]); const fs = require('fs');
v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))
  .then(r => { console.log(JSON.stringify(r.issues)); })
  .catch(e => { console.error(String(e)); process.exit(2); });
"""


@pytest.fixture(scope="session")
def gltf_validate():
    """``gltf_validate(path) -> issues`` with the Khronos glTF validator (installed into
    ``.tools/`` by scripts/setup.sh); skips when Node or the validator is missing."""
    node = shutil.which("node")
    if node is None or not _VALIDATOR.is_dir():
        pytest.skip("the Khronos glTF validator is not installed (run scripts/setup.sh with npm available)")

    def validate(path):
        out = subprocess.run([node, "-e", _SCRIPT, str(_VALIDATOR), str(path)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return validate


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(nproc=2)``: the command prefix of a one-machine ``torch.distributed.run`` launch,
    to which a test appends ``-m module args``. ``--standalone`` lets the rendezvous bind a free
    port itself: a port a test picked and released could be taken by another test's processes
    before the launch binds it."""

    def command(nproc: int = 2):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]

    return command
