"""Golden output of the official Shap-E farthest-point sampling (``PointCloud.farthest_point_sample``).

The encoder's point cloud is a farthest-point sample of dense surface samples; this pins sharpit's
:func:`sharpit.coarse.encoder_inputs.farthest_point_sample` to the official one index for index.
Runs the official ``openai/shap-e`` code (imported from a checkout; nothing of it is stored) with
numpy and torch::

    python scripts/parity/shap_e_fps.py --official-root /work/official --out tests/fixtures/parity

Stored in ``shap_e_fps.safetensors``: ``points`` (POINTS, 3) float32 in [-1, 1] (drawn with torch,
seed SEED), ``start`` (the first index: ``torch.randint(POINTS, (1,))`` from a generator seeded
SEED + 1, which sharpit draws the same way) and ``indices`` (PICKS,) of the official sample.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch

SEED, POINTS, PICKS = 2024, 4096, 256


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for name in ("blobfile", "clip"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, str(args.official_root / "openai+shap-e"))
    from safetensors.torch import save_file
    from shap_e.rendering.point_cloud import PointCloud

    points = torch.rand(POINTS, 3, generator=torch.Generator().manual_seed(SEED)) * 2 - 1
    start = torch.randint(POINTS, (1,), generator=torch.Generator().manual_seed(SEED + 1))
    cloud = PointCloud(coords=points.numpy(), channels={"I": np.arange(POINTS, dtype=np.float32)})
    picked = cloud.farthest_point_sample(PICKS, init_idx=int(start))
    indices = torch.from_numpy(picked.channels["I"].astype(np.int64))
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({"points": points.contiguous(), "start": start, "indices": indices},
              str(args.out / "shap_e_fps.safetensors"), metadata={"seed": str(SEED)})
    print(f"[parity] shap_e_fps: {PICKS} of {POINTS} points, start {int(start)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
