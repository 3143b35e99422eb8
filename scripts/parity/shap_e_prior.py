"""Golden outputs of the official Shap-E text-to-3D sampler on tiny random weights.

Runs the official ``openai/shap-e`` code (imported at run time from a checkout; nothing of it is
stored) in a scratch environment that has torch, numpy, scipy, pyyaml, filelock, requests, tqdm
and safetensors (no diffusers needed)::

    python scripts/parity/shap_e_prior.py --official-root /work/official --out tests/fixtures/parity

What it builds and runs:

* the official prior, ``SplitVectorDiffusion`` wrapping ``CLIPImagePointDiffusionTransformer``
  with the structure of ``text_cond_config.yaml`` (token and time-token conditioning, learned
  positions, output = clean latent + variance) at tiny widths, EVERY weight redrawn (the official
  init zeroes ``output_proj``); its CLIP text tower is replaced by precomputed unit embeddings,
  which is what ``cached_model_kwargs`` feeds the model;
* the official diffusion ``diffusion_from_config({"schedule": "exp", "timesteps": 1024,
  "mean_type": "x_start"})`` (the ``openai/shap-e`` diffusers scheduler config: "exp", 1024 steps,
  prediction "sample") and ``shap_e.diffusion.sample.sample_latents`` with the official
  defaults (Karras, sigma 1e-3 .. 160, s_churn 0, clip_denoised), its initial noise drawn from the
  global RNG seeded with ``SEED``.

Stored in ``shap_e.safetensors``: the weights renamed to diffusers' ``PriorTransformer`` names
(the mapping of diffusers' ``scripts/convert_shap_e_to_diffusers.py``, re-implemented here from
its documented key map: c_qkv rows interleaved per head), the embeddings, and the latents after
8 and 64 steps at guidance 15 and after 8 steps without guidance, plus the official integer
timesteps of the 64-step schedule. ``tests/test_parity_shap_e.py`` loads them into sharpit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

SEED = 1234
BATCH = 2
N_CTX = 32          # latent rows   (openai/shap-e: 1024)
D_LATENT = 16       # row width     (1024); sharpit.testing.shap_e's tiny renderer reads 32 x 16
WIDTH = 16          # transformer width (1024) = heads * head_dim
HEADS = 2           # (16)
LAYERS = 2          # (24)
TEXT_DIM = 16       # CLIP text feature width (768)
# Weight scales (times 1/sqrt(fan_in)). At full scale a random transformer makes guided sampling
# chaotic: float32 rounding (1e-7) grows to 1e-2 over 8 guided steps, so no two implementations
# agree. At these scales rounding stays below 5e-5 while the conventions under test still show:
# fractional timesteps move the latents by 2e-3 .. 3e-2, diffusers' Heun scheduler by 2e-2 .. 2e-1,
# and guided clean-latent predictions still leave [-1, 1].
W_SCALE = 0.4       # attention and MLP weights
T_SCALE = 3.0       # time-embedding MLP: makes the prior sensitive to its timestep
OUT_SCALE = 1.0     # output projection (zero-initialised by the official code)
RUNS = {"latents_8_g15": (8, 15.0), "latents_64_g15": (64, 15.0), "latents_8_g1": (8, 1.0)}

#: diffusers ``PriorTransformer`` config of the converted tiny prior (same keys as openai/shap-e's prior/config.json).
PRIOR_CONFIG = {
    "num_attention_heads": HEADS, "attention_head_dim": WIDTH // HEADS, "num_layers": LAYERS,
    "embedding_dim": D_LATENT, "num_embeddings": N_CTX, "additional_embeddings": 0, "dropout": 0.0,
    "time_embed_act_fn": "gelu", "norm_in_type": "layer", "embedding_proj_norm_type": None,
    "encoder_hid_proj_type": None, "added_emb_type": None, "time_embed_dim": 4 * WIDTH,
    "embedding_proj_dim": TEXT_DIM, "clip_embed_dim": 2 * D_LATENT,
}


def _import_official(checkout: Path):
    """Import the official sampler and transformer with their unused imports stubbed."""
    for name in ("blobfile", "clip"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, str(checkout))
    from shap_e.diffusion.gaussian_diffusion import diffusion_from_config
    from shap_e.diffusion.sample import sample_latents
    from shap_e.models.generation import transformer
    from shap_e.models.generation.latent_diffusion import SplitVectorDiffusion

    class GivenEmbeddings(torch.nn.Module):
        """Stands in for FrozenImageCLIP: returns the precomputed unit text embeddings."""

        feature_dim = TEXT_DIM

        def __init__(self, device):
            super().__init__()

        def forward(self, batch_size, images=None, texts=None, embeddings=None):
            return torch.stack([e.float() for e in embeddings])

    transformer.FrozenImageCLIP = GivenEmbeddings
    return diffusion_from_config, sample_latents, transformer, SplitVectorDiffusion


def _to_diffusers(official: dict) -> dict:
    """Official prior state dict (``wrapped.*``) -> diffusers ``PriorTransformer`` names."""
    head_dim = WIDTH // HEADS
    out = {}
    plain = {"time_embed.c_fc": "time_embedding.linear_1", "time_embed.c_proj": "time_embedding.linear_2",
             "input_proj": "proj_in", "clip_embed": "embedding_proj", "ln_pre": "norm_in",
             "ln_post": "norm_out", "output_proj": "proj_to_clip_embeddings"}
    block = {"attn.c_proj": "attn1.to_out.0", "mlp.c_fc": "ff.net.0.proj", "mlp.c_proj": "ff.net.2",
             "ln_1": "norm1", "ln_2": "norm3"}
    for key, value in official.items():
        name = key[len("wrapped."):]
        if name == "pos_emb":
            out["positional_embedding"] = value[None]
            continue
        stem, leaf = name.rsplit(".", 1)
        if stem in plain:
            out[f"{plain[stem]}.{leaf}"] = value
            continue
        parts = stem.split(".")                      # backbone.resblocks.{i}.<rest>
        i, rest = parts[2], ".".join(parts[3:])
        prefix = f"transformer_blocks.{i}."
        if rest == "attn.c_qkv":
            chunks = value.reshape(HEADS, 3, head_dim, *value.shape[1:])
            for j, qkv in enumerate(("to_q", "to_k", "to_v")):
                out[f"{prefix}attn1.{qkv}.{leaf}"] = chunks[:, j].reshape(WIDTH, *value.shape[1:])
        else:
            out[f"{prefix}{block[rest]}.{leaf}"] = value
    out["clip_mean"] = torch.zeros(1, 2 * D_LATENT)      # diffusers-only, unused by sampling
    out["clip_std"] = torch.ones(1, 2 * D_LATENT)
    return {k: v.contiguous() for k, v in out.items()}


def build_official_prior(transformer, SplitVectorDiffusion):
    """The official tiny prior with every weight redrawn (seed 0), and BATCH unit text embeddings
    (drawn right after, from the same RNG stream). ``scripts/parity/shap_e_ddpm.py`` builds the same one."""
    torch.manual_seed(0)
    inner = transformer.CLIPImagePointDiffusionTransformer(
        device=torch.device("cpu"), dtype=torch.float32, n_ctx=N_CTX, token_cond=True, input_channels=D_LATENT,
        output_channels=2 * D_LATENT, width=WIDTH, layers=LAYERS, heads=HEADS, time_token_cond=True,
        use_pos_emb=True, init_scale=0.25)
    model = SplitVectorDiffusion(device=torch.device("cpu"), wrapped=inner, n_ctx=N_CTX,
                                 d_latent=N_CTX * D_LATENT).eval()
    with torch.no_grad():                            # redraw everything, zero-initialised layers included
        for name, p in model.named_parameters():
            if name.endswith("output_proj.weight"):
                p.copy_(torch.randn_like(p) * OUT_SCALE / p.shape[1] ** 0.5)   # x0 predictions beyond [-1, 1]
            elif "time_embed" in name and p.ndim >= 2:
                p.copy_(torch.randn_like(p) * T_SCALE / p.shape[-1] ** 0.5)
            elif p.ndim >= 2:
                p.copy_(torch.randn_like(p) * W_SCALE / p.shape[-1] ** 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "ln" in name and name.endswith("weight") else 0.0))
    embeds = torch.nn.functional.normalize(torch.randn(BATCH, TEXT_DIM), dim=-1)
    return model, embeds


def make(official_root: Path, out_dir: Path) -> Path:
    checkout = Path(official_root) / "openai+shap-e"
    diffusion_from_config, sample_latents, transformer, SplitVectorDiffusion = _import_official(checkout)
    from safetensors.torch import save_file

    model, embeds = build_official_prior(transformer, SplitVectorDiffusion)
    diffusion = diffusion_from_config({"schedule": "exp", "timesteps": 1024, "mean_type": "x_start"})

    tensors = {f"prior.{k}": v for k, v in _to_diffusers(model.state_dict()).items()}
    tensors["embeds"] = embeds * TEXT_DIM ** 0.5       # the prior's input scale (sharpit's encode_prompts)
    for key, (steps, guidance) in RUNS.items():
        torch.manual_seed(SEED)
        with torch.no_grad():
            tensors[key] = sample_latents(
                batch_size=BATCH, model=model, diffusion=diffusion, model_kwargs={"embeddings": list(embeds)},
                guidance_scale=guidance, clip_denoised=True, use_fp16=False, use_karras=True, karras_steps=steps,
                sigma_min=1e-3, sigma_max=160, s_churn=0.0).float().contiguous()

    from shap_e.diffusion.k_diffusion import GaussianToKarrasDenoiser, get_sigmas_karras
    sigmas = get_sigmas_karras(64, 1e-3, 160)[:-1]
    clock = GaussianToKarrasDenoiser(model, diffusion)
    tensors["sigmas_64"] = sigmas.float().contiguous()
    tensors["timesteps_64"] = torch.tensor([clock.sigma_to_t(s) for s in sigmas.numpy()], dtype=torch.long)

    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    meta = {"prior_config": json.dumps(PRIOR_CONFIG), "seed": str(SEED), "runs": json.dumps(RUNS),
            "official": f"github:openai/shap-e@{commit}", "torch": torch.__version__}
    out = Path(out_dir) / "shap_e.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    g = tensors["latents_64_g15"]
    print(f"[shap_e] wrote {out} ({out.stat().st_size} bytes); 64-step latents |max| {g.abs().max():.3f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, required=True,
                        help="folder holding the checkout openai+shap-e")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/parity")
    args = parser.parse_args()
    make(args.official_root, args.out)
