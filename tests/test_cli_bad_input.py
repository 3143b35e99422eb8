"""A scripted newcomer walk over every command line (issue 13, "First run and bad input"): each
flag of sharpit-generate, sharpit-edit, sharpit-encode, sharpit-evaluate, sharpit-prepare-pairs,
sharpit-precompute-latents and sharpit-train gets one bad value at a time, with every other
argument valid and cheap (``--tiny`` models, tiny training inputs), and must fail

* with exit code 2 (3 for missing weights; argparse's own usage errors are 2 as well),
* without a traceback,
* with ONE line (argparse's usage block and, for exit 3, the "add --tiny" hint aside) that names
  the flag, in the user's words (a path that exists is never "not found"),
* fast, and before any model is loaded: the model loaders are wrapped so that a run which gets as
  far as a successful model load stops there and counts as a late error (with real weights that
  load costs minutes).

Most cases call each module's ``main(argv)`` in-process (milliseconds each); a handful run the
installed console scripts from a fresh folder, to show that nothing else reaches the terminal.
Every case passes (there are no expected failures); a regression shows as a failure naming the
command, the flag and the value.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

BIN = Path(sys.executable).parent
#: In-process wall-time limit of a bad value for the inference commands (the README: "well under a second").
INFERENCE_LIMIT_S = 5.0
#: The same for the training commands: a bad value caught before any model loads costs at most
#: ~0.1 s in-process here (creating accelerate's Accelerator included); the limit leaves room for a
#: loaded 2-core machine.
TRAINING_LIMIT_S = 3.0
#: A training console script run from a fresh folder: interpreter start and imports (torch,
#: diffusers) included, 5-32 s measured on a busy 2-core machine (see test_bad_flag_needs_no_heavy_imports).
SUBPROCESS_LIMIT_S = 45.0


class ModelsLoaded(BaseException):
    """Raised right after a model loader returned: the bad value was not reported before loading."""


# --------------------------------------------------------------------------------------------------
# the inputs a newcomer would have: valid tiny ones, and the usual wrong things


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Dict[str, str]:
    import torch

    from sharpit.coarse import save_latents
    from sharpit.mesh_io import save_mesh
    from sharpit.testing.meshes import colored_cube
    from sharpit.testing.pipeline import save_tiny_models
    from sharpit.testing.shap_e import TINY_SHAP_E_LATENT_WIDTH
    from sharpit.testing.shap_e_encoder import save_tiny_shap_e_encoder
    from sharpit.testing.training import save_tiny_training_inputs
    from training.prepare_pairs import prepare_pairs

    root = tmp_path_factory.mktemp("newcomer")
    tiny = save_tiny_training_inputs(root / "tiny")
    prepare_pairs(tiny["assets"], tiny["captions"], tiny["latents"], root / "pairs", str(tiny["shap_e"]),
                  tile_size=32, shap_e_grid_size=24)
    models = save_tiny_models(root / "cache" / "tiny-models")  # also what --tiny loads (SHARPIT_CACHE)
    save_tiny_shap_e_encoder(root / "encoder")
    save_mesh(colored_cube(), root / "cube.obj")
    save_mesh(colored_cube(), root / "cube.glb")
    save_latents(root / "cube.safetensors", torch.randn(1, TINY_SHAP_E_LATENT_WIDTH))
    (root / "plain.txt").write_text("just text\n")
    (root / "hollow").mkdir()
    (root / "stuffed").mkdir()
    (root / "stuffed" / "keep.txt").write_text("x")
    (root / "blob.bin").write_bytes(b"\xff\xfe\x00\x81 not utf-8 \xc3\x28\n")
    (root / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage, not a binary glTF")
    (root / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (root / "blank.txt").write_text("\n# only a comment\n\n")
    (root / "no_id_column.csv").write_text("name,caption\ncube,a red cube\n")
    (root / "bad.yaml").write_text("learning_rate: [1e-5\nmax_train_steps: 3\n")
    (root / "typo.yaml").write_text("learning_rat: 1.0e-5\n")
    (root / "wrongtype.yaml").write_text("max_train_steps: many\n")
    paths = {"root": root, "missing": root / "nowhere" / "gone", "file": root / "plain.txt",
             "emptydir": root / "hollow", "fulldir": root / "stuffed", "binary": root / "blob.bin",
             "below_file": root / "plain.txt" / "sub", "asset": root / "cube.obj", "glb": root / "cube.glb",
             "latent": root / "cube.safetensors", "broken_glb": root / "broken.glb",
             "broken_latent": root / "broken.safetensors",
             "blank": root / "blank.txt", "no_id_csv": root / "no_id_column.csv", "bad_yaml": root / "bad.yaml",
             "typo_yaml": root / "typo.yaml", "wrongtype_yaml": root / "wrongtype.yaml",
             "assets_dir": tiny["assets"], "captions_csv": tiny["captions"], "latents_dir": tiny["latents"],
             "tiny_shap_e": tiny["shap_e"], "tiny_z123": tiny["pretrained_model"], "pairs_dir": root / "pairs",
             "tiny_encoder": root / "encoder",
             "cache": root / "cache", "proc": "/proc/sharpit-newcomer-walk"}
    paths.update({f"m_{k}": v for k, v in models.items()})
    # warm the lazily imported libraries, so that timings measure the commands, not first imports
    import accelerate  # noqa: F401
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import UNet2DConditionModel  # noqa: F401

    import sharpit.coarse  # noqa: F401
    import sharpit.options  # noqa: F401
    return {k: str(v) for k, v in paths.items()}


# --------------------------------------------------------------------------------------------------
# the commands


def _inference_loader(monkeypatch, stop):
    from inference import common

    monkeypatch.setattr(common, "load_pipeline", stop(common.load_pipeline))


def _prepare_loader(monkeypatch, stop):
    from sharpit.coarse import ShapEEncoder, ShapEGenerator

    monkeypatch.setattr(ShapEGenerator, "from_pretrained", staticmethod(stop(ShapEGenerator.from_pretrained)))
    monkeypatch.setattr(ShapEEncoder, "from_pretrained", staticmethod(stop(ShapEEncoder.from_pretrained)))


def _encode_loader(monkeypatch, stop):
    from sharpit.coarse import ShapEEncoder
    from sharpit.testing import shap_e_encoder

    monkeypatch.setattr(ShapEEncoder, "from_pretrained", staticmethod(stop(ShapEEncoder.from_pretrained)))
    monkeypatch.setattr(shap_e_encoder, "tiny_shap_e_encoder", stop(shap_e_encoder.tiny_shap_e_encoder))


def _precompute_loader(monkeypatch, stop):
    from training import precompute_latents

    monkeypatch.setattr(precompute_latents, "load_frozen_encoders", stop(precompute_latents.load_frozen_encoders))


def _train_loader(monkeypatch, stop):
    from training import train_sharpit

    monkeypatch.setattr(train_sharpit, "load_training_pipeline", stop(train_sharpit.load_training_pipeline))


def _main(module: str) -> Callable[[List[str]], int]:
    import importlib

    return importlib.import_module(module).main


@dataclass(frozen=True)
class Command:
    script: str
    module: str
    base: Tuple[str, ...]
    limit_s: float
    patch_loader: Callable
    parser: Callable[[], argparse.ArgumentParser]


def _parser_of(module: str) -> Callable[[], argparse.ArgumentParser]:
    """The command's own ``build_parser``, imported when first called."""
    def build() -> argparse.ArgumentParser:
        return importlib.import_module(module).build_parser()

    return build


