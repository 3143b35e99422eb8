"""End-to-end benchmark: every stage of SharpIt3DPipeline.generate at full size, random weights.

    python benchmarks/bench_end_to_end.py --device cuda --dtype fp16              # the real settings
    python benchmarks/bench_end_to_end.py --device cpu --coarse-steps 2 --refine-steps 1 \
        --coarse-grid-size 64 --mesh-resolution 128                            # a CPU record

The stages are the ones ``generate`` runs, called one by one so each can be timed and its peak
memory read: Shap-E sampling (``coarse_steps`` Heun steps, batched CFG) and ``to_mesh``; the six-view
render; the refiner (concat mode, batched CFG); the reconstructor (NeRF-large encoder +
transformer, then the density grid and marching cubes). With random weights the reconstructor's
density never reaches InstantMesh's level 10, so the mesh is extracted at the field's median
instead (same grid query, a noise-like surface: marching cubes costs more than on a real object).
Per-step numbers are measured; totals for the full step counts are extrapolated when fewer steps
were run, and the table says so.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_coarse import build as build_coarse  # noqa: E402
from bench_refine import DTYPES, build_pipeline as build_refiner  # noqa: E402
from benchutil import peak_memory_bytes, sync  # noqa: E402

from sharpit.cameras import zero123plus_cameras  # noqa: E402
from sharpit.coarse import DEFAULT_COARSE_RENDER  # noqa: E402
from sharpit.reconstruct import InstantMeshReconstructor  # noqa: E402
from sharpit.render import render_views  # noqa: E402

FULL = {"coarse_steps": 64, "refine_steps": 75}


class Stage:
    """Times a block and records the device's peak memory within it."""

    def __init__(self, device: torch.device, rows: list, name: str):
        self.device, self.rows, self.name = device, rows, name

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        sync(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start
        self.rows.append((self.name, self.seconds, peak_memory_bytes(self.device) / 2 ** 30))
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--coarse-steps", type=int, default=64)
    parser.add_argument("--coarse-grid-size", type=int, default=128)
    parser.add_argument("--refine-steps", type=int, default=75)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--mesh-resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    torch.set_num_threads(args.threads)

    coarse = build_coarse(device, dtype)
    refiner = build_refiner("concat", dtype, str(device))
    recon = InstantMeshReconstructor.from_variant("large").to(device=device, dtype=dtype).eval()
    gen = torch.Generator(device).manual_seed(0)
    rows: list = []
    prompt = "a wooden rocking chair"

    with Stage(device, rows, f"coarse: Shap-E {args.coarse_steps} steps (CFG 15)") as s_coarse:
        latent = coarse.sample_latents([prompt], num_inference_steps=args.coarse_steps, generator=gen)
    with Stage(device, rows, f"coarse: to_mesh grid {args.coarse_grid_size}"):
        coarse_mesh = coarse.to_mesh(latent, grid_size=args.coarse_grid_size)
    with Stage(device, rows, f"render: six 320x320 views ({DEFAULT_COARSE_RENDER.supersample}x supersampled)"):
        views = render_views(coarse_mesh.to(device), zero123plus_cameras().to(device),
                             supersample=DEFAULT_COARSE_RENDER.supersample)
    with Stage(device, rows, f"refine: {args.refine_steps} steps (CFG {args.guidance_scale})") as s_refine:
        refined = refiner(views, prompt, num_inference_steps=args.refine_steps, guidance_scale=args.guidance_scale,
                          generator=gen, output_type="pt").images
    with torch.no_grad():
        with Stage(device, rows, "reconstruct: encoder + transformer (large)"):
            planes = recon.encode_views(refined.to(device))
        level = float(recon.query(planes, torch.rand(65536, 3, device=device) * 2 - 1)[0].float().median())
        with Stage(device, rows, f"reconstruct: mesh at {args.mesh_resolution}^3"):
            mesh = recon.extract_mesh(planes, resolution=args.mesh_resolution, threshold=level)

    total = sum(r[1] for r in rows)
    extrapolated = total
    for stage, measured_steps, full_steps, calls_per_step in (
            (s_coarse, args.coarse_steps, FULL["coarse_steps"], 2), (s_refine, args.refine_steps, FULL["refine_steps"], 1)):
        if measured_steps != full_steps:
            calls = calls_per_step * measured_steps - (calls_per_step - 1)
            full_calls = calls_per_step * full_steps - (calls_per_step - 1)
            extrapolated += stage.seconds / calls * full_calls - stage.seconds
    print(f"# sharpit end-to-end benchmark\n\n- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"dtype {str(dtype).replace('torch.', '')}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`")
    print(f"- coarse mesh: {coarse_mesh.num_faces} faces; final mesh: {mesh.num_faces} faces (random weights)\n")
    print("| stage | seconds | peak memory (GB) |\n|---|---|---|")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.3f} | {peak:.2f} |")
    print(f"| **total (measured)** | **{total:.3f}** | |")
    if extrapolated != total:
        print(f"| total extrapolated to {FULL['coarse_steps']} + {FULL['refine_steps']} steps | {extrapolated:.1f} | |")
    peak_note = "torch.cuda.max_memory_allocated per stage" if device.type == "cuda" else "process max RSS so far"
    print(f"\nPeak memory: {peak_note}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
