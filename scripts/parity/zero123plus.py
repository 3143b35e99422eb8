"""Golden outputs of the official Zero123++ pipeline (and of InstantMesh's fine-tune null condition)
on tiny random weights.

Runs the official code, imported at run time from the checkouts (nothing of it is stored):

* ``SUDO-AI-3D+zero123plus/diffusers-support/pipeline.py``: ``Zero123PlusPipeline`` loaded with
  ``from_pretrained`` from a tiny repository in the ``sudo-ai/zero123plus-v1.2`` layout (written by
  ``sharpit.testing.refine.save_tiny_zero123plus_repo``, so this also proves the official pipeline
  runs on that layout), with EulerAncestral "trailing" (the v1.2 README's scheduler), on one RGBA
  condition image: its grey compositing, ``feature_extractor_vae``/``feature_extractor_clip``
  preprocessing, reference attention, CLIP global embedding with ``ramping_coefficients``, and the
  grey negative condition latent under CFG;
* ``TencentARC+InstantMesh/zero123plus/model.py``: ``MVDiffusion.encode_condition_image`` called
  on ``torch.zeros_like(cond_imgs)``, the unconditional condition of its ``training_step``.

Every weight is redrawn (CLIP's 0.02-std init would leave the global embedding without effect) and
rounded to float16 precision, so the stored float16 weights are exactly what ran. The official code
draws its VAE posterior samples and its reference noise from torch's global RNG: here every such
draw is routed through the one ``torch.Generator`` passed to the pipeline, in the order the
official code draws them (condition sample, negative sample, initial noise, then per step the
reference noise and the ancestral noise). ``SharpItRefinePipeline`` called with a generator seeded the
same draws in that same order, so the same seed must give the same latents.

Environment: a scratch venv outside the project with the project's versions (torch 2.13.0 CPU,
diffusers 0.42.1, transformers 5.24.0, huggingface_hub 2.4.0, safetensors, pillow, numpy) and
no torchvision (the official pipeline imports it only for its depth ControlNet path: it is stubbed,
so both sides use transformers' PIL-backed CLIP image processor). Run::

    /work/scratch/z123venv/bin/python scripts/parity/zero123plus.py \
        --official-root /work/official --out tests/fixtures/parity

Writes ``zero123plus_repo.safetensors`` (the tiny repository: every weight as a float16 tensor
named ``<file>|<parameter>``, every other file's text in the metadata) and
``zero123plus_outputs.safetensors`` (the condition image, the official final latents of each run
as returned by ``output_type="latent"``, i.e. ``unscale_latents(z)``, the prompt embeddings the
UNet saw, and InstantMesh's null latent; seeds and settings in the metadata).
``tests/test_parity_zero123plus.py`` compares sharpit against them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_FIXTURE = "zero123plus_repo.safetensors"
OUTPUTS_FIXTURE = "zero123plus_outputs.safetensors"
SEED = 2024              # of the weights and of the image
STEPS = 3
#: run name -> official call settings; each run uses torch.Generator().manual_seed(seed).
RUNS = {
    "cfg": {"prompt": "a red chair", "guidance_scale": 4.0, "seed": 11},
    "no_cfg": {"prompt": "", "guidance_scale": 1.0, "seed": 12},
}
INSTANTMESH_SEED = 13
IMAGE_SIZE = 64
#: A UNet smaller than sharpit.testing's (which has 0.25 M parameters), to keep the fixture small.
FIXTURE_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn", attention_head_dim=2, norm_num_groups=4, use_linear_projection=True)


@contextlib.contextmanager
def _modules(stubs: Dict[str, types.ModuleType]) -> Iterator[None]:
    """Install stand-ins for absent third-party modules while the official files are imported."""
    added = [name for name in stubs if name not in sys.modules]
    for name in added:
        sys.modules[name] = stubs[name]
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _unused(*args, **kwargs):
    raise RuntimeError("stub of a library path the parity run does not take")


def _to_pil_image(tensor: torch.Tensor):
    """torchvision's ``to_pil_image`` for a (3, H, W) float tensor: ``mul(255).byte()`` then RGB."""
    from PIL import Image

    return Image.fromarray(tensor.mul(255).byte().permute(1, 2, 0).cpu().numpy(), "RGB")