def _train_parser():
    from training.config import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser


COMMANDS = {
    "generate": Command("sharpit-generate", "inference.generate",
                        ("--prompt", "a red chair", "--out", "{out}", "--tiny"),
                        INFERENCE_LIMIT_S, _inference_loader, _parser_of("inference.generate")),
    "edit": Command("sharpit-edit", "inference.edit",
                    ("--asset", "{asset}", "--prompt", "a golden chair", "--out", "{out}", "--tiny"),
                    INFERENCE_LIMIT_S, _inference_loader, _parser_of("inference.edit")),
    "encode": Command("sharpit-encode", "inference.encode",
                      ("--asset", "{asset}", "--out", "{out}.safetensors", "--tiny"),
                      INFERENCE_LIMIT_S, _encode_loader, _parser_of("inference.encode")),
    "evaluate": Command("sharpit-evaluate", "inference.evaluate",
                        ("--tiny", "--methods", "shap_e", "--device", "cpu", "--out", "{out}"),
                        INFERENCE_LIMIT_S, _inference_loader, _parser_of("inference.evaluate")),
    "prepare": Command("sharpit-prepare-pairs", "training.prepare_pairs",
                       ("--assets", "{assets_dir}", "--captions", "{captions_csv}", "--latents", "{latents_dir}",
                        "--shap_e", "{tiny_shap_e}", "--output", "{out}", "--tile_size", "32",
                        "--shap_e_grid_size", "24"),
                       TRAINING_LIMIT_S, _prepare_loader, _parser_of("training.prepare_pairs")),
    "precompute": Command("sharpit-precompute-latents", "training.precompute_latents",
                          ("--pairs", "{pairs_dir}", "--pretrained", "{tiny_z123}", "--output", "{out}",
                           "--batch_size", "2"),
                          TRAINING_LIMIT_S, _precompute_loader, _parser_of("training.precompute_latents")),
    "train": Command("sharpit-train", "training.train_sharpit",
                     ("--pretrained_model", "{tiny_z123}", "--train_data", "{pairs_dir}", "--output_dir", "{out}",
                      "--max_train_steps", "1", "--train_batch_size", "2", "--checkpointing_steps", "2",
                      "--validation_steps", "1000", "--num_validation_samples", "0",
                      "--dataloader_num_workers", "0", "--report_to", "none"),
                     TRAINING_LIMIT_S, _train_loader, _train_parser),
}

#: Local tiny models for every model flag, for the inference cases that test a model flag (no --tiny).
LOCAL_MODELS = ("--shap-e", "{m_shap_e}", "--zero123plus", "{m_zero123plus}", "--sharpit-unet", "{m_sharpit_unet}",
                "--instantmesh", "{m_instantmesh}")


# --------------------------------------------------------------------------------------------------
# the cases: (command, flag, bad arguments); each is its own test id


@dataclass(frozen=True)
class Case:
    cmd: str
    flag: str
    bad: Tuple[str, ...]              # the tokens that replace the flag (and its value) in the base command
    what: str                         # the test id's tail
    code: int = 2
    drop: Tuple[str, ...] = ()        # base flags removed (e.g. --prompt for --prompts, --tiny for model flags)
    extra: Tuple[str, ...] = ()       # valid flags added (e.g. local model folders)
    needles: Tuple[str, ...] = ()     # words the error line must hold (case-insensitive)
    names: Tuple[str, ...] = ()       # other words that name the culprit (a config file's key)

    @property
    def id(self) -> str:
        return f"{self.cmd}{self.flag}-{self.what}"


def _c(cmd, flag, value, what, **kw) -> Case:
    """``value``: a list of tokens after the flag; "=x" for ``--flag=x``; None for the flag without a value."""
    if value is None:
        bad = (flag,)
    elif isinstance(value, str) and value.startswith("="):
        bad = (flag + value,)
    else:
        bad = (flag, *([value] if isinstance(value, str) else value))
    return Case(cmd, flag, bad, what, **kw)


