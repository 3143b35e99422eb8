"""Training-step benchmark: full-size Sharp-It models (random weights), 960x640 grids.

On a CUDA GPU it times real optimiser steps (VAE + text encoding, v-prediction loss, backward, AdamW)
at ``--batch`` (3, the paper's) in bf16 autocast, for every combination of gradient checkpointing
on/off and AdamW vs bitsandbytes' 8-bit AdamW (when installed), and reports seconds per step and
peak GPU memory.

On a CPU (no GPU lent) it records one step at batch 1 with bf16 weights and gradient checkpointing,
and prints an *analytic estimate* of the GPU memory at ``--batch``: fp32 weights + fp32 grads +
optimiser states (2 x fp32 for AdamW, 2 x 1 byte for 8-bit AdamW) + frozen bf16 VAE and text
encoder + activations. Activations are measured on the CPU by counting (and discarding) every
tensor autograd saves in one bf16 forward pass at batch 1 (deduplicated by storage), scaled by
the batch size; with gradient checkpointing one extra block's recomputation is not counted, so a
20 % margin is added on top of the activations.

Usage: python benchmarks/bench_train.py [--batch 3] [--steps 3] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # the other benchmarks, and the repo's `training` package
from bench_refine import build_pipeline  # noqa: E402  (the full-size architecture, one definition)

from training.loss import encode_batch, make_noise_scheduler, sharpit_loss, step_generator, unconditional_branch  # noqa: E402

GIB = 1024 ** 3
GRID = (960, 640)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _step(pipe, optimizer, batch: int, index: int, null) -> float:
    device = pipe.unet.device
    gen = step_generator(0, index)
    pixels = torch.rand(batch, 3, *GRID, generator=gen).to(device, torch.bfloat16)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        enc = encode_batch(pipe.vae, pipe.tokenizer, pipe.text_encoder, pixels, pixels, ["a chair"] * batch, gen)
        loss = sharpit_loss(pipe.unet, make_noise_scheduler(), enc, null, "concat", 0.1, gen)["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(pipe.unet.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _optimizer(kind: str, params):
    if kind == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-5)
    return torch.optim.AdamW(params, lr=1e-5)


def bench_gpu(batch: int, steps: int) -> None:
    import importlib.util

    kinds = ["adamw"] + (["adamw8bit"] if importlib.util.find_spec("bitsandbytes") else [])
    print(f"device: {torch.cuda.get_device_name()}, batch {batch}, grid {GRID[0]}x{GRID[1]}, bf16 autocast")
    print("| gradient checkpointing | optimizer | s/step | peak GPU memory (GiB) |")
    print("|---|---|---|---|")
    for ckpt in (False, True):
        for kind in kinds:
            pipe = build_pipeline("concat", torch.float32, "cuda")
            pipe.vae.to(dtype=torch.bfloat16).requires_grad_(False)
            pipe.text_encoder.to(dtype=torch.bfloat16).requires_grad_(False)
            if ckpt:
                pipe.unet.enable_gradient_checkpointing()
            pipe.unet.train()
            opt = _optimizer(kind, pipe.unet.parameters())
            null = unconditional_branch(pipe, GRID)
            torch.cuda.reset_peak_memory_stats()
            try:
                _step(pipe, opt, batch, 0, null)  # warm-up (allocates optimiser state)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for i in range(steps):
                    _step(pipe, opt, batch, i + 1, null)
                torch.cuda.synchronize()
                per_step = (time.perf_counter() - start) / steps
                peak = torch.cuda.max_memory_allocated() / GIB
                print(f"| {ckpt} | {kind} | {per_step:.2f} | {peak:.1f} |")
            except torch.cuda.OutOfMemoryError:
                print(f"| {ckpt} | {kind} | OOM | > {torch.cuda.get_device_properties(0).total_memory / GIB:.0f} |")
            del pipe, opt
            torch.cuda.empty_cache()


def _activation_bytes(pipe, checkpointing: bool) -> int:
    """Bytes autograd saves in one bf16 forward at batch 1 (tensors counted once, then dropped)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.device)] = t.untyped_storage().nbytes()
        return None

    def unpack(_):
        raise RuntimeError("the benchmark never runs backward through this graph")

    unet = pipe.unet
    if checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    unet.train()
    latents = torch.randn(1, 4, GRID[0] // 8, GRID[1] // 8)
    condition = torch.randn(1, 4, GRID[0] // 8, GRID[1] // 8)
    embeds = torch.randn(1, 77, 1024)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack), torch.autocast("cpu", dtype=torch.bfloat16):
        unet(torch.cat([latents, condition], 1), torch.tensor([500]), encoder_hidden_states=embeds)
    return sum(seen.values())


def bench_cpu(batch: int) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = build_pipeline("concat", torch.bfloat16, "cpu")
    unet_n, vae_n, text_n = _params(pipe.unet), _params(pipe.vae), _params(pipe.text_encoder)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    acts = {ckpt: _activation_bytes(pipe, ckpt) for ckpt in (False, True)}
    pipe.unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(pipe.unet.parameters(), lr=1e-5)
    null = unconditional_branch(pipe, GRID)
    start = time.perf_counter()
    _step(pipe, opt, 1, 0, null)
    cpu_step = time.perf_counter() - start
    print(f"CPU record: one optimiser step at batch 1, 960x640, bf16 weights, gradient checkpointing, "
          f"AdamW, {torch.get_num_threads()} threads: {cpu_step:.1f} s")
    print(f"parameters: UNet {unet_n / 1e6:.1f}M, VAE {vae_n / 1e6:.1f}M, text encoder {text_n / 1e6:.1f}M")
    print(f"\nESTIMATE (analytic, not measured on a GPU): peak GPU memory at batch {batch}, bf16 autocast, "
          "fp32 master weights")
    print("| gradient checkpointing | optimizer | weights+grads | optimizer states | frozen models | "
          "activations (x1.2) | total GiB | fits 48 GB with margin |")
    print("|---|---|---|---|---|---|---|---|")
    for ckpt in (False, True):
        for kind, state_bytes in (("adamw", 8), ("adamw8bit", 2)):
            wg = unet_n * 8 / GIB
            states = unet_n * state_bytes / GIB
            frozen = (vae_n + text_n) * 2 / GIB
            act = acts[ckpt] * batch * 1.2 / GIB
            total = wg + states + frozen + act
            print(f"| {ckpt} | {kind} | {wg:.1f} | {states:.1f} | {frozen:.1f} | {act:.1f} | {total:.1f} | "
                  f"{'yes' if total < 0.85 * 48e9 / GIB else 'no'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda":
        bench_gpu(args.batch, args.steps)
    else:
        bench_cpu(args.batch)


if __name__ == "__main__":
    main()
