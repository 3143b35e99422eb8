"""Time Shap-E's encoder per asset: input preparation (point cloud + multi-view renders with
sharpit's renderer) and the encoder forward, full size with random weights.

    python benchmarks/bench_encode.py [--device cpu] [--repeats 1] [--tiny]

Full size = the released config (:class:`sharpit.coarse.ShapEEncoder` defaults: width 1024,
16384 points from 40 renders at 512 px and 2^19 samples, 20 views at 256 px). The asset is an
icosphere-like UV sphere with vertex colours. ``--tiny`` times the tiny test encoder (smoke run).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchutil import peak_memory_bytes, sync


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the tiny test encoder (smoke run)")
    args = parser.parse_args(argv)
    from sharpit.coarse import ShapEEncoder, prepare_encoder_inputs
    from sharpit.testing.meshes import uv_sphere

    if args.tiny:
        from sharpit.testing.shap_e_encoder import tiny_shap_e_encoder

        encoder = tiny_shap_e_encoder()
    else:
        torch.manual_seed(0)
        encoder = ShapEEncoder().eval()
    encoder = encoder.to(args.device)
    mesh = uv_sphere()
    mesh.vertex_colors = (mesh.vertices - mesh.vertices.min(0).values) / (mesh.vertices.max(0).values - mesh.vertices.min(0).values)
    prep, fwd = [], []
    for i in range(args.repeats):
        gen = torch.Generator().manual_seed(i)
        t0 = time.perf_counter()
        inputs = prepare_encoder_inputs(mesh, encoder.input_settings, gen, device=args.device)
        sync(args.device)
        t1 = time.perf_counter()
        latents = encoder.encode_inputs(inputs, gen)
        sync(args.device)
        t2 = time.perf_counter()
        prep.append(t1 - t0)
        fwd.append(t2 - t1)
    print(f"device={args.device} threads={torch.get_num_threads()} tiny={args.tiny} faces={mesh.num_faces} "
          f"latent={tuple(latents.shape)}")
    print(f"inputs: {min(prep):.2f} s  forward: {min(fwd):.2f} s  (best of {args.repeats})  "
          f"peak memory {peak_memory_bytes(args.device) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