# what "path exists but is the wrong kind" must not be called
EXISTS = ("not found", "no such")


def _inference_cases(cmd: str) -> List[Case]:
    tiny_off = dict(drop=("--tiny",), extra=LOCAL_MODELS)
    cases = [
        _c(cmd, "--prompt", "", "empty", needles=("empty",)),
        _c(cmd, "--prompt", "   ", "blank", needles=("empty",)),
        _c(cmd, "--prompts", "{missing}", "missing", drop=("--prompt",)),
        _c(cmd, "--prompts", "{emptydir}", "folder", drop=("--prompt",)),
        _c(cmd, "--prompts", "{blank}", "no-prompts", drop=("--prompt",), needles=("no prompts",)),
        _c(cmd, "--prompts", "{binary}", "not-utf8", drop=("--prompt",), needles=("utf-8",)),
        _c(cmd, "--out", "{file}", "is-a-file"),
        _c(cmd, "--out", "{below_file}", "below-a-file"),
        _c(cmd, "--out", "{fulldir}", "not-empty", needles=("--overwrite",)),
        _c(cmd, "--out", "{proc}", "not-writable"),
        _c(cmd, "--out", "", "empty", needles=("empty",)),
        _c(cmd, "--seed", "-1", "negative"),
        _c(cmd, "--seed", "1.5", "not-int"),
        _c(cmd, "--overwrite", "=yes", "with-value"),
        _c(cmd, "--tiny", "=yes", "with-value"),
        _c(cmd, "--textured", "=yes", "with-value"),
        _c(cmd, "--offload", "=yes", "with-value"),
        _c(cmd, "--negative-prompt", None, "no-value"),
        _c(cmd, "--refine-steps", "0", "zero"),
        _c(cmd, "--refine-steps", "many", "not-int"),
        _c(cmd, "--guidance-scale", "-1", "negative"),
        _c(cmd, "--guidance-scale", "inf", "inf"),
        _c(cmd, "--strength", "0", "zero"),
        _c(cmd, "--strength", "1.5", "above-one"),
        _c(cmd, "--coarse-grid-size", "4", "too-small"),
        _c(cmd, "--coarse-render-mode", "voxels", "unknown"),
        _c(cmd, "--coarse-supersample", "0", "zero"),
        _c(cmd, "--mesh-resolution", "0", "zero"),
        _c(cmd, "--texture-size", "8", "too-small"),
        _c(cmd, "--face-budget", "0", "zero"),
        _c(cmd, "--uv-layout", "smart", "unknown"),
        _c(cmd, "--texture-source", "both", "unknown"),
        _c(cmd, "--instantmesh-variant", "huge", "unknown"),
        _c(cmd, "--dtype", "fp8", "unknown"),
        _c(cmd, "--optimize-steps", "-1", "negative"),
        _c(cmd, "--optimize-steps", "two", "not-int"),
        # model flags: without --tiny, the other models are valid local tiny folders
        _c(cmd, "--pipeline", "{missing}", "missing", drop=("--tiny",)),
        _c(cmd, "--pipeline", "{file}", "a-file", drop=("--tiny",)),
        _c(cmd, "--pipeline", "{emptydir}", "empty-folder", drop=("--tiny",)),
        _c(cmd, "--pipeline", "nobody/no-such-pipeline", "hub-offline", code=3, drop=("--tiny",)),
        _c(cmd, "--pipeline", "{missing}", "missing-with-tiny"),
        _c(cmd, "--zero123plus", "{missing}", "missing", **tiny_off),
        _c(cmd, "--zero123plus", "{emptydir}", "empty-folder", **tiny_off),
        _c(cmd, "--sharpit-unet", "{missing}", "missing", **tiny_off),
        _c(cmd, "--sharpit-unet", "{file}", "a-file", **tiny_off),
        _c(cmd, "--refiner", "{missing}", "missing", **tiny_off),
        _c(cmd, "--refiner", "{emptydir}", "empty-folder", **tiny_off),
        _c(cmd, "--instantmesh", "{missing}", "missing", **tiny_off),
        _c(cmd, "--instantmesh", "{file}", "a-file", **tiny_off),
        _c(cmd, "--instantmesh", "nobody/no-such-reconstructor", "hub-offline", code=3, **tiny_off),
    ]
    if cmd == "generate":
        cases += [
            _c(cmd, "--coarse-steps", "0", "zero"),
            _c(cmd, "--coarse-steps", "ten", "not-int"),
            _c(cmd, "--coarse-guidance-scale", "-1", "negative"),
            _c(cmd, "--coarse-guidance-scale", "nan", "nan"),
            _c(cmd, "--shap-e", "{missing}", "missing", **tiny_off),
            _c(cmd, "--shap-e", "{file}", "a-file", **tiny_off),
        ]
    else:
        latent = dict(drop=("--tiny", "--asset"), extra=LOCAL_MODELS + ("--asset", "{latent}"))
        cases += [
            _c(cmd, "--asset", "{missing}", "missing"),
            _c(cmd, "--asset", "{emptydir}", "folder", needles=("folder",)),
            _c(cmd, "--asset", "", "empty", needles=("empty",)),
            _c(cmd, "--asset", "{file}", "unsupported-format"),
            _c(cmd, "--asset", "{broken_glb}", "corrupt-glb"),
            _c(cmd, "--asset", "{broken_latent}", "corrupt-latent"),
            _c(cmd, "--up-axis", "x", "unknown"),
            _c(cmd, "--up-axis", "z", "z-for-gltf", drop=("--asset",), extra=("--asset", "{glb}")),
            _c(cmd, "--coarse-render-mode", "nerf", "nerf-for-mesh", needles=("mesh",), extra=("--via", "render")),
            _c(cmd, "--via", "voxels", "unknown"),
            _c(cmd, "--via", "render", "render-for-latent", drop=("--asset",), extra=("--asset", "{latent}")),
            _c(cmd, "--via", "latent", "latent-without-encoder", needles=("--encoder",), **tiny_off),
            _c(cmd, "--encoder", "{tiny_encoder}", "for-a-latent-asset", needles=("latent",), drop=("--tiny", "--asset"),
               extra=LOCAL_MODELS + ("--asset", "{latent}")),
            _c(cmd, "--encoder", "{tiny_encoder}", "with-via-render", needles=("--via render",),
               extra=LOCAL_MODELS + ("--via", "render"), drop=("--tiny",)),
            _c(cmd, "--source-prompt", "  ", "blank", needles=("empty",)),
            _c(cmd, "--source-prompt", "a chair", "with-via-render", extra=("--via", "render")),
            _c(cmd, "--latent-strength", "1.5", "above-one"),
            _c(cmd, "--latent-strength", "-0.1", "negative"),
            _c(cmd, "--inversion-steps", "0", "zero"),
            _c(cmd, "--latent-guidance-scale", "-1", "negative"),
            *(_c(cmd, flag, value, "without-source-prompt", needles=("--source-prompt",))
              for flag, value in (("--latent-strength", "0.5"), ("--inversion-steps", "8"),
                                  ("--latent-guidance-scale", "3"))),
            _c(cmd, "--encoder", "{missing}", "missing", **tiny_off),
            _c(cmd, "--encoder", "{emptydir}", "empty-folder", **tiny_off),
            _c(cmd, "--encoder", "{file}", "a-file", **tiny_off),
            _c(cmd, "--encoder", "nobody/no-such-encoder", "hub-offline", code=3, **tiny_off),
            _c(cmd, "--encoder", "{emptydir}", "with-tiny", needles=("--tiny",)),
            _c(cmd, "--shap-e", "{missing}", "missing-for-latent", **latent),
            _c(cmd, "--shap-e", "{file}", "a-file-for-latent", **latent),
        ]
    return cases


