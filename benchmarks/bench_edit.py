"""Benchmark Shap-E latent editing at full size: encode an asset, invert it, regenerate it.

The chain of issue 11 (GPU target: encode + invert + regenerate <= 3 s on an H100 in fp16), with
edit-friendly DDPM inversion.

Encode: Shap-E's encoder at the released size with random weights (``bench_encode.py``'s
``build_encoder``/``bench_mesh``/``time_encode``: a 960-face vertex-coloured sphere), timed as
input preparation (40 renders, farthest-point sampling of 16384 of 2^19 points, 20 lit views) and
forward; its latent is the one inverted. ``--skip-encode`` starts from a random latent instead (the
behaviour before the encode step), ``--asset-latent PATH`` from a latent file (e.g. written by
``sharpit-encode`` / ``inference.encode``); neither times an encode.

The full-size prior (``openai/shap-e``'s architecture, random weights; built as in
``bench_coarse.py``) inverts one latent with ``--steps`` DDPM steps (SPEC: 128, CFG 12) and
regenerates it at each ``--strengths`` (restart at ``int(steps * strength)``: strength 0.5 = 64
steps, 1.0 = 128). Every DDPM step is one CFG-batched prior call (batch 2), so the time is steps
times the per-step time. Also: the inversion's size in memory and on disk, and save + load.

The content of the latent does not change the inversion's timing.

GPU (full run):
    python benchmarks/bench_edit.py --device cuda --dtype float16
CPU (reduced: a few steps timed, the rest extrapolated; the encode alone takes 9-13 minutes here):
    python benchmarks/bench_edit.py --device cpu --timed-steps 4
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_coarse import build
from bench_encode import bench_mesh, build_encoder, time_encode
from benchutil import peak_memory_bytes, sync

GPU_TARGET_S = 3.0   # issue 11: encode + invert + regenerate one asset <= 3 s on an H100 in fp16


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                    help="prior/text-encoder dtype (default: float16 on CUDA, float32 on CPU)")
    ap.add_argument("--steps", type=int, default=128, help="DDPM steps of the inversion (SPEC: 128)")
    ap.add_argument("--timed-steps", type=int, default=None,
                    help="run a DDPM of this many steps and extrapolate per step to --steps (CPU)")
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--guidance", type=float, default=12.0, help="CFG scale of inversion and edit (SPEC: 12)")
    ap.add_argument("--asset-latent", type=Path, default=None,
                    help="edit this latent file (.safetensors/.pt, one latent) instead of encoding an asset")
    ap.add_argument("--skip-encode", action="store_true",
                    help="no encode step: invert a random latent in [-1, 1] (the content does not change the timing)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = ap.parse_args(argv)

    from sharpit.coarse import ShapEInversion, load_latents

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    rows = []
    encode_s = 0.0
    if args.asset_latent is not None:
        latents, _ = load_latents(args.asset_latent)
        source = f"{args.asset_latent} (no encode timed)"
    elif args.skip_encode:
        latents = torch.randn(1, 1024 * 1024, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
        source = "random latent in [-1, 1] (--skip-encode)"
    else:   # before the prior is built: the two full-size models are never in memory together
        encoder = build_encoder(device, dtype=dtype)
        mesh = bench_mesh()
        prep_s, forward_s, latents = time_encode(encoder, mesh, device)
        encode_s = prep_s + forward_s
        del encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()
        source = f"encoded {mesh.num_faces}-face vertex-coloured sphere (full-size encoder, random weights)"
        rows.append(("encode: input preparation (renders, point sampling)", f"{prep_s:.2f}", "measured, one run"))
        rows.append(("encode: encoder forward", f"{forward_s:.3f}", "measured, one run"))
        rows.append(("encode", f"{encode_s:.2f}", "measured"))
    gen = build(device, dtype)
    latents = latents.float()
    if latents.shape[1] != gen.latent_width:
        raise SystemExit(f"the latent has width {latents.shape[1]}, the prior takes {gen.latent_width}")
    latents = latents.to(device)
    run_steps = args.timed_steps or args.steps
    extrapolated = run_steps != args.steps

    def clock(fn):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        return time.perf_counter() - start, out

    gen.invert(latents, "a chair", num_inference_steps=2, guidance_scale=args.guidance,
               generator=torch.Generator().manual_seed(0))                              # warm-up
    seconds, inv = clock(lambda: gen.invert(latents, "a chair", num_inference_steps=run_steps,
                                            guidance_scale=args.guidance, generator=torch.Generator().manual_seed(0)))
    per_step = seconds / run_steps
    rows.append(("invert: seconds per step (one CFG prior call)", f"{per_step:.3f}", f"{run_steps} steps run"))
    rows.append((f"invert, {args.steps} steps", f"{per_step * args.steps:.2f}",
                 "extrapolated" if extrapolated else "measured"))
    totals = {}
    for strength in args.strengths:
        ran = int(run_steps * strength)
        full = int(args.steps * strength)
        seconds, _ = clock(lambda: gen.edit_latents(inv, "a golden chair", strength=strength,
                                                    guidance_scale=args.guidance))
        per = seconds / max(ran, 1)
        rows.append((f"edit strength {strength}: seconds per step", f"{per:.3f}", f"{ran} steps run"))
        totals[strength] = per_step * args.steps + per * full
        rows.append((f"edit strength {strength}, {full} steps", f"{per * full:.2f}",
                     "extrapolated" if extrapolated else "measured"))
        rows.append((f"invert + edit strength {strength}", f"{totals[strength]:.2f}", "no encode"))
        if encode_s:
            rows.append((f"encode + invert + edit strength {strength}", f"{encode_s + totals[strength]:.2f}",
                         f"GPU target: {GPU_TARGET_S} s"))

    full_bytes = (2 * args.steps + 1) * gen.latent_width * 4
    half = int(args.steps * 0.5)
    rows.append((f"inversion size, {args.steps} steps (all strengths)", f"{full_bytes / 2**20:.0f} MiB",
                 f"noise maps + path x_0..x_{args.steps}, float32"))
    rows.append(("inversion size, saved for strength 0.5", f"{(half + 2) * gen.latent_width * 4 / 2**20:.0f} MiB",
                 f"z_1..z_{half}, x_{half}, x_0"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inv.safetensors"
        save_s, _ = clock(lambda: inv.save(path))
        load_s, _ = clock(lambda: ShapEInversion.load(path, device=device))
        size = path.stat().st_size
    rows.append((f"save + load of the {run_steps}-step inversion", f"{save_s:.2f} + {load_s:.2f}",
                 f"{size / 2**20:.0f} MiB file"))

    peak = peak_memory_bytes(device) / 2**30
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    date = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"## bench_edit\n\n- device: {device} ({name}), threads {torch.get_num_threads()}, dtype {dtype}\n"
          f"- date: {date}\n- command: `python {' '.join(sys.argv)}`\n- torch {torch.__version__}; "
          f"peak memory {peak:.2f} GiB ({'GPU allocated' if device.type == 'cuda' else 'process RSS'})\n"
          f"- latent: {source}; guidance {args.guidance}\n")
    print("| what | value (s unless stated) | notes |\n|---|---|---|")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")
    print("\n" + json.dumps({w: v for w, v, _ in rows}))


if __name__ == "__main__":
    main()
