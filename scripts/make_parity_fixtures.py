"""Regenerate the golden parity fixtures in ``tests/fixtures/parity/`` from the official code.

sharpit never runs or contains the official implementations; its tests compare against outputs
that the official code produced on tiny random weights. This script makes those outputs again::

    python scripts/make_parity_fixtures.py --official-root /path/to/checkouts \\
        [--stage shap_e --stage shap_e_ddpm --stage zero123plus --stage instantmesh --stage lpips] \\
        [--python shap_e=/venvs/shape/bin/python --python instantmesh=/venvs/im/bin/python ...]

``--official-root`` holds one checkout per stage, named ``owner+repo``:
``openai+shap-e``, ``SUDO-AI-3D+zero123plus``, ``TencentARC+InstantMesh``; the ``lpips`` stage reads
no checkout (the official code is the ``lpips`` pip package, installed in its interpreter's
environment with torchvision). Each stage runs its
``scripts/parity/<module>.py`` in a separate process with the interpreter given by ``--python``
(default: this one), because the official code bases need different package versions; each
module's docstring lists the environment it needs. All stages run by default.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: stage name -> (module under scripts/parity/, checkout it reads; None: an installed package)
STAGES = {
    "shap_e": ("shap_e_prior.py", "openai+shap-e"),
    "shap_e_encoder": ("shap_e_encoder.py", "openai+shap-e"),
    "shap_e_ddpm": ("shap_e_ddpm.py", "openai+shap-e"),
    "shap_e_fps": ("shap_e_fps.py", "openai+shap-e"),
    "zero123plus": ("zero123plus.py", "SUDO-AI-3D+zero123plus"),
    "instantmesh": ("instantmesh.py", "TencentARC+InstantMesh"),
    "lpips": ("lpips_metric.py", None),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "parity")
    parser.add_argument("--stage", action="append", choices=sorted(STAGES), help="repeatable; default all")
    parser.add_argument("--python", action="append", default=[], metavar="STAGE=PYTHON",
                        help="interpreter for a stage (repeatable)")
    args = parser.parse_args(argv)
    pythons = {}
    for item in args.python:
        stage, sep, exe = item.partition("=")
        if not sep or stage not in STAGES:
            parser.error(f"--python takes STAGE=PYTHON with STAGE in {sorted(STAGES)}, got {item!r}")
        pythons[stage] = exe
    failed = []
    for stage in args.stage or list(STAGES):
        module, checkout = STAGES[stage]
        if checkout is not None and not (args.official_root / checkout).is_dir():
            parser.error(f"{args.official_root / checkout} is not a folder; check out the official {stage} code there")
        cmd = [pythons.get(stage, sys.executable), str(ROOT / "scripts" / "parity" / module),
               "--official-root", str(args.official_root), "--out", str(args.out)]
        print(f"[parity] {stage}: {' '.join(cmd)}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(stage)
    if failed:
        print(f"[parity] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