def _evaluate_cases() -> List[Case]:
    """``python -m inference.evaluate`` (sharpit-evaluate); tests/test_evaluation_cli.py has more
    (the output folder of another configuration, captions missing for an asset)."""
    cmd = "evaluate"
    # without --tiny: local tiny models and the tiny training inputs as the test set
    real = dict(drop=("--tiny",), extra=LOCAL_MODELS + ("--assets", "{assets_dir}", "--latents", "{latents_dir}",
                                                        "--captions", "{captions_csv}"))

    def only(metric):
        return dict(real, extra=real["extra"] + ("--metrics", metric))

    return [
        _c(cmd, "--assets", "{missing}", "missing"),
        _c(cmd, "--assets", "{emptydir}", "no-meshes"),
        _c(cmd, "--assets", "{blank}", "list-without-meshes"),
        _c(cmd, "--assets", "{binary}", "list-not-utf8", needles=("utf-8",)),
        _c(cmd, "--assets", "", "empty", needles=("empty",)),
        _c(cmd, "--latents", "{missing}", "missing"),
        _c(cmd, "--latents", "{file}", "a-file"),
        _c(cmd, "--latents", "{emptydir}", "no-latents"),
        _c(cmd, "--captions", "{missing}", "missing"),
        _c(cmd, "--captions", "{emptydir}", "folder"),
        _c(cmd, "--captions", "{binary}", "not-utf8"),
        _c(cmd, "--captions", "{no_id_csv}", "no-id-column"),
        _c(cmd, "--methods", "", "empty", needles=("empty",)),
        _c(cmd, "--methods", "shap_e,dreamfusion", "unknown", needles=("dreamfusion",)),
        _c(cmd, "--methods", "folder:{emptydir}", "not-a-pipeline-folder", needles=("model_index.json",)),
        _c(cmd, "--methods", "sharpit,sharpit", "twice", needles=("twice",)),
        _c(cmd, "--metrics", "", "empty", needles=("empty",)),
        _c(cmd, "--metrics", "clip,inception", "unknown", needles=("inception",)),
        _c(cmd, "--out", "{file}", "is-a-file"),
        _c(cmd, "--out", "{fulldir}", "not-a-run-folder", needles=("config.json",)),
        _c(cmd, "--out", "{proc}", "not-writable"),
        _c(cmd, "--out", "", "empty", needles=("empty",)),
        _c(cmd, "--seed", "-1", "negative"),
        _c(cmd, "--seed", "1.5", "not-int"),
        _c(cmd, "--limit", "0", "zero"),
        _c(cmd, "--limit", "all", "not-int"),
        _c(cmd, "--device", "tpu", "unknown"),
        _c(cmd, "--device", "cuda", "no-gpu-here"),
        _c(cmd, "--tiny", "=yes", "with-value"),
        _c(cmd, "--sdedit-strength", "1", "one"),
        _c(cmd, "--sdedit-strength", "nan", "nan"),
        _c(cmd, "--points", "10", "too-few"),
        # extractor weights: a given path that does not exist or is the wrong kind (2); nothing
        # here and the hub offline (3, naming the flag that takes a local path)
        _c(cmd, "--inception-weights", "{missing}", "missing", **only("fid")),
        _c(cmd, "--inception-weights", "{emptydir}", "a-folder", **only("fid")),
        _c(cmd, "--inception-weights", "{file}", "with-tiny", needles=("--tiny",)),
        _c(cmd, "--clip", "{missing}", "missing", **only("clip")),
        _c(cmd, "--clip", "{emptydir}", "empty-folder", **only("clip")),
        _c(cmd, "--clip", "nobody/no-such-clip", "hub-offline", code=3, **only("clip")),
        _c(cmd, "--dino", "{file}", "a-file", **only("dino")),
        _c(cmd, "--dino", "nobody/no-such-dino", "hub-offline", code=3, **only("dino")),
        _c(cmd, "--lpips-net", "squeeze", "unknown"),
        _c(cmd, "--lpips-net", "vgg", "with-tiny", needles=("--tiny",)),
        _c(cmd, "--lpips-weights", "{missing}", "missing", **only("lpips")),
        _c(cmd, "--lpips-weights", "{file}", "a-file", **only("lpips")),
        # model flags
        _c(cmd, "--pipeline", "{missing}", "missing", **real),
        _c(cmd, "--pipeline", "nobody/no-such-pipeline", "hub-offline", code=3, **real),
        _c(cmd, "--shap-e", "{missing}", "missing", **real),
        _c(cmd, "--zero123plus", "{emptydir}", "empty-folder", **real),
        _c(cmd, "--sharpit-unet", "{file}", "a-file", **real),
        _c(cmd, "--refiner", "{missing}", "missing", **real),
        _c(cmd, "--instantmesh", "{file}", "a-file", **real),
        _c(cmd, "--instantmesh", "nobody/no-such-reconstructor", "hub-offline", code=3, **real),
        _c(cmd, "--instantmesh-variant", "huge", "unknown"),
        _c(cmd, "--dtype", "fp8", "unknown"),
        _c(cmd, "--offload", "=yes", "with-value"),
    ]


