"""Golden fixture for the reconstructor: the official InstantMesh code on tiny, fully random weights.

Runs ``TencentARC/InstantMesh``'s own ``InstantNeRF`` (``src/models/lrm.py`` with its DINO wrapper,
triplane transformer and NeRF synthesizer) at a tiny configuration and writes

``instantmesh.ckpt``
    The official model's ``state_dict`` as a released Lightning checkpoint (names under
    ``lrm_generator.`` inside ``"state_dict"``), so sharpit loads it through
    ``InstantMeshReconstructor.from_instantmesh_checkpoint`` like the real files.
``instantmesh.safetensors``
    Inputs and the official outputs (metadata ``"meta"``: JSON with the sharpit config, seeds,
    versions): the six v1.2 input camera vectors, the views (uint8; both sides use ``x / 255``),
    the encoder tokens, the triplanes, activated density and colour at fixed points, a density
    grid, a marching-cubes mesh with vertex colours, and one coarse-sampled novel view (RGB,
    depth, opacity).

Every parameter is re-drawn from a seeded generator, including the zero-initialised adaLN layers
and the decoder's zero biases (otherwise the cameras would have no effect and a parity test would
prove nothing). The DINO ViT is built from a ``ViTConfig`` instead of downloading
``facebook/dino-vitb16``; its image processor gets the ImageNet statistics that sharpit assumes
for that model (recorded in the metadata; they are an input here, not something this fixture can
verify). ``nvdiffrast``, ``cv2``, ``xatlas`` and ``trimesh`` are stubbed when missing (only the
FlexiCubes / texture-map paths use them).

Run it in a scratch environment outside the project (see ``SPEC.md`` section 9), never in the
project's venv; nothing of the official code is copied into the project::

    python -m venv /work/scratch/imvenv
    /work/scratch/imvenv/bin/pip install torch==2.13.0 "transformers>=4.57,<4.58" \\
        "diffusers>=0.36,<0.37" einops omegaconf PyMCubes safetensors
    /work/scratch/imvenv/bin/python scripts/parity/instantmesh.py \\
        --official-root /work/official --out tests/fixtures/parity

``make(official_root, out_dir)`` does the same for ``scripts/make_parity_fixtures.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import json
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import torch

OFFICIAL_REPO = "TencentARC+InstantMesh"
STEM = "instantmesh"

#: The tiny configuration in sharpit's ``InstantMeshReconstructor`` keyword names. The DINO part is
#: a ViT with 32x32 views at patch 8 (4x4 patches) whose position embeddings are stored for 24 px
#: (3x3), so the bicubic interpolation runs; the transformer width (24) differs from the image
#: token width (32) so the cross-attention's kdim/vdim matter; the NeRF decoder is InstantMesh's
#: fixed OSGDecoder (width 64, 4 layers).
SHARPIT_CONFIG = dict(
    encoder_feat_dim=32, encoder_layers=2, encoder_heads=4, encoder_mlp_dim=64, encoder_patch_size=8,
    encoder_pos_grid=3, camera_dim=16, transformer_dim=24, transformer_layers=2, transformer_heads=2,
    triplane_low_res=8, triplane_high_res=16, triplane_dim=8, decoder_hidden_dim=64, decoder_layers=4,
    rendering_samples_per_ray=16,
)
IMAGE_SIZE = 32
BATCH = 2
#: facebook/dino-vitb16's processor statistics as sharpit assumes them (ImageNet's).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

WEIGHT_SEED = 20261201
INPUT_SEED = 7
NUM_POINTS = 512
POINT_BOUND = 1.05          # a few points fall outside [-1, 1]^3 (zero padding of grid_sample)
GRID_SIZE = 16              # density grid and marching-cubes resolution
RENDER_SIZE = 16
RENDER_COARSE_SAMPLES = 24  # coarse pass only: sharpit's importance sampler is its own
RENDER_SEED = 11
RENDER_AZIMUTH_INDEX, RENDER_AZIMUTHS = 1, 8   # get_circular_camera_poses(M=8)[1]: azimuth 45 deg
RENDER_ELEVATION = 20.0
RENDER_RADIUS = 4.0
FOV = 30.0

#: The decoder's output layer: gains on the density and colour rows and a density bias chosen so
#: that at this seed the raw density has its median near +1 and 80 % of it in about [-2, 4]
#: (activated density 0 to 7 on the grid: the novel view's opacity ranges over 0.0 to 0.99).
DENSITY_GAIN, COLOR_GAIN, DENSITY_BIAS = 20.0, 6.0, 6.0
_LAST_DECODER_LAYER = 2 * (SHARPIT_CONFIG["decoder_layers"] - 1)

_STUBS = ("nvdiffrast", "nvdiffrast.torch", "cv2", "xatlas", "trimesh")


@contextlib.contextmanager
def _official_modules(repo: Path) -> Iterator[Dict[str, types.ModuleType]]:
    """Import the official modules from ``repo`` (its ``src`` package), stubbing what only the
    mesh/texture paths need; afterwards ``sys.path`` is restored and ``src.*`` and the stubs are
    dropped from ``sys.modules`` (other checkouts may have a ``src`` package too)."""
    # transformers probes optional packages (cv2 among them) when imported: do that before stubbing.
    import transformers  # noqa: F401
    import transformers.utils.import_utils  # noqa: F401

    saved_path, stubbed = list(sys.path), []
    try:
        for name in _STUBS:
            try:
                __import__(name)
            except Exception:  # absent (or broken) optional dependency: an empty module will do
                stub = types.ModuleType(name)
                stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
                sys.modules[name] = stub
                stubbed.append(name)
        sys.modules["nvdiffrast"].torch = sys.modules["nvdiffrast.torch"]
        sys.path.insert(0, str(repo))
        mods = {
            "lrm": __import__("src.models.lrm", fromlist=["InstantNeRF"]),
            "dino": __import__("src.models.encoder.dino", fromlist=["ViTModel"]),
            "dino_wrapper": __import__("src.models.encoder.dino_wrapper", fromlist=["DinoWrapper"]),
            "camera_util": __import__("src.utils.camera_util", fromlist=["get_zero123plus_input_cameras"]),
        }
        yield mods
    finally:
        sys.path[:] = saved_path
        for name in [m for m in sys.modules if m == "src" or m.startswith("src.")] + stubbed:
            sys.modules.pop(name, None)


def _build_official(mods) -> torch.nn.Module:
    """The official ``InstantNeRF`` at :data:`SHARPIT_CONFIG`, DINO built from a config."""
    from transformers import ViTConfig, ViTImageProcessor

    c = SHARPIT_CONFIG
    vit_config = ViTConfig(hidden_size=c["encoder_feat_dim"], num_hidden_layers=c["encoder_layers"],
                           num_attention_heads=c["encoder_heads"], intermediate_size=c["encoder_mlp_dim"],
                           image_size=c["encoder_pos_grid"] * c["encoder_patch_size"],
                           patch_size=c["encoder_patch_size"], num_channels=3, qkv_bias=True,
                           hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)

    def build_dino(model_name, *args, **kwargs):
        model = mods["dino"].ViTModel(vit_config, add_pooling_layer=False)
        # The wrapper calls it with do_resize=False, do_rescale=False: only (x - mean) / std is used.
        processor = ViTImageProcessor(do_resize=True, size={"height": 224, "width": 224}, resample=3,
                                      do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                      image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))
        return model, processor

    wrapper_cls = mods["dino_wrapper"].DinoWrapper
    original = wrapper_cls.__dict__["_build_dino"]
    wrapper_cls._build_dino = staticmethod(build_dino)
    try:
        model = mods["lrm"].InstantNeRF(
            encoder_freeze=False, encoder_model_name="tiny-dino-from-config",
            encoder_feat_dim=c["encoder_feat_dim"], transformer_dim=c["transformer_dim"],
            transformer_layers=c["transformer_layers"], transformer_heads=c["transformer_heads"],
            triplane_low_res=c["triplane_low_res"], triplane_high_res=c["triplane_high_res"],
            triplane_dim=c["triplane_dim"], rendering_samples_per_ray=c["rendering_samples_per_ray"])
    finally:
        wrapper_cls._build_dino = original
    return model.eval()


def _redraw(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter fresh non-trivial values from one seeded generator (names in sorted
    order, so the draw does not depend on module registration order)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 1 and ("norm" in name or "layernorm" in name) and leaf == "weight":
                value = 1.0 + 0.2 * noise                       # LayerNorm gains
            elif name.endswith(f"decoder.net.{_LAST_DECODER_LAYER}.bias"):
                value = 0.2 * noise + torch.tensor([DENSITY_BIAS, 0.0, 0.0, 0.0])
            elif leaf == "bias" or p.ndim == 1:
                value = 0.2 * noise                             # every bias, adaLN and decoder ones too
            elif "adaLN_modulation" in name:
                value = 0.5 * noise / math.sqrt(p.shape[1])     # visible shift/scale per camera
            elif leaf in ("cls_token", "position_embeddings"):
                value = 0.5 * noise
            elif leaf == "pos_embed":
                value = noise
            elif name.endswith(f"decoder.net.{_LAST_DECODER_LAYER}.weight"):
                gain = torch.tensor([DENSITY_GAIN, COLOR_GAIN, COLOR_GAIN, COLOR_GAIN])[:, None]
                value = gain * noise / math.sqrt(p.shape[1])
            elif "deconv" in name:                             # ConvTranspose2d (in, out, k, k)
                value = noise / math.sqrt(p.shape[0])
            else:                                              # Linear / Conv / attention projections
                value = noise / math.sqrt(p[0].numel())
            p.copy_(value)


def _git_head(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # not a git checkout (or no git): record that instead of failing
        return "unknown"


@torch.no_grad()
def make(official_root: Path, out_dir: Path) -> None:
    """Write ``instantmesh.ckpt`` and ``instantmesh.safetensors`` into ``out_dir``."""
    from safetensors.torch import save_file

    repo = Path(official_root) / OFFICIAL_REPO
    if not (repo / "src" / "models" / "lrm.py").is_file():
        raise FileNotFoundError(f"no InstantMesh checkout at {repo} (expected src/models/lrm.py)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    with _official_modules(repo) as mods:
        import mcubes

        cam_util = mods["camera_util"]
        model = _build_official(mods)
        _redraw(model, WEIGHT_SEED)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

        gen = torch.Generator().manual_seed(INPUT_SEED)
        images_u8 = torch.randint(0, 256, (BATCH, 6, 3, IMAGE_SIZE, IMAGE_SIZE), generator=gen, dtype=torch.uint8)
        images = images_u8.float() / 255.0
        cameras = cam_util.get_zero123plus_input_cameras(batch_size=BATCH, radius=4.0, fov=FOV).float()
        points = (torch.rand(BATCH, NUM_POINTS, 3, generator=gen) * 2 - 1) * POINT_BOUND

        tokens = model.encoder(images, cameras)                          # (B*6, 1 + 16, D)
        planes = model.forward_planes(images, cameras)                   # (B, 3, C, 16, 16)
        at_points = model.synthesizer.forward_points(planes, points)
        grid = model.synthesizer.forward_grid(planes[:1], grid_size=GRID_SIZE)["sigma"][0, ..., 0]
        # Half-way between the two middle grid values: no grid node lies exactly on the level (there
        # PyMCubes and scikit-image emit different numbers of coincident vertices).
        middle = grid.flatten().sort().values[grid.numel() // 2 - 1:grid.numel() // 2 + 1]
        level = float(middle.mean())
        verts, faces, vcols = model.extract_mesh(planes[:1], mesh_resolution=GRID_SIZE, mesh_threshold=level)

        c2w = cam_util.get_circular_camera_poses(M=RENDER_AZIMUTHS, radius=RENDER_RADIUS,
                                                 elevation=RENDER_ELEVATION)[RENDER_AZIMUTH_INDEX]
        intrinsics = cam_util.FOV_to_intrinsics(FOV)
        render_camera = torch.cat([c2w.flatten(), intrinsics.flatten()]).float()[None, None]  # (1, 1, 25)
        synth = model.synthesizer
        kwargs = dict(synth.rendering_kwargs)
        synth.rendering_kwargs = {**kwargs, "depth_resolution": RENDER_COARSE_SAMPLES,
                                  "depth_resolution_importance": 0}
        torch.manual_seed(RENDER_SEED)   # the renderer's stratified jitter comes from the global RNG
        render = synth(planes[:1], render_camera, render_size=RENDER_SIZE)
        synth.rendering_kwargs = kwargs

        versions = {"torch": torch.__version__, "numpy": np.__version__,
                    "transformers": sys.modules["transformers"].__version__,
                    "PyMCubes": getattr(mcubes, "__version__", "unknown"),
                    "instantmesh_commit": _git_head(repo)}

    tensors = {
        "images_uint8": images_u8,
        "input_cameras": cameras[0].contiguous(),
        "tokens": tokens.contiguous(),
        "planes": planes.contiguous(),
        "points": points.contiguous(),
        "density": at_points["sigma"][..., 0].contiguous(),
        "rgb": at_points["rgb"].contiguous(),
        "grid_density": grid.contiguous(),
        "mesh_vertices": torch.from_numpy(np.asarray(verts, dtype=np.float32)),
        "mesh_vertex_colors": torch.from_numpy(np.asarray(vcols, dtype=np.uint8)),
        "render_camera": render_camera[0, 0].contiguous(),
        "render_rgb": render["images_rgb"][0, 0].contiguous(),
        "render_depth": render["images_depth"][0, 0, 0].contiguous(),
        "render_alpha": render["images_weight"][0, 0, 0].contiguous(),
    }
    meta = {
        "sharpit_config": SHARPIT_CONFIG,
        "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD, "image_size": IMAGE_SIZE,
        "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED,
        "grid_size": GRID_SIZE, "mesh_level": level, "mesh_faces": int(len(faces)),
        "render": {"size": RENDER_SIZE, "coarse_samples": RENDER_COARSE_SAMPLES, "importance_samples": 0,
                   "seed": RENDER_SEED, "azimuth_deg": 360.0 * RENDER_AZIMUTH_INDEX / RENDER_AZIMUTHS,
                   "elevation_deg": RENDER_ELEVATION, "radius": RENDER_RADIUS, "fov_deg": FOV},
        "versions": versions,
        "command": "python scripts/parity/instantmesh.py --official-root OFFICIAL_ROOT --out tests/fixtures/parity",
    }
    save_file(tensors, str(out_dir / f"{STEM}.safetensors"), metadata={"meta": json.dumps(meta, sort_keys=True)})
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.1.2",
                "state_dict": {"lrm_generator." + k: v for k, v in sorted(state.items())}},
               out_dir / f"{STEM}.ckpt")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", type=Path, required=True,
                        help=f"folder holding the {OFFICIAL_REPO} checkout")
    parser.add_argument("--out", type=Path, required=True, help="fixture folder (tests/fixtures/parity)")
    args = parser.parse_args(argv)
    make(args.official_root, args.out)
    for suffix in (".ckpt", ".safetensors"):
        path = args.out / f"{STEM}{suffix}"
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
