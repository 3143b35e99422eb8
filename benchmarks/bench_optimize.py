"""Benchmark one texture-optimisation step (sharpit.optimize) at full size with random weights.

Builds the full-size Zero123++ v1.2 / Sharp-It refiner (concat UNet, v1.2 VAE, CLIP text encoder;
``bench_refine.build_pipeline``, random weights), a textured sphere in the "pairs" atlas
(``--faces`` faces, 1024^2 texture), and times the parts of
one multi-view SDS step exactly as :func:`sharpit.optimize.refine_texture` runs them: render the six
320x320 views (differentiable texture look-up, rasterisation cached), VAE encode of the 960x640 grid
(with graph), UNet forward of the CFG batch (2 x 4 x 120 x 80, no graph), backward through the VAE
encoder and the renderer to the texels, Adam step. Peak memory: ``torch.cuda.max_memory_allocated``
on CUDA, peak process RSS on the CPU. GPU target: 200 steps <= 30 s on an H100 (<= 150 ms/step).

    python benchmarks/bench_optimize.py --device cpu --steps 1
    python benchmarks/bench_optimize.py --device cuda --dtype fp16 --steps 10 --warmup 2
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import torch
from benchutil import peak_memory_bytes, sync

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PARTS = ("render", "vae_encode", "unet_cfg", "backward", "adam", "total")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="UNet dtype (default fp16 on CUDA, "
                        "fp32 on CPU); the VAE runs in float32 (force_upcast)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on CUDA, 1 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 2 on CUDA, 0 on CPU)")
    parser.add_argument("--faces", type=int, default=20000, help="faces of the textured sphere (about)")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("fp16" if cuda else "fp32")
    args.steps = args.steps if args.steps is not None else (10 if cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (2 if cuda else 0)
    torch.set_num_threads(args.threads)

    from bench_refine import build_pipeline

    from sharpit.grid import views_to_grid
    from sharpit.optimize.loop import _no_param_grads
    from sharpit.optimize.sds import RefinerPrior
    from sharpit.optimize.texture import project_texture, uv_textured_mesh
    from sharpit.render import rasterize_texture_coords, render_texture
    from sharpit.testing.meshes import uv_sphere

    pipe = build_pipeline("concat", DTYPES[args.dtype], args.device)
    n_lon = max(3, int((args.faces / 2) ** 0.5 * 1.4))
    n_lat = max(2, args.faces // (2 * n_lon) + 1)
    mesh = uv_textured_mesh(uv_sphere(n_lat, n_lon), 1024).to(args.device)
    frags = rasterize_texture_coords(mesh, supersample=2)
    prior = RefinerPrior(pipe, "a chair", "", args.guidance_scale)
    generator = torch.Generator("cpu").manual_seed(0)
    posterior = prior.condition_posterior(torch.rand(1, 3, 960, 640, generator=generator).to(args.device))
    texture = mesh.texture.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([texture], lr=0.02)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = {p: [] for p in PARTS}
    with _no_param_grads(pipe.vae, pipe.unet):
        for i in range(args.warmup + args.steps):
            marks = [time.perf_counter()]

            def mark():
                sync(args.device)
                marks.append(time.perf_counter())

            views = render_texture(frags, texture)
            grid = views_to_grid(views)[None]
            mark()
            latents = prior.encode(grid, generator)
            mark()
            noise = torch.randn(latents.shape, generator=generator).to(args.device)
            loss, _ = prior.sds_loss(latents, 500, noise, prior.condition_latents(posterior, generator))
            mark()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            mark()
            optimizer.step()
            project_texture(texture)
            mark()
            if i >= args.warmup:
                for k, part in enumerate(PARTS[:-1]):
                    times[part].append(marks[k + 1] - marks[k])
                times["total"].append(marks[-1] - marks[0])
    med = {p: 1000 * statistics.median(v) for p, v in times.items()}
    device_name = torch.cuda.get_device_name() if cuda else \
        f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
    print(f"device: {device_name}; torch {torch.__version__}; date {datetime.date.today().isoformat()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"mesh: {mesh.num_faces} faces, texture {tuple(mesh.texture.shape)}, "
          f"{frags.pix.numel()} covered samples (6 x 640^2)")
    print()
    print("| dtype | " + " | ".join(f"{p} ms" for p in PARTS) + " | 200 steps (s) | peak memory (GB) |")
    print("|---|" + "---|" * (len(PARTS) + 2))
    print(f"| {args.dtype} | " + " | ".join(f"{med[p]:.1f}" for p in PARTS)
          + f" | {200 * med['total'] / 1000:.1f} | {peak_memory_bytes(args.device) / 2**30:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