def _prepare_cases() -> List[Case]:
    cmd = "prepare"
    encode = ("--coarse", "encode", "--encoder", "{tiny_encoder}")
    return [
        _c(cmd, "--assets", "{missing}", "missing"),
        _c(cmd, "--assets", "{file}", "a-file"),
        _c(cmd, "--assets", "{emptydir}", "no-assets"),
        _c(cmd, "--captions", "{missing}", "missing"),
        _c(cmd, "--captions", "{emptydir}", "folder"),
        _c(cmd, "--captions", "{binary}", "not-utf8"),
        _c(cmd, "--captions", "{no_id_csv}", "no-id-column"),
        _c(cmd, "--latents", "{missing}", "missing"),
        _c(cmd, "--latents", "{file}", "a-file"),
        _c(cmd, "--latents", "{emptydir}", "no-latents"),
        _c(cmd, "--output", "{file}", "a-file"),
        _c(cmd, "--output", "{proc}", "not-writable"),
        _c(cmd, "--shap_e", "{missing}", "missing"),
        _c(cmd, "--shap_e", "{file}", "a-file"),
        _c(cmd, "--shap_e", "nobody/no-such-shap-e", "hub-offline", code=3),
        _c(cmd, "--renderer", "povray", "unknown"),
        _c(cmd, "--shading", "flat", "unknown"),
        # a flag of the other renderer is refused (naming the conflict), not silently ignored; with
        # --renderer blender its value is checked before bpy is imported or Shap-E loads
        _c(cmd, "--shading", "unlit", "with-blender", extra=("--renderer", "blender"), needles=("--renderer",)),
        _c(cmd, "--lightings", None, "no-value"),
        _c(cmd, "--lightings", "moonlight", "unknown-preset", needles=("--renderer",)),
        _c(cmd, "--lightings", "moonlight", "unknown-preset-for-blender", extra=("--renderer", "blender"),
           needles=("moonlight",)),
        _c(cmd, "--blender_samples", "lots", "not-int"),
        _c(cmd, "--blender_samples", "0", "zero", needles=("--renderer",)),
        _c(cmd, "--blender_samples", "0", "zero-for-blender", extra=("--renderer", "blender"), needles=(">= 1",)),
        _c(cmd, "--tile_size", "12", "not-multiple-of-8"),
        _c(cmd, "--tile_size", "big", "not-int"),
        _c(cmd, "--coarse_mode", "voxels", "unknown"),
        _c(cmd, "--coarse_supersample", "0", "zero"),
        _c(cmd, "--shap_e_grid_size", "0", "zero"),
        _c(cmd, "--samples_per_shard", "0", "zero"),
        _c(cmd, "--limit", "-1", "negative"),
        _c(cmd, "--device", "gpu0", "unknown"),
        _c(cmd, "--device", "cuda", "no-gpu-here"),
        # --coarse encode: the encoder instead of --latents
        _c(cmd, "--coarse", "cap3d", "unknown"),
        _c(cmd, "--coarse", "encode", "encode-without-encoder", drop=("--latents",), needles=("--encoder",)),
        _c(cmd, "--latents", "{latents_dir}", "with-coarse-encode", extra=encode, needles=("--coarse",)),
        Case(cmd, "--latents", (), "left-out", needles=("required",)),   # the flag absent
        _c(cmd, "--encoder", "{tiny_encoder}", "without-coarse-encode", needles=("--coarse",)),
        _c(cmd, "--encoder", "{missing}", "missing", drop=("--latents",), extra=("--coarse", "encode")),
        _c(cmd, "--encoder", "{file}", "a-file", drop=("--latents",), extra=("--coarse", "encode")),
        _c(cmd, "--encoder", "{emptydir}", "empty-folder", drop=("--latents",), extra=("--coarse", "encode"),
           needles=("transmitter.pt",)),
        _c(cmd, "--encoder", "{tiny_shap_e}", "a-shap-e-folder", drop=("--latents",), extra=("--coarse", "encode")),
        _c(cmd, "--encoder", "nobody/no-such-encoder", "hub-offline", code=3, drop=("--latents",),
           extra=("--coarse", "encode")),
        _c(cmd, "--seed", "-1", "negative", drop=("--latents",), extra=encode),
        _c(cmd, "--seed", "one", "not-int", drop=("--latents",), extra=encode),
        _c(cmd, "--seed", "1", "without-coarse-encode", needles=("--coarse",)),
    ]


