"""Benchmark SharpItRefinePipeline denoising steps at full size with random weights.

Builds the full-size Zero123++ v1.2 architecture (SD2-size UNet: block_out_channels
(320, 640, 1280, 1280), cross_attention_dim 1024, attention_head_dim [5, 10, 20, 20]; the v1.2 VAE;
the 23-layer 1024-wide CLIP text encoder) with random weights, prepares one 960x640 condition grid
and times ``SharpItRefinePipeline.denoise_step`` (the exact loop body of ``__call__``) with CFG, per
conditioning mode. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, peak process RSS on CPU.

    python benchmarks/bench_refine.py --device cuda --dtype fp16 --mode concat reference --steps 10
    python benchmarks/bench_refine.py --device cpu --dtype fp32 --mode concat reference --steps 1 --warmup 0
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time

import torch
from benchutil import peak_memory_bytes, sync

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_pipeline(mode: str, dtype: torch.dtype, device: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from sharpit.refine import SharpItRefinePipeline
    from sharpit.testing.refine import tiny_scheduler
    from sharpit.testing.tokenizers import save_tiny_clip_tokenizer

    unet = UNet2DConditionModel(
        sample_size=96, in_channels=8 if mode == "concat" else 4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=256, scaling_factor=0.18215, force_upcast=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(save_tiny_clip_tokenizer(tmp)))
    pipe = SharpItRefinePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                           scheduler=tiny_scheduler())
    pipe.to(device)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def bench_mode(mode: str, args) -> dict:
    from sharpit.refine import coerce_condition

    dtype = DTYPES[args.dtype]
    pipe = build_pipeline(mode, dtype, args.device)
    if args.channels_last or args.compile:
        pipe.optimize_unet(channels_last=args.channels_last, compile=args.compile)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator("cpu").manual_seed(0)
    pixels = coerce_condition(torch.rand(3, 960, 640, generator=generator))
    pipe._apply_attention_backend(torch.device(args.device))
    cfg = args.guidance_scale > 1
    embeds = pipe.encode_prompt(["", "a chair"] if cfg else ["a chair"]).to(dtype)
    cond = pipe.prepare_condition_latents(pixels, generator, guidance=cfg).to(args.device, dtype)
    total = args.warmup + args.steps
    timesteps = pipe._timesteps(total, 1.0, args.device)
    latents = torch.randn((1, 4, 120, 80), generator=generator).to(args.device, dtype) * pipe.scheduler.init_noise_sigma
    times = []
    for i, t in enumerate(timesteps):
        sync(args.device)
        start = time.perf_counter()
        latents = pipe.denoise_step(latents, t, embeds, cond, args.guidance_scale, generator)
        sync(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if args.decode:
        pipe._postprocess(latents, "pt")
        sync(args.device)
    result = {"mode": mode, "step_ms": 1000 * statistics.median(times), "steps": len(times),
              "peak_gb": peak_memory_bytes(args.device) / 2**30, "finite": bool(torch.isfinite(latents).all())}
    del pipe
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--mode", nargs="+", choices=["concat", "reference"], default=["concat", "reference"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on CUDA, 1 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 2 on CUDA, 0 on CPU)")
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (counts in warmup)")
    parser.add_argument("--decode", action="store_true", help="also decode the grid (counts in peak memory)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("fp16" if cuda else "fp32")
    args.steps = args.steps if args.steps is not None else (10 if cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (2 if cuda else 0)
    torch.set_num_threads(args.threads)

    rows = [bench_mode(mode, args) for mode in args.mode]
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
    print(f"device: {device_name}; torch {torch.__version__}; date {datetime.date.today().isoformat()}")
    print(f"command: python {' '.join(sys.argv)}")
    print()
    print("| mode | dtype | CFG scale | ms per denoising step (960x640, median) | timed steps | peak memory (GB) | finite |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {args.dtype} | {args.guidance_scale} | {r['step_ms']:.1f} | {r['steps']} | "
              f"{r['peak_gb']:.2f} | {r['finite']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
