"""Time Shap-E's encoder per asset: input preparation (point cloud + multi-view renders with
sharpit's renderer) and the encoder forward, full size with random weights.

    python benchmarks/bench_encode.py [--device cpu] [--repeats 1] [--tiny]

Full size = the released config (:class:`sharpit.coarse.ShapEEncoder` defaults: width 1024,
16384 points from 40 renders at 512 px and 2^19 samples, 20 views at 256 px). The asset is a
UV sphere with vertex colours. ``--tiny`` times the tiny test encoder (smoke run).
``bench_edit.py`` imports :func:`build_encoder`, :func:`bench_mesh` and :func:`time_encode` for
the encode step of its chain.
"""

from __future__ import annotations

import argparse
import time
from typing import Optional, Tuple

import torch

from benchutil import peak_memory_bytes, sync


def build_encoder(device, tiny: bool = False, dtype: Optional[torch.dtype] = None):
    """The full-size encoder with random weights (seed 0), or the tiny test encoder."""
    from sharpit.coarse import ShapEEncoder

    if tiny:
        from sharpit.testing.shap_e_encoder import tiny_shap_e_encoder

        encoder = tiny_shap_e_encoder()
    else:
        torch.manual_seed(0)
        encoder = ShapEEncoder().eval()
    encoder = encoder.to(device)
    return encoder if dtype in (None, encoder.dtype) else encoder.to(dtype)


def bench_mesh():
    """The benchmark asset: a 960-face UV sphere with vertex colours from its position."""
    from sharpit.testing.meshes import uv_sphere

    mesh = uv_sphere()
    lo, hi = mesh.vertices.min(0).values, mesh.vertices.max(0).values
    mesh.vertex_colors = (mesh.vertices - lo) / (hi - lo)
    return mesh


def time_encode(encoder, mesh, device, seed: int = 0) -> Tuple[float, float, torch.Tensor]:
    """Encode ``mesh`` once: ``(input preparation seconds, forward seconds, (1, W) latents)``."""
    from sharpit.coarse import prepare_encoder_inputs

    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    inputs = prepare_encoder_inputs(mesh, encoder.input_settings, gen, device=device)
    sync(device)
    t1 = time.perf_counter()
    latents = encoder.encode_inputs(inputs, gen)
    sync(device)
    return t1 - t0, time.perf_counter() - t1, latents


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the tiny test encoder (smoke run)")
    args = parser.parse_args(argv)
    encoder = build_encoder(args.device, args.tiny)
    mesh = bench_mesh()
    prep, fwd = [], []
    for i in range(args.repeats):
        p, f, latents = time_encode(encoder, mesh, args.device, seed=i)
        prep.append(p)
        fwd.append(f)
    print(f"device={args.device} threads={torch.get_num_threads()} tiny={args.tiny} faces={mesh.num_faces} "
          f"latent={tuple(latents.shape)}")
    print(f"inputs: {min(prep):.2f} s  forward: {min(fwd):.2f} s  (best of {args.repeats})  "
          f"peak memory {peak_memory_bytes(args.device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