def _encode_cases() -> List[Case]:
    """``python -m inference.encode`` (sharpit-encode): a mesh file -> a latent file."""
    cmd = "encode"
    local = dict(drop=("--tiny",), extra=("--encoder", "{tiny_encoder}"))
    return [
        _c(cmd, "--asset", "{missing}", "missing"),
        _c(cmd, "--asset", "{emptydir}", "folder"),
        _c(cmd, "--asset", "", "empty"),
        _c(cmd, "--asset", "{file}", "unsupported-format"),
        _c(cmd, "--asset", "{latent}", "a-latent-file"),
        _c(cmd, "--asset", "{broken_glb}", "corrupt-glb"),
        _c(cmd, "--out", "{file}", "not-safetensors", needles=(".safetensors",)),
        _c(cmd, "--out", "{latent}", "exists", needles=("--overwrite",)),
        _c(cmd, "--out", "{missing}.safetensors", "folder-missing"),
        _c(cmd, "--out", "{below_file}.safetensors", "below-a-file"),
        _c(cmd, "--out", "/proc/sharpit-walk.safetensors", "not-writable"),
        _c(cmd, "--out", "", "empty"),
        Case(cmd, "--encoder", (), "left-out", code=3, drop=("--tiny",)),   # no --encoder, no --tiny
        _c(cmd, "--encoder", "{missing}", "missing", drop=("--tiny",)),
        _c(cmd, "--encoder", "{file}", "a-file", drop=("--tiny",)),
        _c(cmd, "--encoder", "{emptydir}", "empty-folder", drop=("--tiny",)),
        _c(cmd, "--encoder", "nobody/no-such-encoder", "hub-offline", code=3, drop=("--tiny",)),
        _c(cmd, "--encoder", "{tiny_encoder}", "with-tiny", needles=("--tiny",)),
        _c(cmd, "--shap-e", "{missing}", "missing", **local),
        _c(cmd, "--shap-e", "{file}", "a-file", **local),
        _c(cmd, "--up-axis", "x", "unknown"),
        _c(cmd, "--up-axis", "z", "z-for-gltf", drop=("--asset",), extra=("--asset", "{glb}")),
        _c(cmd, "--seed", "-1", "negative"),
        _c(cmd, "--seed", "1.5", "not-int"),
        _c(cmd, "--device", "gpu0", "unknown"),
        _c(cmd, "--device", "cuda", "no-gpu-here"),
        _c(cmd, "--tiny", "=yes", "with-value"),
        _c(cmd, "--overwrite", "=yes", "with-value"),
    ]


def _precompute_cases() -> List[Case]:
    cmd = "precompute"
    return [
        _c(cmd, "--pairs", "{missing}", "missing"),
        _c(cmd, "--pairs", "{file}", "a-file"),
        _c(cmd, "--pairs", "{emptydir}", "no-pairs"),
        _c(cmd, "--pretrained", "{missing}", "missing"),
        _c(cmd, "--pretrained", "{file}", "a-file"),
        _c(cmd, "--pretrained", "{emptydir}", "empty-folder"),
        _c(cmd, "--pretrained", "nobody/no-such-zero123plus", "hub-offline", code=3),
        _c(cmd, "--output", "{file}", "a-file"),
        _c(cmd, "--output", "{proc}", "not-writable"),
        _c(cmd, "--batch_size", "0", "zero"),
        _c(cmd, "--batch_size", "two", "not-int"),
        _c(cmd, "--device", "gpu0", "unknown"),
        _c(cmd, "--device", "cuda", "no-gpu-here"),
        _c(cmd, "--overwrite", "=yes", "with-value"),
    ]


