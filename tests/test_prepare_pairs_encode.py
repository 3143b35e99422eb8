"""``prepare_pairs --coarse encode`` (issue 11, item 4): training pairs from the user's own assets,
the coarse side made by Shap-E's encoder, on tiny models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sharpit.coarse import CoarseRenderOptions, ShapEEncoder, load_latents
from sharpit.coarse import encoder_inputs
from sharpit.errors import AssetNotFoundError, CheckpointError, ConfigError, InputError, WeightsNotFoundError
from sharpit.mesh_io import load_mesh, save_mesh
from sharpit.testing.meshes import colored_cube, uv_sphere
from sharpit.testing.shap_e import TINY_SHAP_E_LATENT_WIDTH, save_tiny_shap_e
from sharpit.testing.shap_e_encoder import save_tiny_shap_e_encoder
from training.data import PairDataset
from training.prepare_pairs import main, object_seed, prepare_pairs
from training.shards import ShardWriter

TILE = 16
#: Small enough that the cube (12 faces) and the ball (168) are encoded and "big" (720) is refused.
FACE_LIMIT = 200


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode_pairs")
    for oid, mesh in (("ball", uv_sphere(8, 12)), ("big", uv_sphere(16, 24)), ("cube", colored_cube())):
        save_mesh(mesh, root / "assets" / f"{oid}.glb")
    (root / "assets" / "broken.glb").write_bytes(b"not a glb")
    (root / "captions.csv").write_text("ball,a ball\nbig,a big ball\ncube,a cube\nbroken,nothing\n")
    save_tiny_shap_e(root / "shap-e")
    save_tiny_shap_e_encoder(root / "encoder")
    return root


def _prepare(root, output, coarse="encode", latents=None, assets=None, **kw):
    kw.setdefault("encoder", str(root / "encoder") if coarse == "encode" else None)
    return prepare_pairs(assets or root / "assets", root / "captions.csv", latents, output, str(root / "shap-e"),
                         tile_size=TILE, shap_e_grid_size=16, coarse_render=CoarseRenderOptions(supersample=1),
                         device="cpu", coarse=coarse, **kw)


@pytest.fixture(scope="module")
def encoded(inputs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoder_inputs, "MAX_ENCODE_FACES", FACE_LIMIT)
        summary = _prepare(inputs, inputs / "pairs", seed=5)
    assert (summary.written, summary.skipped, summary.failed) == (2, 0, 2)
    return inputs / "pairs"


def _items(folder):
    dataset = PairDataset(folder)
    return {entry.object_id: dataset[i] for i, entry in enumerate(dataset.entries)}


def test_coarse_grids_are_the_saved_latents_decoded(inputs, encoded, tmp_path):
    """The pairs' coarse grids are what --coarse latents makes of the saved latents, bit for bit;
    each latent is the encoder's output for its own object seed (independent of order and batch)."""
    latent_dir = encoded / "latents"
    assert sorted(p.name for p in latent_dir.iterdir()) == ["ball.safetensors", "cube.safetensors"]
    failed = {json.loads(line)["object_id"]: json.loads(line)["reason"]
              for line in (encoded / "failed-r000.jsonl").read_text().splitlines()}
    assert set(failed) == {"big", "broken"} and "MeshError" in failed["big"] and "decimate" in failed["big"]

    again = _prepare(inputs, tmp_path / "from_latents", coarse="latents", latents=latent_dir)
    assert (again.written, again.failed) == (2, 2)   # "big" and "broken" have no latent
    ours, theirs = _items(encoded), _items(tmp_path / "from_latents")
    assert sorted(ours) == sorted(theirs) == ["ball", "cube"]
    for oid in ours:
        assert torch.equal(ours[oid]["coarse"], theirs[oid]["coarse"]), oid
        assert torch.equal(ours[oid]["target"], theirs[oid]["target"]), oid
        assert ours[oid]["caption"] == theirs[oid]["caption"]
    assert not torch.equal(ours["ball"]["coarse"], ours["cube"]["coarse"])

    encoder = ShapEEncoder.from_pretrained(inputs / "encoder")
    cube = encoder.encode(load_mesh(inputs / "assets" / "cube.glb"),
                          generator=torch.Generator().manual_seed(object_seed(5, "cube")))
    saved, meta = load_latents(latent_dir / "cube.safetensors", width=TINY_SHAP_E_LATENT_WIDTH)
    assert torch.equal(saved, cube)
    assert meta["seed"] == object_seed(5, "cube") and meta["run_seed"] == 5 and meta["mode"] == "encode"
    assert meta["encoder"] == str((inputs / "encoder").resolve()) and meta["object_id"] == "cube"


def test_object_seed_depends_on_the_run_seed_and_the_id_only():
    assert object_seed(0, "cube") == object_seed(0, "cube")
    assert len({object_seed(0, "cube"), object_seed(1, "cube"), object_seed(0, "ball")}) == 3
    assert 0 <= object_seed(2**40, "x" * 300) < 2**63


