"""Loading the refiner: from_zero123plus from tiny repos laid out like the real ones, offline errors."""

import json

import pytest
import torch

from sharpit.errors import AssetNotFoundError, CheckpointError, WeightsNotFoundError
from sharpit.refine import SharpItPipeline
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


def test_from_zero123plus_assembles_a_working_pipeline(repos, tmp_path):
    base, unet = repos
    pipe = SharpItPipeline.from_zero123plus(base=base, unet=unet)
    pipe.set_progress_bar_config(disable=True)
    assert set(pipe.components) == {"vae", "text_encoder", "tokenizer", "unet", "scheduler"}
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
    assert SharpItPipeline.from_pretrained(tmp_path / "sharpit").conditioning_mode == "concat"


def test_from_zero123plus_with_the_base_unet_uses_reference_mode(repos):
    base, _ = repos
    pipe = SharpItPipeline.from_zero123plus(base=base, unet=base, unet_subfolder="unet", torch_dtype=torch.bfloat16)
    assert pipe.conditioning_mode == "reference" and pipe.unet.dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_missing_hub_weights_offline_name_the_hub_id(tmp_path, repos):
    base, _ = repos
    with pytest.raises(WeightsNotFoundError, match="sharpit-test/no-such-unet"):
        SharpItPipeline.from_zero123plus(base=base, unet="sharpit-test/no-such-unet", cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="sudo-ai/zero123plus-v1.2"):
        SharpItPipeline.from_zero123plus(cache_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="sharpit-test/no-such-pipeline"):
        SharpItPipeline.from_pretrained("sharpit-test/no-such-pipeline", cache_dir=tmp_path)


def test_bad_local_folders_raise_path_errors(tmp_path, repos):
    _, unet = repos
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="VAE"):
        SharpItPipeline.from_zero123plus(base=tmp_path / "empty", unet=unet)
    with pytest.raises(AssetNotFoundError):
        SharpItPipeline.from_pretrained(tmp_path / "does" / "not" / "exist")