def _train_cases() -> List[Case]:
    cmd = "train"
    tb = dict(drop=("--report_to",), extra=("--report_to", "tensorboard"))
    return [
        _c(cmd, "--config", "{missing}", "missing"),
        _c(cmd, "--config", "{bad_yaml}", "unparsable"),
        _c(cmd, "--config", "{typo_yaml}", "unknown-key", names=("learning_rat",), needles=("learning_rate",)),
        _c(cmd, "--config", "{wrongtype_yaml}", "wrong-type", names=("max_train_steps",), needles=("many",)),
        _c(cmd, "--pretrained_model", "{missing}", "missing"),
        _c(cmd, "--pretrained_model", "{file}", "a-file"),
        _c(cmd, "--pretrained_model", "{emptydir}", "empty-folder"),
        _c(cmd, "--pretrained_model", "nobody/no-such-zero123plus", "hub-offline", code=3),
        _c(cmd, "--init_from", "scratch", "unknown"),
        _c(cmd, "--init_from", "sharpit", "not-a-sharpit-folder"),
        _c(cmd, "--conditioning_mode", "crossattn", "unknown"),
        _c(cmd, "--null_condition", "purple", "unknown"),
        _c(cmd, "--condition_latent_space", "pixel", "unknown"),
        _c(cmd, "--train_data", "{missing}", "missing"),
        _c(cmd, "--train_data", "{file}", "a-file"),
        _c(cmd, "--train_data", "{emptydir}", "no-pairs"),
        _c(cmd, "--train_data", "", "empty"),
        _c(cmd, "--validation_data", "{missing}", "missing"),
        _c(cmd, "--precomputed_latents", "{missing}", "missing"),
        _c(cmd, "--tile_size", "12", "not-multiple-of-8"),
        _c(cmd, "--tile_size", "16", "not-the-datasets"),
        _c(cmd, "--dataloader_num_workers", "-1", "negative"),
        _c(cmd, "--skip_corrupt_shards", "=yes", "with-value"),
        _c(cmd, "--output_dir", "{file}", "a-file"),
        _c(cmd, "--output_dir", "{proc}", "not-writable"),
        _c(cmd, "--output_dir", "", "empty"),
        _c(cmd, "--overwrite_output_dir", "=yes", "with-value"),
        _c(cmd, "--seed", "zero", "not-int"),
        _c(cmd, "--train_batch_size", "0", "zero"),
        _c(cmd, "--train_batch_size", "two", "not-int"),
        _c(cmd, "--train_batch_size", "4", "above-dataset"),
        _c(cmd, "--gradient_accumulation_steps", "0", "zero"),
        _c(cmd, "--max_train_steps", "0", "zero"),
        _c(cmd, "--learning_rate", "0", "zero"),
        _c(cmd, "--learning_rate", "fast", "not-float"),
        _c(cmd, "--learning_rate", "nan", "nan"),
        _c(cmd, "--lr_scheduler", "step", "unknown"),
        _c(cmd, "--lr_warmup_steps", "-1", "negative"),
        _c(cmd, "--adam_beta1", "1.5", "above-one"),
        _c(cmd, "--adam_beta2", "-0.1", "negative"),
        _c(cmd, "--adam_weight_decay", "-1", "negative"),
        _c(cmd, "--adam_epsilon", "-1", "negative"),
        _c(cmd, "--use_8bit_adam", "=yes", "with-value"),
        _c(cmd, "--use_8bit_adam", (), "without-bitsandbytes"),
        _c(cmd, "--max_grad_norm", "0", "zero"),
        _c(cmd, "--cfg_drop", "1.5", "above-one"),
        _c(cmd, "--use_ema", "=yes", "with-value"),
        _c(cmd, "--ema_decay", "1", "one"),
        _c(cmd, "--gradient_checkpointing", "=yes", "with-value"),
        _c(cmd, "--mixed_precision", "fp8", "unknown"),
        _c(cmd, "--attention", "flash", "unknown"),
        _c(cmd, "--attention", "xformers", "xformers-without-gpu"),
        _c(cmd, "--allow_tf32", "=yes", "with-value"),
        _c(cmd, "--checkpointing_steps", "0", "zero"),
        _c(cmd, "--checkpoints_total_limit", "0", "zero"),
        _c(cmd, "--resume_from_checkpoint", "{missing}", "missing"),
        _c(cmd, "--allow_reshape", "=yes", "with-value"),
        _c(cmd, "--validation_steps", "0", "zero"),
        _c(cmd, "--num_validation_samples", "-1", "negative"),
        _c(cmd, "--validation_inference_steps", "0", "zero"),
        _c(cmd, "--validation_guidance_scale", "high", "not-float"),
        _c(cmd, "--logging_dir", "{file}", "a-file-with-tensorboard", **tb),
        _c(cmd, "--report_to", "wandb", "unknown"),
    ]


CASES: List[Case] = (_inference_cases("generate") + _inference_cases("edit") + _encode_cases() + _evaluate_cases()
                     + _prepare_cases() + _precompute_cases() + _train_cases())


def _params():
    for case in CASES:
        yield pytest.param(case, id=case.id)


# --------------------------------------------------------------------------------------------------
# running and judging one case


def _argv(case: Case, paths: Dict[str, str]) -> List[str]:
    base = list(COMMANDS[case.cmd].base)
    for flag in (case.flag, *case.drop):
        if flag in base:
            i = base.index(flag)
            takes_value = i + 1 < len(base) and not base[i + 1].startswith("--")
            del base[i: i + 1 + takes_value]
    # the flag without a value goes last, so that argparse sees it lacking one
    return [arg.format_map(paths) for arg in (*base, *case.extra, *case.bad)]


def _value(case: Case, paths: Dict[str, str]) -> Optional[str]:
    """The bad value as given (None for a flag without one)."""
    return case.bad[1].format_map(paths) if len(case.bad) == 2 else None


def _error_lines(stderr: str) -> List[str]:
    """stderr without argparse's usage block (``usage: ...`` and its indented continuation lines)."""
    lines, in_usage = [], False
    for line in stderr.splitlines():
        if line.startswith("usage:"):
            in_usage = True
            continue
        if in_usage and line.startswith(" "):
            continue
        in_usage = False
        if line.strip():
            lines.append(line)
    return lines


def _names_flag(line: str, flag: str, paths: Sequence[str]) -> bool:
    """Whether ``line`` names ``flag`` (``--flag`` or the config key; dashes or underscores), not
    counting the paths of the walk (whose names could contain a flag's name)."""
    for path in sorted(paths, key=len, reverse=True):
        line = re.sub(re.escape(path) + r"[^\s:'\"),;]*", "<path>", line)
    name = flag.lstrip("-")
    variants = {name, name.replace("-", "_"), name.replace("_", "-")}
    return any(re.search(rf"(?:(?<![\w-])--{re.escape(v)}|(?<![\w/.-]){re.escape(v)})(?![\w-])", line)
               for v in variants)


def _judge(case: Case, code, stderr: str, seconds: float, limit: float, paths: Sequence[str],
           value: Optional[str]) -> None:
    shown = f"exit {code} after {seconds:.2f}s; stderr:\n{stderr}"
    assert code != "models loaded", f"late error: the bad value was not reported before a model loaded; {shown}"
    assert code == case.code, shown
    assert "Traceback" not in stderr, shown
    lines = _error_lines(stderr)
    if case.code == 3:  # the one-line reason, then how to try offline
        lines = [line for line in lines if "--tiny" not in line or "error" in line]
    assert len(lines) == 1, f"expected one error line; {shown}"
    assert any(_names_flag(lines[0], name, paths) for name in (case.flag, *case.names)), \
        f"the error does not name {case.flag}; {shown}"
    low = lines[0].lower()
    if value and os.path.exists(value):
        assert not any(word in low for word in EXISTS), f"calls an existing path missing; {shown}"
    for needle in case.needles:
        assert needle.lower() in low, f"the error lacks {needle!r}; {shown}"
    assert seconds < limit, f"slow: {shown}"