def _stubs() -> Dict[str, types.ModuleType]:
    """torchvision (transforms for the depth path, v2.functional.to_pil_image), pytorch_lightning, einops."""
    class _Transform:
        def __init__(self, *args, **kwargs):
            pass

    transforms = _module("torchvision.transforms", Compose=_Transform, ToTensor=_Transform, Normalize=_Transform)
    v2 = _module("torchvision.transforms.v2", functional=_module("torchvision.transforms.v2.functional",
                                                                  to_pil_image=_to_pil_image, resize=_unused))
    transforms.v2 = v2
    utils = _module("torchvision.utils", make_grid=_unused, save_image=_unused)
    return {"torchvision": _module("torchvision", transforms=transforms, utils=utils),
            "torchvision.transforms": transforms, "torchvision.transforms.v2": v2, "torchvision.utils": utils,
            "pytorch_lightning": _module("pytorch_lightning", LightningModule=torch.nn.Module),
            "einops": _module("einops", rearrange=_unused)}


def _import_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _import_official(official_root: Path) -> Tuple[types.ModuleType, types.ModuleType]:
    """The Zero123++ pipeline module and InstantMesh's ``zero123plus.model`` module."""
    import diffusers  # noqa: F401  (imported before the stubs: transformers probes for torchvision)
    import transformers  # noqa: F401

    z123 = official_root / "SUDO-AI-3D+zero123plus"
    instantmesh = official_root / "TencentARC+InstantMesh"
    with _modules(_stubs()):
        pipeline = _import_file("official_zero123plus_pipeline", z123 / "diffusers-support" / "pipeline.py")
        # zero123plus/ has no __init__.py, and this script's own name would shadow it: load it as a
        # namespace package under another name (its model.py imports .pipeline and src.utils).
        package = _module("instantmesh_zero123plus", __path__=[str(instantmesh / "zero123plus")])
        sys.modules[package.__name__] = package
        sys.path.insert(0, str(instantmesh))
        try:
            model = importlib.import_module("instantmesh_zero123plus.model")
        finally:
            sys.path.remove(str(instantmesh))
    return pipeline, model


def _redraw(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter redrawn (matrices ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.01), other
    vectors ~ N(0, 0.01)), then rounded to float16 precision."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                value = noise * (p[0].numel() ** -0.5)
            elif name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            p.copy_(value.half().float())


