"""Golden output of the official Shap-E encoder ("transmitter" encoder) on tiny random weights.

Runs the official ``openai/shap-e`` code (imported at run time from a checkout; nothing of it is
stored) in a scratch environment with torch, numpy, pillow, pyyaml and safetensors::

    python scripts/parity/shap_e_encoder.py --official-root /work/official --out tests/fixtures/parity

What it builds and runs: ``shap_e.models.transmitter.channels_encoder.PointCloudPerceiverChannelsEncoder``
with the released config's structure (``pcl_and_multiview_pcl``, point convolution, ``fps_method
first``, NeRF position encoding, ``clamp_diffusion_noise`` bottleneck, ChannelsParamsProj with
LayerNorm) at the sizes of ``sharpit.testing.shap_e_encoder.TINY_ENCODER_YAML``, EVERY weight
redrawn; ``param_shapes`` are the tiny Shap-E renderer's (``nerstf.mlp.{0..3}.weight``: 8 x 93,
then 8 x 8 three times: 32 latent rows of 16). Inputs are drawn at random in the form
``load_or_create_multimodal_batch`` produces (points (1, 6, N) with 8-bit colours; views as a
tensor in [-1, 1]; depths as a list of numpy arrays, so the official ``max_depth`` clamp runs,
with some beyond it and some infinite; alphas with uncovered, partly and fully covered pixels;
``ProjectiveCamera`` objects with Blender's axes at distance 4). ``encode_to_bottleneck`` runs in
eval mode after ``torch.manual_seed(SEED)`` (its point convolution shuffles draw from the global RNG).

Stored in ``shap_e_encoder.safetensors``: the state dict under ``transmitter.pt``'s names
(``encoder.*``), the inputs, the latent, and the YAML config in the metadata.
``tests/test_parity_shap_e_encoder.py`` writes them back in the released layout and loads them
through :meth:`sharpit.coarse.ShapEEncoder.from_pretrained`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
import yaml

SEED = 1234
POINTS, VIEWS, SIZE = 128, 2, 32
#: The tiny config (same values as sharpit.testing.shap_e_encoder.TINY_ENCODER_YAML's encoder).
ENCODER = {
    "cross_attention_dataset": "pcl_and_multiview_pcl", "d_latent": 16, "data_ctx": 16, "fps_method": "first",
    "heads": 2, "init_scale": 0.25, "inner_batch_size": [POINTS, VIEWS], "input_channels": 6,
    "latent_bottleneck": {"name": "clamp_diffusion_noise", "diffusion_prob": 0.1,
                          "diffusion": {"schedule": "inv_parabola", "schedule_args": {"power": 5.0}, "timesteps": 1024}},
    "layers": 2, "max_depth": 9.0, "max_unrolls": 1, "min_unrolls": 1,
    "params_proj": {"init_scale": 1.0, "learned_scale": 0.0625, "name": "channels", "use_ln": True},
    "patch_size": 8, "image_size": SIZE, "pointconv_hidden": [32, 32], "pointconv_padding_mode": "circular",
    "pointconv_patch_size": 4, "pointconv_samples": 16, "pointconv_stride": 2, "pos_emb": "nerf",
    "use_depth": True, "use_pointconv": True, "width": 32, "xattn_layers": 1,
}
RENDERER = {"name": "NeRSTFRenderer", "nerstf": {"name": "MLPNeRSTFModel", "d_hidden": 8, "n_meta_layers": 4}}
PARAM_SHAPES = {"nerstf.mlp.0.weight": (8, 93), "nerstf.mlp.1.weight": (8, 8), "nerstf.mlp.2.weight": (8, 8),
                "nerstf.mlp.3.weight": (8, 8)}
FOV = 2.0 * math.atan(18.0 / 50.0)


def _import_official(checkout: Path):
    for name in ("blobfile", "clip"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, str(checkout))
    from shap_e.models.transmitter.channels_encoder import PointCloudPerceiverChannelsEncoder
    from shap_e.rendering.view_data import ProjectiveCamera
    from shap_e.util.collections import AttrDict
    return PointCloudPerceiverChannelsEncoder, ProjectiveCamera, AttrDict


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    Encoder, ProjectiveCamera, AttrDict = _import_official(args.official_root / "openai+shap-e")
    from safetensors.torch import save_file

    config = {k: v for k, v in ENCODER.items()}
    model = Encoder(device=torch.device("cpu"), dtype=torch.float32, param_shapes=PARAM_SHAPES,
                    **json.loads(json.dumps(config)))
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if ("ln" in name or "norm" in name) and name.endswith("weight") else 0.0
            scale = 1.0 if name.endswith("output_tokens") else 0.2
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))
    model.eval()

    # Inputs in the form load_or_create_multimodal_batch gives them (after normalize_input_batch).
    xyz = torch.rand(POINTS, 3, generator=gen) * 2 - 1
    rgb = torch.randint(0, 256, (POINTS, 3), generator=gen).float() / 255.0
    points = torch.cat([xyz, rgb], dim=1)
    views = torch.rand(1, VIEWS, 3, SIZE, SIZE, generator=gen) * 2 - 1
    alphas = torch.randint(0, 3, (1, VIEWS, 1, SIZE, SIZE), generator=gen).float() / 2.0
    depths = 2.0 + 9.0 * torch.rand(VIEWS, SIZE, SIZE, generator=gen)          # some beyond max_depth 9
    depths[:, :2] = float("inf")
    cameras, cam = [], {k: [] for k in ("origin", "x", "y", "z")}
    for _ in range(VIEWS):
        d = torch.randn(3, generator=gen, dtype=torch.float64)
        d = (d / d.norm()).numpy()
        origin = -4.0 * d                                  # Blender: camera at -dist * direction, looking along it
        z = d
        x = np.cross(z, [0.0, 0.0, 1.0]); x /= np.linalg.norm(x)
        y = np.cross(z, x)                                 # image down
        cameras.append(ProjectiveCamera(origin=origin.astype(np.float32), x=x.astype(np.float32),
                                        y=y.astype(np.float32), z=z.astype(np.float32), width=SIZE, height=SIZE,
                                        x_fov=FOV, y_fov=FOV))
        for k, v in zip(("origin", "x", "y", "z"), (origin, x, y, z)):
            cam[k].append(torch.from_numpy(v.astype(np.float32)))
    batch = AttrDict(points=points.t()[None], views=views, view_alphas=alphas,
                     depths=[[depths[i].numpy() for i in range(VIEWS)]], cameras=[cameras])
    torch.manual_seed(SEED)
    with torch.no_grad():
        latent = model.encode_to_bottleneck(batch)
    state = {f"encoder.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors = dict(state)
    tensors.update({
        "input.points": points[None].contiguous(), "input.views": views.contiguous(),
        "input.depths": depths[None, :, None].contiguous(), "input.alphas": alphas.contiguous(),
        "input.origins": torch.stack(cam["origin"])[None], "input.x": torch.stack(cam["x"])[None],
        "input.y": torch.stack(cam["y"])[None], "input.z": torch.stack(cam["z"])[None],
        "input.fov": torch.full((1, VIEWS), FOV), "output.latent": latent.contiguous(),
    })
    tree = {"name": "Transmitter", "encoder": dict(ENCODER, name="PointCloudPerceiverChannelsEncoder"),
            "renderer": RENDERER}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "shap_e_encoder.safetensors"),
              metadata={"transmitter_config_yaml": yaml.safe_dump(tree), "seed": str(SEED)})
    print(f"[parity] shap_e_encoder: latent {tuple(latent.shape)} |mean| {latent.abs().mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