@pytest.mark.parametrize("case", list(_params()))
def test_bad_value_fails_fast_in_the_users_words(case: Case, inputs, tmp_path, monkeypatch, capsys):
    command = COMMANDS[case.cmd]
    paths = dict(inputs, out=str(tmp_path / "result-dir"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SHARPIT_CACHE", inputs["cache"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # every run starts as a fresh process would

    def stop(loader):
        def wrapper(*args, **kwargs):
            loaded = loader(*args, **kwargs)
            raise ModelsLoaded(loaded)
        return wrapper

    command.patch_loader(monkeypatch, stop)
    main = _main(command.module)
    argv = _argv(case, paths)
    value = _value(case, paths)
    uncaught = ""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        except ModelsLoaded:
            code = "models loaded"
        except Exception as exc:  # noqa: BLE001 - what a user would see as a traceback
            code = "uncaught exception"
            uncaught = "Traceback (most recent call last):\n  ...\n" + "".join(traceback.format_exception_only(exc))
    seconds = time.perf_counter() - start
    # the warnings Python's default filters print on a terminal (pytest would otherwise collect them)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught
                    if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                                                   ResourceWarning)))
    _judge(case, code, capsys.readouterr().err + shown + uncaught, seconds, command.limit_s,
           [inputs["root"], str(tmp_path), inputs["proc"]], value)


def test_every_flag_is_walked():
    """Each flag of each parser has at least one case (a new flag needs one here)."""
    for name, command in COMMANDS.items():
        flags = {opt for action in command.parser()._actions for opt in action.option_strings
                 if opt.startswith("--") and not opt.startswith("--no-") and opt != "--help"}
        walked = {case.flag for case in CASES if case.cmd == name}
        assert flags - walked == set(), f"{command.script}: flags without a bad-value case"
        assert walked - flags == set(), f"{command.script}: cases for flags the parser lacks"


# --------------------------------------------------------------------------------------------------
# the installed console scripts, from a fresh folder: what reaches the terminal

SCRIPT_CASES = [
    ("generate", ("--out", "{file}"), 2),
    ("generate", ("--strength", "2"), 2),
    ("generate", ("--pipeline", "nobody/no-such-pipeline"), 3),
    ("edit", ("--asset", "{missing}"), 2),
    ("prepare", ("--tile_size", "12"), 2),
    ("precompute", ("--batch_size", "0"), 2),
    ("train", ("--learning_rate", "0"), 2),
]


@pytest.mark.parametrize("cmd,bad,code", SCRIPT_CASES, ids=[f"{c}{b[0]}" for c, b, _ in SCRIPT_CASES])
def test_console_script_bad_value(cmd, bad, code, inputs, tmp_path):
    """What reaches the terminal: exit code, one line naming the flag, no traceback. The limit is
    the in-process one for the inference commands (they import no torch before the checks) and
    SUBPROCESS_LIMIT_S for the training ones (see test_bad_flag_needs_no_heavy_imports)."""
    command = COMMANDS[cmd]
    case = Case(cmd, bad[0], bad, "script", code=code, drop=("--tiny",) if code == 3 else ())
    paths = dict(inputs, out=str(tmp_path / "result-dir"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", SHARPIT_CACHE=inputs["cache"], OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / command.script), *_argv(case, paths)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - start
    limit = INFERENCE_LIMIT_S if cmd in ("generate", "edit") else SUBPROCESS_LIMIT_S
    _judge(case, proc.returncode, proc.stderr, seconds, limit, [inputs["root"], str(tmp_path), inputs["proc"]],
           _value(case, paths))


HEAVY = ("torch", "diffusers", "transformers", "accelerate")
@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_bad_flag_needs_no_heavy_imports(cmd):
    """An unknown flag is refused before torch and the model libraries are imported (importing
    them costs seconds: 4-32 s for the training scripts on a busy 2-core machine, against ~0.1 s
    for sharpit-generate)."""
    code = (f"import sys\nsys.argv = ['{COMMANDS[cmd].script}', '--no-such-flag']\n"
            f"import {COMMANDS[cmd].module} as m\ntry:\n    m.main()\nexcept SystemExit:\n    pass\n"
            f"print(','.join(k for k in {HEAVY!r} if k in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert ": error: " in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "", f"{COMMANDS[cmd].script} imported {proc.stdout.strip()} before refusing a flag"


@pytest.mark.parametrize("cmd, argv, message", [
    ("generate", ["--prompt", "a chair", "--out", "o", "--tiny", "--pipeline", "p"], "cannot be combined with --pipeline"),
    ("edit", ["--asset", "a.glb", "--prompt", "a chair", "--out", "o", "--tiny", "--encoder", "e"],
     "cannot be combined with --encoder"),
    ("edit", ["--asset", "a.glb", "--prompt", "a chair", "--out", "o", "--pipeline", "p", "--encoder", "e"],
     "--pipeline loads a saved pipeline as it is and cannot be combined with --encoder"),
])
def test_conflicting_model_flags_need_no_heavy_imports(cmd, argv, message):
    """Flags that cannot go together are refused right after parsing, before the asset is read
    or torch is imported (sharpit-edit --tiny --encoder took 3 s to say so)."""
    code = (f"import sys\nsys.argv = ['{COMMANDS[cmd].script}', *{argv!r}]\n"
            f"import {COMMANDS[cmd].module} as m\ncode = m.main()\n"
            f"print(code, ','.join(k for k in {HEAVY!r} if k in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "2", f"exit code and heavy imports: {proc.stdout.strip()}"
