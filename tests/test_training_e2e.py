"""End to end on CPU with tiny models: assets -> pairs -> 20 training steps -> resume -> saved pipeline."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import warnings

import pytest
import torch
from safetensors.torch import load_file

from sharpit.coarse import save_latents
from sharpit.errors import CorruptFileError
from sharpit.mesh_io import save_mesh
from sharpit.testing.meshes import colored_cube, textured_cube, uv_sphere
from sharpit.testing.refine import save_tiny_zero123plus_repo
from sharpit.testing.shap_e import TINY_SHAP_E_LATENT_WIDTH, save_tiny_shap_e
from training.config import TrainConfig
from training.data import PairDataset
from training.loss import encode_batch, make_noise_scheduler, sharpit_loss, step_generator, unconditional_branch
from training.prepare_pairs import main as prepare_main
from training.prepare_pairs import prepare_pairs
from training.train_sharpit import train

TILE = 32


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    assets, latents = root / "assets" / "000-000", root / "latents"
    latents.mkdir(parents=True)
    for oid, mesh, ext in (("cube", colored_cube(), ".glb"), ("tex", textured_cube(), ".obj"),
                           ("ball", uv_sphere(8, 12), ".glb")):
        save_mesh(mesh, assets / f"{oid}{ext}")
    (assets / "broken.glb").write_bytes(b"not a glb")
    gen = torch.Generator().manual_seed(0)
    torch.save(torch.randn(TINY_SHAP_E_LATENT_WIDTH, generator=gen), latents / "cube.pt")  # Cap3D style
    torch.save(torch.randn(TINY_SHAP_E_LATENT_WIDTH, generator=gen), latents / "broken.pt")
    save_latents(latents / "tex.safetensors", torch.randn(1, TINY_SHAP_E_LATENT_WIDTH, generator=gen))
    save_latents(latents / "ball.safetensors", torch.randn(1, TINY_SHAP_E_LATENT_WIDTH, generator=gen))
    (root / "captions.csv").write_text("cube,a red cube\ntex,a checkered box\n")  # "ball" has no caption
    save_tiny_shap_e(root / "shap-e")
    save_tiny_zero123plus_repo(root / "zero123plus")
    return root


def _prepare(root, **kw):
    return prepare_pairs(root / "assets", root / "captions.csv", root / "latents", root / "pairs", str(root / "shap-e"),
                         tile_size=TILE, shap_e_grid_size=24, samples_per_shard=2, **kw)


@pytest.fixture(scope="module")
def pairs(workdir):
    summary = _prepare(workdir)
    assert (summary.written, summary.failed) == (3, 1)
    return workdir / "pairs"


def test_prepare_pairs_writes_shards_index_and_logs_failures(workdir, pairs):
    dataset = PairDataset(pairs)
    assert sorted(e.object_id for e in dataset.entries) == ["ball", "cube", "tex"]
    assert len(list(pairs.glob("pairs-r000-*.tar"))) == 2  # 3 objects at 2 per shard
    item = dataset[[e.object_id for e in dataset.entries].index("cube")]
    assert item["target"].shape == item["coarse"].shape == (3, 3 * TILE, 2 * TILE)
    assert item["caption"] == "a red cube"
    assert float(item["target"].min()) < 0.9  # the cube is visible on the white background
    assert {e.object_id: e.caption for e in dataset.entries}["ball"] == ""
    failed = [json.loads(line) for line in (pairs / "failed-r000.jsonl").read_text().splitlines()]
    assert [f["object_id"] for f in failed] == ["broken"]
    # a rerun resumes: nothing new to write, the broken asset is retried and fails again
    shards = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in pairs.glob("pairs-*.tar")}
    again = _prepare(workdir)
    assert (again.written, again.skipped, again.failed) == (0, 3, 1)
    # finished shards are never rewritten, and a run with nothing to write starts no shard
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in pairs.glob("pairs-*.tar")} == shards


def test_shards_are_plain_tars_that_webdataset_streams(pairs):
    import webdataset as wds

    urls = [str(p) for p in sorted(pairs.glob("pairs-r000-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == ["ball", "cube", "tex"]
    assert all(set(s) >= {"target.png", "coarse.png", "json"} for s in samples)
    assert {json.loads(s["json"])["object_id"] for s in samples} == {"ball", "cube", "tex"}


def test_missing_caption_is_a_warning(workdir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sharpit.training.prepare_pairs"):
        summary = prepare_pairs(workdir / "assets", workdir / "captions.csv", workdir / "latents", tmp_path / "p",
                                str(workdir / "shap-e"), tile_size=TILE, shap_e_grid_size=24, limit=1)
    assert summary.written == 1  # "ball", the first id, has no caption
    assert any("no caption" in r.getMessage() and "ball" in r.getMessage() for r in caplog.records)


def test_prepare_pairs_cli_reports_bad_input_in_one_line(workdir, tmp_path, capsys):
    code = prepare_main(["--assets", str(tmp_path / "nope"), "--captions", str(workdir / "captions.csv"),
                         "--latents", str(workdir / "latents"), "--output", str(tmp_path / "out"),
                         "--shap_e", str(workdir / "shap-e"), "--tile_size", str(TILE)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "asset folder not found" in err and len(err.splitlines()) == 1


def test_coarse_grids_use_the_inference_render_default(workdir, pairs, tmp_path, capsys):
    from sharpit.coarse import ShapEGenerator, load_latents
    from training.prepare_pairs import build_parser

    gen = ShapEGenerator.from_pretrained(workdir / "shap-e", device="cpu")
    latent, _ = load_latents(next((workdir / "latents").glob("ball.*")), width=gen.latent_width)
    expected = gen.render_views(latent, size=TILE, grid_size=24).grid()   # the default, as inference renders
    dataset = PairDataset(pairs)
    coarse = dataset[[e.object_id for e in dataset.entries].index("ball")]["coarse"]
    assert (coarse - expected).abs().max() <= 1 / 255 + 1e-6   # stored as 8-bit PNG
    args = build_parser().parse_args(["--assets", "a", "--captions", "c", "--latents", "l", "--output", "o"])
    assert (args.coarse_mode, args.coarse_supersample) == ("mesh", 2)
    capsys.readouterr()   # drop the weight-loading progress bars
    code = prepare_main(["--assets", str(workdir / "assets"), "--captions", str(workdir / "captions.csv"),
                         "--latents", str(workdir / "latents"), "--output", str(tmp_path / "out"),
                         "--shap_e", str(workdir / "shap-e"), "--coarse_supersample", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "supersample" in err and len(err.splitlines()) == 1


def _config(workdir, pairs, out, **kw):
    base = dict(pretrained_model=str(workdir / "zero123plus"), train_data=str(pairs), output_dir=str(out),
                max_train_steps=20, train_batch_size=3, checkpointing_steps=10, validation_steps=1000,
                dataloader_num_workers=0, learning_rate=1e-3, lr_warmup_steps=2, seed=7, report_to="none")
    base.update(kw)
    return TrainConfig(**base).validate()


@pytest.fixture(scope="module")
def straight_run(workdir, pairs):
    out = workdir / "straight"
    losses = []
    path = train(_config(workdir, pairs, out, report_to="tensorboard", validation_steps=20,
                         num_validation_samples=1, validation_inference_steps=1),
                 step_callback=lambda step, logs: losses.append(logs["loss"]))
    return path, losses


def _fixed_loss(unet, pipe, dataset):
    """Loss of ``unet`` on the whole (3-object) dataset averaged over 8 fixed noise draws."""
    batch = [dataset[i] for i in range(len(dataset))]
    target = torch.stack([b["target"] for b in batch])
    coarse = torch.stack([b["coarse"] for b in batch])
    null = unconditional_branch(pipe, target.shape[-2:])
    total = 0.0
    with torch.no_grad():
        for k in range(8):
            gen = step_generator(123, k)
            enc = encode_batch(pipe.vae, pipe.tokenizer, pipe.text_encoder, target, coarse,
                               [b["caption"] for b in batch], gen)
            total += float(sharpit_loss(unet, make_noise_scheduler(), enc, null, "concat", 0.0, gen)["loss"])
    return total / 8


def test_train_20_steps_overfits_and_saves_a_loadable_pipeline(workdir, pairs, straight_run):
    from sharpit.refine import SharpItRefinePipeline
    from training.models import load_training_pipeline

    path, losses = straight_run
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = SharpItRefinePipeline.from_pretrained(path)
    assert not [w for w in caught if "saved without" in str(w.message)]  # the settings are saved
    assert pipe.conditioning_mode == "concat" and pipe.unet.config.in_channels == 8
    assert pipe.config.null_condition == "black" and pipe.config.condition_latent_space == "raw"
    start = load_training_pipeline(str(workdir / "zero123plus"), "zero123plus", "concat")
    dataset = PairDataset(pairs)
    before, after = _fixed_loss(start.unet, start, dataset), _fixed_loss(pipe.unet, pipe, dataset)
    assert after < 0.8 * before, (before, after)
    out = pipe(dataset[0]["coarse"], prompt="a red cube", num_inference_steps=2, seed=0, output_type="pt")
    assert out.images.shape == (1, 3, 960, 640) and bool(torch.isfinite(out.images).all())
    assert list((workdir / "straight" / "logs").rglob("events.out.tfevents*"))  # TensorBoard scalars + grids


def test_killed_and_resumed_run_is_bit_identical(workdir, pairs, straight_run):
    out = workdir / "resumed"

    def kill_at_12(step, logs):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(workdir, pairs, out), step_callback=kill_at_12)
    assert (out / "checkpoint-10").is_dir() and not (out / "pipeline").exists()
    path = train(_config(workdir, pairs, out, resume_from_checkpoint="latest"))
    straight = load_file(str(straight_run[0] / "unet" / "diffusion_pytorch_model.safetensors"))
    resumed = load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # the checkpoint restores the optimiser too: a second 20-step checkpoint matches the straight run's
    opt_a = torch.load(workdir / "straight" / "checkpoint-20" / "optimizer.bin", weights_only=True)
    opt_b = torch.load(out / "checkpoint-20" / "optimizer.bin", weights_only=True)
    assert all(torch.equal(opt_a["state"][i]["exp_avg_sq"], opt_b["state"][i]["exp_avg_sq"]) for i in opt_a["state"])


def test_resume_refuses_a_checkpoint_of_another_model(workdir, pairs, straight_run, tmp_path):
    from sharpit.errors import CheckpointError

    out = tmp_path / "other"
    shutil.copytree(workdir / "straight" / "checkpoint-10", out / "checkpoint-10")
    state = json.loads((out / "checkpoint-10" / "training_state.json").read_text())
    state["unet_config"]["cross_attention_dim"] = 1024
    (out / "checkpoint-10" / "training_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="cross_attention_dim"):
        train(_config(workdir, pairs, out, resume_from_checkpoint="latest"))
    state["unet_config"]["cross_attention_dim"] = json.loads(
        (workdir / "straight" / "checkpoint-10" / "training_state.json").read_text())["unet_config"]["cross_attention_dim"]
    state["null_condition"] = "grey"
    (out / "checkpoint-10" / "training_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="null_condition='grey' \\(this run: 'black'\\)"):
        train(_config(workdir, pairs, out, resume_from_checkpoint="latest"))


def test_fresh_run_refuses_an_output_dir_with_checkpoints(workdir, pairs, straight_run):
    from sharpit.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="resume_from_checkpoint"):
        train(_config(workdir, pairs, workdir / "straight"))


def test_prepare_pairs_splits_assets_between_torchrun_ranks(workdir, tmp_path, torchrun):
    import os
    import subprocess

    out = tmp_path / "pairs"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [*torchrun(2), "-m", "training.prepare_pairs", "--assets", str(workdir / "assets"), "--captions",
           str(workdir / "captions.csv"), "--latents", str(workdir / "latents"), "--output", str(out),
           "--shap_e", str(workdir / "shap-e"), "--tile_size", str(TILE), "--shap_e_grid_size", "24",
           "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-2000:]
    per_rank = [{json.loads(line)["object_id"] for line in (out / f"index-r00{r}.jsonl").read_text().splitlines()}
                for r in range(2)]
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == {"ball", "cube", "tex"}

    # rank 1 "killed" while writing one more object: half a tar member after its last indexed one,
    # half an index line. A rerun with one process repairs rank 1's files too and has nothing to do.
    shard = next(out.glob("pairs-r001-*.tar"))
    with tarfile.open(shard) as tar:
        last = tar.getmembers()[-1]
    with open(shard, "r+b") as f:
        f.seek(last.offset_data + -(-last.size // 512) * 512)
        f.write(tarfile.TarInfo("more.target.png").tobuf(tarfile.USTAR_FORMAT)[:300])
        f.truncate()
    with open(out / "index-r001.jsonl", "a") as f:
        f.write('{"object_id": "mo')
    with pytest.raises(CorruptFileError):
        PairDataset(out)
    summary = prepare_pairs(workdir / "assets", workdir / "captions.csv", workdir / "latents", out,
                            str(workdir / "shap-e"), tile_size=TILE, shap_e_grid_size=24)
    assert (summary.written, summary.skipped, summary.failed) == (0, 3, 1)
    assert sorted(e.object_id for e in PairDataset(out).entries) == ["ball", "cube", "tex"]
