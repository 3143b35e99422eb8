"""Golden outputs of the official Shap-E DDPM (``GaussianDiffusion`` respaced) on tiny random weights.

Proves the conventions of sharpit's DDPM inversion (``sharpit.coarse.inversion``): respacing,
posterior mean and variance, the prior's learned variance, the model call (integer timesteps of
the respaced map, clean-latent prediction clamped), the step order of ancestral sampling. Runs the
official ``openai/shap-e`` code in the scratch environment of ``shap_e_prior.py`` (same tiny prior,
built by its ``build_official_prior``)::

    python scripts/parity/shap_e_ddpm.py --official-root /work/official --out tests/fixtures/parity

Stored in ``shap_e_ddpm.safetensors`` (the official code is not stored):

* ``prior.*``, ``embeds``: the tiny prior in diffusers names and the text embeddings (as in ``shap_e.safetensors``);
* ``timesteps_<n>``: ``space_timesteps(1024, str(n))`` sorted, for several n;
* ``betas_128``, ``posterior_variance_128``, ``posterior_log_variance_clipped_128``,
  ``posterior_mean_coef{1,2}_128`` (float64) of ``diffusion_from_config(respacing="128")``;
* per step k in ``STEPS``: the input ``xt_<k>`` (``q_sample`` of a clean latent in [-1, 1]) and
  the official ``p_mean_variance(clip_denoised=True)`` outputs without guidance (``mean_<k>``,
  ``variance_<k>`` (learned), ``pred_xstart_<k>``) and with guidance ``GUIDANCE``
  (``mean_g_<k>``, ``variance_g_<k>``, ``pred_xstart_g_<k>``). The official DDPM guidance wrapper
  (``sample.uncond_guide_model``) guides only the first 3 output channels (an image-model
  leftover), so guidance is composed from official parts the way the official Karras path does it:
  ``p_mean_variance`` on [cond, uncond] rows (each clean prediction clamped), ``uncond + s (cond -
  uncond)``, then ``q_posterior_mean_variance`` of the guided prediction; the variance is the
  conditional row's;
* ``chain_<var>_*``: ``p_sample_loop`` over ``CHAIN_STEPS`` respaced steps without guidance, for the
  learned variance ("learned", the official config) and for ``model_var_type="fixed_small"``
  ("posterior", the model's variance half dropped): the initial noise ``chain_<var>_xT``, the noise
  ``p_sample`` drew at each step in loop order (``chain_<var>_noise``, recorded from
  ``torch.randn_like``) and the final sample ``chain_<var>_x0``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shap_e_prior import BATCH, D_LATENT, N_CTX, PRIOR_CONFIG, TEXT_DIM, _import_official, _to_diffusers, \
    build_official_prior  # noqa: E402

SEED = 4321
GUIDANCE = 12.0
STEPS = (127, 100, 64, 16, 1, 0)          # indices into the 128-step respaced diffusion
RESPACINGS = (2, 3, 16, 100, 128, 1024)
CHAIN_STEPS = 16


def make(official_root: Path, out_dir: Path, commit: str = "") -> Path:
    checkout = Path(official_root) / "openai+shap-e"
    diffusion_from_config, _, transformer, SplitVectorDiffusion = _import_official(checkout)
    from safetensors.torch import save_file
    from shap_e.diffusion import gaussian_diffusion as gd

    model, embeds = build_official_prior(transformer, SplitVectorDiffusion)
    width = N_CTX * D_LATENT
    tensors = {f"prior.{k}": v for k, v in _to_diffusers(model.state_dict()).items()}
    tensors["embeds"] = embeds * TEXT_DIM ** 0.5
    for n in RESPACINGS:
        tensors[f"timesteps_{n}"] = torch.tensor(sorted(gd.space_timesteps(1024, str(n))), dtype=torch.long)

    config = {"schedule": "exp", "timesteps": 1024, "mean_type": "x_start"}
    diffusion = diffusion_from_config(dict(config, respacing="128"))
    for name in ("betas", "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
                 "posterior_mean_coef2"):
        tensors[f"{name}_128"] = torch.from_numpy(getattr(diffusion, name).copy())

    cond = {"embeddings": embeds}
    both = {"embeddings": torch.cat([embeds, torch.zeros_like(embeds)])}
    torch.manual_seed(SEED)
    x0 = torch.rand(BATCH, width) * 2 - 1
    eps = torch.randn(BATCH, width)
    with torch.no_grad():
        for k in STEPS:
            t = torch.full((BATCH,), k, dtype=torch.long)
            xt = diffusion.q_sample(x0, t, noise=eps)
            out = diffusion.p_mean_variance(model, xt, t, clip_denoised=True, model_kwargs=cond)
            pair = diffusion.p_mean_variance(model, torch.cat([xt, xt]), torch.cat([t, t]), clip_denoised=True,
                                             model_kwargs=both)
            c, u = pair["pred_xstart"].chunk(2)
            guided = u + GUIDANCE * (c - u)
            mean_g, _, _ = diffusion.q_posterior_mean_variance(guided, xt, t)
            tensors.update({f"xt_{k}": xt, f"mean_{k}": out["mean"], f"variance_{k}": out["variance"],
                            f"pred_xstart_{k}": out["pred_xstart"], f"mean_g_{k}": mean_g,
                            f"variance_g_{k}": pair["variance"][:BATCH], f"pred_xstart_g_{k}": guided})

        betas = gd.get_named_beta_schedule("exp", 1024)
        spaced = gd.space_timesteps(1024, str(CHAIN_STEPS))
        chains = {
            "learned": (diffusion_from_config(dict(config, respacing=str(CHAIN_STEPS))), model),
            "posterior": (gd.SpacedDiffusion(use_timesteps=spaced, betas=betas, model_mean_type="x_start",
                                             model_var_type="fixed_small", loss_type="mse"),
                          lambda x, t, **kw: model(x, t, **kw)[:, :width]),
        }
        randn_like = torch.randn_like
        for var, (chain, fn) in chains.items():
            drawn = []

            def recording(x, *args, **kwargs):
                noise = randn_like(x, *args, **kwargs)
                drawn.append(noise.clone())
                return noise

            torch.manual_seed(SEED + 1)
            x_T = torch.randn(BATCH, width)
            torch.randn_like = recording
            try:
                final = chain.p_sample_loop(fn, (BATCH, width), noise=x_T, clip_denoised=True, model_kwargs=cond,
                                            device=torch.device("cpu"))
            finally:
                torch.randn_like = randn_like
            assert len(drawn) == CHAIN_STEPS
            tensors.update({f"chain_{var}_xT": x_T, f"chain_{var}_noise": torch.stack(drawn),
                            f"chain_{var}_x0": final})

    commit = commit or subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                      text=True).stdout.strip() or "unknown"
    meta = {"prior_config": json.dumps(PRIOR_CONFIG), "guidance": str(GUIDANCE), "steps": json.dumps(STEPS),
            "chain_steps": str(CHAIN_STEPS), "official": f"github:openai/shap-e@{commit}", "torch": torch.__version__}
    out = Path(out_dir) / "shap_e_ddpm.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), metadata=meta)
    print(f"[shap_e_ddpm] wrote {out} ({out.stat().st_size} bytes); guided x0 |max| "
          f"{max(float(tensors[f'pred_xstart_g_{k}'].abs().max()) for k in STEPS):.2f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, required=True,
                        help="folder holding the checkout openai+shap-e")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/parity")
    parser.add_argument("--official-commit", default="",
                        help="the checkout's commit, recorded in the fixture (default: git rev-parse HEAD there)")
    args = parser.parse_args()
    make(args.official_root, args.out, args.official_commit)
