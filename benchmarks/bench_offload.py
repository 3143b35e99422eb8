"""Peak memory of SharpIt3DPipeline.generate at full size (random weights), resident vs diffusers'
``enable_model_cpu_offload()``.

    python benchmarks/bench_offload.py --device cuda --dtype fp16          # GPU: peak CUDA memory
    python benchmarks/bench_offload.py --device cpu --coarse-steps 2 --refine-steps 1 \
        --coarse-grid-size 64 --mesh-resolution 64                       # CPU: peak RSS

Each mode runs in a fresh process (peak RSS cannot be reset inside one). On CUDA the number is
``torch.cuda.max_memory_allocated`` of the whole call; on the CPU it is the process's peak resident
set size (``ru_maxrss``), where offloading "to the CPU" cannot save anything: the CPU row checks
that the hooks cost no extra memory there. Random weights never reach InstantMesh's density level
10, so the mesh is extracted at the field's median (as ``bench_end_to_end.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("resident", "model_offload")


def build(device: torch.device, dtype: torch.dtype):
    """The full-size chain (real architectures, random weights) as one SharpIt3DPipeline on the CPU."""
    from bench_coarse import build as build_coarse
    from bench_refine import build_pipeline as build_refiner

    from sharpit.pipeline import SharpIt3DPipeline
    from sharpit.reconstruct import InstantMeshReconstructor

    coarse = build_coarse(torch.device("cpu"), dtype)
    refiner = build_refiner("concat", dtype, "cpu")
    recon = InstantMeshReconstructor.from_variant("large").to(dtype=dtype).eval()
    r = refiner.components
    pipe = SharpIt3DPipeline(vae=r["vae"], text_encoder=r["text_encoder"], tokenizer=r["tokenizer"], unet=r["unet"],
                             scheduler=r["scheduler"], reconstructor=recon, prior=coarse.prior,
                             prior_text_encoder=coarse.text_encoder, prior_tokenizer=coarse.tokenizer,
                             prior_scheduler=coarse.scheduler, shap_e_renderer=coarse.renderer)
    pipe.set_progress_bar_config(disable=True)
    original = recon.reconstruct

    def at_median_level(views, resolution, texture, texture_size, face_budget):
        planes = recon.encode_views(views)
        points = torch.rand(65536, 3, device=planes.device) * 2 - 1
        level = float(recon.query(planes, points)[0].median())
        return original(views, resolution=resolution, threshold=level, texture=texture,
                        texture_size=texture_size, face_budget=face_budget)

    recon.reconstruct = at_median_level
    return pipe


def run_one(args) -> dict:
    """Run one mode in this process; returns its row."""
    from bench_refine import DTYPES

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    pipe = build(device, dtype)
    if args.mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = pipe.generate("a wooden rocking chair", seed=0, coarse_steps=args.coarse_steps,
                           coarse_grid_size=args.coarse_grid_size, refine_steps=args.refine_steps,
                           mesh_resolution=args.mesh_resolution)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"mode": args.mode, "seconds": seconds, "peak_gib": peak / 2 ** 30,
            "measure": "max_memory_allocated" if device.type == "cuda" else "peak RSS",
            "stages": {k: round(v, 2) for k, v in result.timings.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None, help="fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--coarse-steps", type=int, default=64)
    parser.add_argument("--coarse-grid-size", type=int, default=128)
    parser.add_argument("--refine-steps", type=int, default=75)
    parser.add_argument("--mesh-resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, default=None, help="run one mode in this process (internal)")
    args = parser.parse_args(argv)
    if args.mode is not None:
        print(json.dumps(run_one(args)))
        return 0
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--mode", mode]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"## bench_offload ({datetime.date.today()}, {device_name}, torch {torch.__version__})")
    print(f"`python benchmarks/bench_offload.py {shlex.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(f"| mode | peak ({rows[0]['measure']}) GiB | seconds | stages (s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['peak_gib']:.2f} | {r['seconds']:.1f} | {r['stages']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