def test_an_interrupted_run_resumes_without_encoding_again(inputs, tmp_path, monkeypatch):
    """A kill after the cube's latent was saved, before its pair: the rerun writes the cube's pair
    from the saved latent without encoding it again (the broken asset is retried and fails again)."""
    calls = []
    real_encode, real_add = ShapEEncoder.encode, ShardWriter.add

    def counting_encode(self, meshes, *args, **kwargs):
        calls.append(meshes)
        return real_encode(self, meshes, *args, **kwargs)

    def add_then_stop(self, object_id, *args, **kwargs):
        if object_id == "cube":
            raise KeyboardInterrupt
        return real_add(self, object_id, *args, **kwargs)

    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("ball.glb", "broken.glb", "cube.glb"):
        shutil.copy(inputs / "assets" / name, assets)
    monkeypatch.setattr(ShapEEncoder, "encode", counting_encode)
    monkeypatch.setattr(ShardWriter, "add", add_then_stop)
    out = tmp_path / "pairs"
    with pytest.raises(KeyboardInterrupt):
        _prepare(inputs, out, assets=assets)
    assert len(calls) == 2   # ball, cube
    cube_latent = (out / "latents" / "cube.safetensors").read_bytes()
    assert sorted(_items(out)) == ["ball"]

    monkeypatch.setattr(ShardWriter, "add", real_add)
    summary = _prepare(inputs, out, assets=assets)
    assert (summary.written, summary.skipped, summary.failed) == (1, 1, 1)   # cube; ball; broken
    assert len(calls) == 2
    assert (out / "latents" / "cube.safetensors").read_bytes() == cube_latent
    assert sorted(_items(out)) == ["ball", "cube"]


def test_saved_latents_of_another_encoder_or_seed_are_refused(inputs, encoded, tmp_path):
    out = tmp_path / "pairs"
    (out / "latents").mkdir(parents=True)
    shutil.copy(encoded / "latents" / "cube.safetensors", out / "latents")
    with pytest.raises(ConfigError, match="run seed 5; this run has --encoder .* --seed 6"):
        _prepare(inputs, out, seed=6)
    other = save_tiny_shap_e_encoder(tmp_path / "other")
    with pytest.raises(ConfigError, match=f"this run has --encoder {other.resolve()} --seed 5"):
        _prepare(inputs, out, seed=5, encoder=str(other))
    assert not list(out.glob("pairs-*.tar"))   # refused before any pair was written


def test_bad_arguments_fail_before_loading(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pairs"
    with pytest.raises(ConfigError, match="--latents applies to --coarse latents only"):
        _prepare(inputs, out, latents=inputs / "assets")
    with pytest.raises(ConfigError, match="--coarse encode needs --encoder"):
        _prepare(inputs, out, encoder=None)
    with pytest.raises(ConfigError, match="--encoder applies to --coarse encode only"):
        _prepare(inputs, out, coarse="latents", latents=inputs / "assets", encoder=str(inputs / "encoder"))
    with pytest.raises(ConfigError, match="--latents is required with --coarse latents"):
        _prepare(inputs, out, coarse="latents")
    with pytest.raises(ConfigError, match="--coarse must be"):
        _prepare(inputs, out, coarse="cap3d")
    with pytest.raises(InputError, match="--seed"):
        _prepare(inputs, out, seed=-1)
    with pytest.raises(AssetNotFoundError, match="--encoder"):
        _prepare(inputs, out, encoder=str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    shutil.copy(inputs / "encoder" / "transmitter.pt", tmp_path / "half")
    with pytest.raises(CheckpointError, match="--encoder is not a Shap-E encoder folder"):   # no YAML beside it
        _prepare(inputs, out, encoder=str(tmp_path / "half"))
    with pytest.raises(WeightsNotFoundError, match="--encoder"):
        _prepare(inputs, out, encoder="nobody/no-such-encoder")
    assert not out.exists()
    args = ["--assets", str(inputs / "assets"), "--captions", str(inputs / "captions.csv"), "--output", str(out),
            "--shap_e", str(inputs / "shap-e"), "--coarse", "encode"]
    capsys.readouterr()
    assert main(args + ["--encoder", "nobody/no-such-encoder"]) == 3
    err = capsys.readouterr().err.strip()
    assert "--encoder" in err and "--shap_e" not in err and len(err.splitlines()) == 1
    assert main(args[:-2] + ["--seed", "3", "--latents", str(inputs / "assets")]) == 2
    assert "--seed applies to --coarse encode only" in capsys.readouterr().err


def test_two_ranks_refuse_a_foreign_saved_latent_together(inputs, encoded, tmp_path, torchrun):
    """A saved latent from another --seed refuses the run on every rank before the split (one rank
    refusing alone would leave the other waiting at the final barrier)."""
    import os
    import subprocess
    from pathlib import Path

    out = tmp_path / "pairs"
    (out / "latents").mkdir(parents=True)
    shutil.copy(encoded / "latents" / "cube.safetensors", out / "latents")   # made with --seed 5
    cmd = [*torchrun(2), "-m", "training.prepare_pairs", "--assets", str(inputs / "assets"), "--captions",
           str(inputs / "captions.csv"), "--coarse", "encode", "--encoder", str(inputs / "encoder"), "--seed", "6",
           "--output", str(out), "--shap_e", str(inputs / "shap-e"), "--tile_size", str(TILE),
           "--shap_e_grid_size", "16", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode != 0
    assert result.stderr.count("was encoded by another --encoder or --seed") == 2, result.stderr[-2000:]
    assert not list(out.glob("pairs-*.tar"))