def build_repo(directory: Path) -> Path:
    """The tiny Zero123++ repository of the fixture (layout and configs from sharpit.testing)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    from sharpit.testing.refine import TINY_TEXT_DIM, save_tiny_zero123plus_repo

    save_tiny_zero123plus_repo(directory, seed=SEED)
    generator = torch.Generator().manual_seed(SEED)
    parts = {"vae": AutoencoderKL.from_pretrained(directory / "vae"),
             "text_encoder": CLIPTextModel.from_pretrained(directory / "text_encoder"),
             "unet": UNet2DConditionModel(cross_attention_dim=TINY_TEXT_DIM, **FIXTURE_UNET),
             "vision_encoder": CLIPVisionModelWithProjection.from_pretrained(directory / "vision_encoder")}
    for name, model in parts.items():
        _redraw(model, generator)
        for old in (directory / name).iterdir():
            old.unlink()
        model.save_pretrained(directory / name)
    return directory


def repo_tensors(directory: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Weights as float16 tensors keyed ``<relative file>|<name>`` and every other file's text."""
    from safetensors.torch import load_file

    tensors, files = {}, {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if path.suffix == ".safetensors":
            for key, value in load_file(str(path)).items():
                half = value.half()
                if value.is_floating_point() and not torch.equal(half.float(), value.float()):
                    raise RuntimeError(f"{rel}:{key} is not float16-exact")
                tensors[f"{rel}|{key}"] = half if value.is_floating_point() else value
        else:
            files[rel] = path.read_text(encoding="utf-8")
    return tensors, files


def condition_image() -> np.ndarray:
    """(64, 64, 4) uint8 RGBA: random colours inside a disc, transparent outside (so the grey
    compositing matters)."""
    rng = np.random.default_rng(SEED)
    rgb = rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    inside = (yy - IMAGE_SIZE / 2 + 0.5) ** 2 + (xx - IMAGE_SIZE / 2 + 0.5) ** 2 < (0.4 * IMAGE_SIZE) ** 2
    alpha = np.where(inside, 255, rng.integers(0, 256, size=inside.shape)).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


@contextlib.contextmanager
def routed_global_rng(pipeline_module: types.ModuleType, routed_to: torch.Generator) -> Iterator[None]:
    """Send the official code's global-RNG draws to ``routed_to``.

    * ``DiagonalGaussianDistribution.sample()`` without a generator (``encode_condition_image``);
    * ``torch.randn_like`` in ``RefOnlyNoisedUNet.forward`` (the official module's ``torch``).
    """
    import diffusers.models.autoencoders.vae as vae_module

    original = vae_module.randn_tensor

    def randn_tensor(shape, generator=None, **kwargs):
        return original(shape, generator=generator if generator is not None else routed_to, **kwargs)

    class TorchWithRoutedRandnLike(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def randn_like(x, **kwargs):
            return torch.randn(x.shape, generator=routed_to, dtype=x.dtype, device=x.device)

    vae_module.randn_tensor = randn_tensor
    pipeline_module.torch = TorchWithRoutedRandnLike("torch")
    try:
        yield
    finally:
        vae_module.randn_tensor = original
        pipeline_module.torch = torch


def run_official(pipeline_module: types.ModuleType, repo: Path, image: np.ndarray) -> Dict[str, torch.Tensor]:
    from diffusers import EulerAncestralDiscreteScheduler
    from PIL import Image

    pipe = pipeline_module.Zero123PlusPipeline.from_pretrained(str(repo))
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    out = {}
    for run, settings in RUNS.items():
        generator = torch.Generator().manual_seed(settings["seed"])
        seen = []
        pipe.prepare()
        forward = pipe.unet.forward

        def spy(sample, timestep, encoder_hidden_states, *args, **kwargs):
            seen.append(encoder_hidden_states.detach().clone())
            return forward(sample, timestep, encoder_hidden_states, *args, **kwargs)

        pipe.unet.forward = spy
        with routed_global_rng(pipeline_module, generator):
            latents = pipe(Image.fromarray(image, "RGBA"), prompt=settings["prompt"],
                           guidance_scale=settings["guidance_scale"], num_inference_steps=STEPS,
                           output_type="latent", generator=generator).images
        del pipe.unet.forward
        out[f"{run}.latents"] = latents.float().contiguous()
        out[f"{run}.prompt_embeds"] = seen[0].float().contiguous()
    return out


def run_instantmesh_null(model_module: types.ModuleType, pipeline_module: types.ModuleType,
                         repo: Path) -> torch.Tensor:
    """InstantMesh's dropped-sample condition: ``encode_condition_image(torch.zeros_like(cond_imgs))``."""
    pipe = pipeline_module.Zero123PlusPipeline.from_pretrained(str(repo))
    trainer = types.SimpleNamespace(pipeline=pipe, device=torch.device("cpu"))
    cond_imgs = torch.rand(1, 3, 320, 320)  # any size: feature_extractor_vae resizes to 512
    generator = torch.Generator().manual_seed(INSTANTMESH_SEED)
    with routed_global_rng(pipeline_module, generator):
        return model_module.MVDiffusion.encode_condition_image(trainer, torch.zeros_like(cond_imgs)).float()


def _commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make(official_root: Path, out_dir: Path) -> None:
    """Build the tiny repo, run the official code on it and write the two fixtures into ``out_dir``."""
    import diffusers
    import transformers
    from safetensors.torch import save_file

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    official_root, out_dir = Path(official_root), Path(out_dir)
    pipeline_module, model_module = _import_official(official_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    image = condition_image()
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_repo(Path(tmp) / "zero123plus-v1.2")
        tensors, files = repo_tensors(repo)
        outputs = run_official(pipeline_module, repo, image)
        outputs["instantmesh.null_latents"] = run_instantmesh_null(model_module, pipeline_module, repo)
    outputs["condition_image"] = torch.from_numpy(image)
    save_file(tensors, str(out_dir / REPO_FIXTURE), metadata={"files": json.dumps(files)})
    settings = {
        "steps": STEPS, "runs": RUNS, "instantmesh_seed": INSTANTMESH_SEED, "scheduler": "EulerAncestral trailing",
        "latents": "as returned by Zero123PlusPipeline(output_type='latent'): unscale_latents(z)",
        "official": {"SUDO-AI-3D/zero123plus": _commit(official_root / "SUDO-AI-3D+zero123plus"),
                     "TencentARC/InstantMesh": _commit(official_root / "TencentARC+InstantMesh")},
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
    }
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(out_dir / OUTPUTS_FIXTURE),
              metadata={"settings": json.dumps(settings)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-root", type=Path, required=True,
                        help="folder holding the SUDO-AI-3D+zero123plus and TencentARC+InstantMesh checkouts")
    parser.add_argument("--out", type=Path, required=True, help="fixture folder (tests/fixtures/parity)")
    args = parser.parse_args(argv)
    make(args.official_root, args.out)
    for name in (REPO_FIXTURE, OUTPUTS_FIXTURE):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
