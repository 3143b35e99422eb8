"""Benchmark the coarse stage (Shap-E) at full size with random weights.

Measures: the prior (one CFG-batched call, i.e. one Heun stage, and a full 64-step sample =
127 calls), ``to_mesh`` at the given grid sizes, and a NeRF render of six views.

GPU (full run):
    python benchmarks/bench_coarse.py --device cuda --dtype float16
CPU (reduced: a few prior calls extrapolated, fewer NeRF samples / a smaller image):
    python benchmarks/bench_coarse.py --device cpu --prior-calls 3 --grids 128 \
        --nerf-size 64 --coarse-samples 16 --fine-samples 16
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
from benchutil import sync

REAL_PRIOR = dict(num_attention_heads=16, attention_head_dim=64, num_layers=24, embedding_dim=1024,
                  num_embeddings=1024, additional_embeddings=0, time_embed_act_fn="gelu",
                  norm_in_type="layer", embedding_proj_dim=768, clip_embed_dim=2048, time_embed_dim=4096,
                  encoder_hid_proj_type=None, added_emb_type=None)
REAL_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5)


def build(device: torch.device, dtype: torch.dtype):
    """A ShapEGenerator with the real architectures (manifests/shap_e_diffusers.json), random weights."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from sharpit.coarse import ShapEGenerator
    from sharpit.testing.shap_e import SCHEDULER_CONFIG
    from sharpit.testing.tokenizers import tiny_clip_tokenizer

    torch.manual_seed(0)
    prior = PriorTransformer(**REAL_PRIOR).to(device, dtype)
    text = CLIPTextModelWithProjection(CLIPTextConfig(**REAL_TEXT)).to(device, dtype)
    renderer = ShapERenderer().to(device)  # default config == the published one; float32
    tokenizer = tiny_clip_tokenizer(Path(tempfile.mkdtemp()) / "tok")  # ids fit the real vocab
    gen = ShapEGenerator(prior, text, tokenizer, HeunDiscreteScheduler(**SCHEDULER_CONFIG), renderer,
                         model_id="random-init")
    gen.set_progress_bar_config(disable=True)
    return gen


def timed(fn, device, repeats=1, warmup=True):
    if warmup:
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync(device)
    return (time.perf_counter() - start) / repeats, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                    help="prior/text-encoder dtype (default: float16 on CUDA, float32 on CPU)")
    ap.add_argument("--steps", type=int, default=64, help="Karras steps of a full sample")
    ap.add_argument("--prior-calls", type=int, default=None,
                    help="time this many CFG prior calls and extrapolate instead of a full sample")
    ap.add_argument("--grids", type=int, nargs="*", default=[128, 256])
    ap.add_argument("--nerf-size", type=int, default=320)
    ap.add_argument("--nerf-views", type=int, default=6)
    ap.add_argument("--coarse-samples", type=int, default=64)
    ap.add_argument("--fine-samples", type=int, default=128)
    ap.add_argument("--ray-batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = ap.parse_args(argv)

    from sharpit.cameras import zero123plus_cameras
    from sharpit.coarse.fields import load_latent_into_mlp, stf_fields
    from sharpit.coarse.nerf import render_latent_nerf
    from sharpit.isosurface import query_grid

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    gen = build(device, dtype)
    gpu = device.type == "cuda"
    rows = []

    # prior: one CFG-batched call (batch 2 = unconditional + text) == one Heun stage
    n_calls = 2 * args.steps - 1
    x = torch.randn(2, 1024, 1024, device=device, dtype=dtype)
    emb = torch.randn(2, 768, device=device, dtype=dtype)
    t = torch.tensor(500.0, device=device)
    with torch.no_grad():
        per_call, _ = timed(lambda: gen.prior(x, timestep=t, proj_embedding=emb).predicted_image_embedding,
                            device, repeats=args.prior_calls or 5)
    rows.append(("prior, one CFG call (batch 2)", f"{per_call * 1e3:.1f} ms", f"{args.prior_calls or 5} calls"))
    if args.prior_calls is None:
        total, latents = timed(lambda: gen.sample_latents("a chair", num_inference_steps=args.steps, seed=0), device)
        rows.append((f"sample_latents, {args.steps} steps ({n_calls} calls), CFG 15", f"{total:.3f} s", "measured"))
    else:
        rows.append((f"sample_latents, {args.steps} steps ({n_calls} calls), CFG 15",
                     f"{per_call * n_calls:.1f} s", f"extrapolated from {args.prior_calls} calls"))
        latents = None
    if latents is None:
        latents = torch.randn(1, gen.latent_width, device=device).clamp(-1, 1)

    # to_mesh: grid query of the signed distance + marching cubes + vertex colours
    load_latent_into_mlp(gen.renderer, latents[0])
    sdf, color = stf_fields(gen.renderer)
    for g in args.grids:
        q, _ = timed(lambda: query_grid(sdf, g, -1.0, 1.0, device=device, chunk=131072), device, warmup=gpu)
        try:
            total, mesh = timed(lambda: gen.to_mesh(latents, grid_size=g), device, warmup=gpu)
            faces = f"{mesh.num_faces} faces"
        except Exception as exc:  # random weights may give an empty surface; report it
            total, faces = float("nan"), f"failed: {exc.__class__.__name__}"
        rows.append((f"to_mesh grid {g}", f"{total:.3f} s", f"grid query {q:.3f} s; {faces}"))

    # NeRF render through diffusers' ray path
    cams = zero123plus_cameras()[: args.nerf_views]
    framing = gen.framing(latents, grid_size=min(args.grids or [64]))
    nerf, _ = timed(lambda: render_latent_nerf(gen.renderer, cams, framing, args.nerf_size, args.coarse_samples,
                                                args.fine_samples, args.ray_batch), device, warmup=gpu)
    rows.append((f"NeRF render {args.nerf_views} views {args.nerf_size}px, {args.coarse_samples}+"
                 f"{args.fine_samples} samples", f"{nerf:.2f} s", f"ray batch {args.ray_batch}"))

    peak = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda"
            else "n/a (CPU)")
    name = torch.cuda.get_device_name(device) if gpu else (platform.processor() or platform.machine())
    date = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"## bench_coarse\n\n- device: {device} ({name}), threads {torch.get_num_threads()}, dtype {dtype}\n"
          f"- date: {date}\n"
          f"- command: `python {' '.join(sys.argv)}`\n- torch {torch.__version__}; peak GPU memory {peak}\n")
    print("| what | time | notes |\n|---|---|---|")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")
    print("\n" + json.dumps({w: v for w, v, _ in rows}))


if __name__ == "__main__":
    main()
