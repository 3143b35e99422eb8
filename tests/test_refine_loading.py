"""Loading the refiner: from_zero123plus from tiny repos laid out like the real ones (Sharp-It and stock
Zero123++), offline errors."""

import json
import shutil

import pytest
import torch
from PIL import Image

from sharpit.errors import AssetNotFoundError, CheckpointError, InputError, WeightsNotFoundError
from sharpit.refine import SharpItRefinePipeline
from sharpit.testing.refine import save_tiny_sharp_it_unet_repo, save_tiny_zero123plus_repo


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return save_tiny_zero123plus_repo(root / "zero123plus-v1.2"), save_tiny_sharp_it_unet_repo(root / "Sharp-It")


def test_tiny_repos_have_the_real_layouts(repos):
    base, unet = repos
    index = json.loads((base / "model_index.json").read_text())
    assert index["_class_name"] == "Zero123PlusPipeline"
    for folder in ("vae", "text_encoder", "tokenizer", "scheduler", "unet", "vision_encoder",
                   "feature_extractor_clip", "feature_extractor_vae"):
        assert (base / folder).is_dir() and folder in index
    assert (unet / "config.json").is_file() and (unet / "diffusion_pytorch_model.safetensors").is_file()
    # the CLIP processor's crops fit the vision encoder (the official pipeline runs on this layout)
    clip = json.loads((base / "feature_extractor_clip" / "preprocessor_config.json").read_text())
    vision = json.loads((base / "vision_encoder" / "config.json").read_text())
    assert clip["crop_size"] == {"height": vision["image_size"], "width": vision["image_size"]}
    assert len(index["ramping_coefficients"]) == 77


def test_from_zero123plus_assembles_a_working_pipeline(repos, tmp_path):
    base, unet = repos
    pipe = SharpItRefinePipeline.from_zero123plus(base=base, unet=unet)
    pipe.set_progress_bar_config(disable=True)
    assert {k for k, v in pipe.components.items() if v is not None} == {"vae", "text_encoder", "tokenizer", "unet",
                                                                        "scheduler"}
    assert pipe.config.null_condition == "black" and pipe.config.ramping_coefficients is None
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.beta_schedule == "linear"
    assert pipe.conditioning_mode == "concat" and pipe.unet.config.in_channels == 8
    out = pipe(torch.rand(3, 960, 640), "a vase", num_inference_steps=1, output_type="pt", seed=0)
    assert out.images.shape == (1, 3, 960, 640) and out.views.shape == (1, 6, 3, 320, 320)
    # the assembled pipeline saves in our own layout and loads back through from_pretrained
    pipe.save_pretrained(tmp_path / "sharpit")
    assert not (tmp_path / "sharpit" / "vision_encoder").exists()
    assert SharpItRefinePipeline.from_pretrained(tmp_path / "sharpit").conditioning_mode == "concat"


def test_from_zero123plus_with_the_base_unet_uses_reference_mode(repos):
    base, _ = repos
    pipe = SharpItRefinePipeline.from_zero123plus(base=base, unet=base, unet_subfolder="unet", torch_dtype=torch.bfloat16)
    assert pipe.conditioning_mode == "reference" and pipe.unet.dtype == torch.bfloat16
    assert pipe.vision_encoder is None and pipe.config.null_condition == "grey"


def test_stock_zero123plus_mode(repos, tmp_path):
    """unet=None is Zero123++ itself: its UNet, reference attention, grey null, the global embedding."""
    base, _ = repos
    pipe = SharpItRefinePipeline.from_zero123plus(base=base, unet=None)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.conditioning_mode == "reference" and pipe.config.null_condition == "grey"
    assert pipe.vision_encoder is not None and pipe.feature_extractor_vae is not None
    assert pipe.config.ramping_coefficients == json.loads((base / "model_index.json").read_text())[
        "ramping_coefficients"]
    front = Image.new("RGBA", (50, 50), (250, 20, 20, 255))
    single = pipe(front, num_inference_steps=1, seed=0, output_type="latent").images
    assert single.shape == (1, 4, 120, 80)
    # Zero123++ + SDEdit: the front view conditions, the coarse grid is where denoising starts
    grid = torch.rand(3, 960, 640, generator=torch.Generator().manual_seed(0))
    sdedit = pipe(front, init_grid=grid, strength=0.5, num_inference_steps=2, seed=0, output_type="latent").images
    assert sdedit.shape == (1, 4, 120, 80) and not torch.allclose(sdedit, single)
    assert pipe(grid, strength=0.5, num_inference_steps=2, seed=0, output_type="latent").images.shape == (1, 4, 120, 80)
    with pytest.raises(InputError, match="init_grid"):
        pipe(front, strength=0.5, num_inference_steps=2)
    with pytest.raises(InputError, match="mixes"):
        pipe([front, grid])
    # the global embedding changes the conditional prompt row only
    rows = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["encoder_hidden_states"]), with_kwargs=True)
    pipe(front, num_inference_steps=1, guidance_scale=3.0, seed=0, output_type="latent")
    hook.remove()
    plain = pipe.encode_prompt(["", ""])
    assert torch.equal(rows[0][0], plain[0]) and not torch.allclose(rows[0][1], plain[1])
    # the optional components save and load back
    pipe.save_pretrained(tmp_path / "z123")
    again = SharpItRefinePipeline.from_pretrained(tmp_path / "z123")
    again.set_progress_bar_config(disable=True)
    assert again.vision_encoder is not None and again.config.ramping_coefficients == pipe.config.ramping_coefficients
    assert torch.equal(again(front, num_inference_steps=1, seed=0, output_type="latent").images, single)


def test_single_images_and_global_embedding_need_the_zero123plus_parts(repos):
    base, unet = repos
    sharp = SharpItRefinePipeline.from_zero123plus(base=base, unet=unet)
    with pytest.raises(InputError, match="3:2"):
        sharp(Image.new("RGB", (64, 64)), num_inference_steps=1)
    index = json.loads((base / "model_index.json").read_text())
    bare = shutil.copytree(base, base.parent / "bare")
    (bare / "model_index.json").write_text(json.dumps({k: v for k, v in index.items() if k != "ramping_coefficients"}))
    with pytest.raises(CheckpointError, match="ramping_coefficients"):
        SharpItRefinePipeline.from_zero123plus(base=bare, unet=None)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_missing_hub_weights_offline_name_the_hub_id(tmp_path, repos):
    base, _ = repos
    with pytest.raises(WeightsNotFoundError, match="sharpit-test/no-such-unet"):
        SharpItRefinePipeline.from_zero123plus(base=base, unet="sharpit-test/no-such-unet", cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="sudo-ai/zero123plus-v1.2"):
        SharpItRefinePipeline.from_zero123plus(cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="sharpit-test/no-such-pipeline"):
        SharpItRefinePipeline.from_pretrained("sharpit-test/no-such-pipeline", cache_dir=tmp_path)


def test_bad_local_folders_raise_path_errors(tmp_path, repos):
    _, unet = repos
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="VAE"):
        SharpItRefinePipeline.from_zero123plus(base=tmp_path / "empty", unet=unet)
    with pytest.raises(AssetNotFoundError):
        SharpItRefinePipeline.from_pretrained(tmp_path / "does" / "not" / "exist")
