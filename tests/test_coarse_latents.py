"""Shap-E latent files: sharpit safetensors with metadata and Cap3D-style .pt files."""

import pytest
import torch

import sharpit
from sharpit.coarse import load_latents, save_latents
from sharpit.errors import (AssetNotFoundError, CorruptFileError, InputError, OutputExistsError,
                            UnsupportedFormatError)

W = 64


def test_round_trip_with_metadata(tmp_path):
    latents = torch.randn(2, W)
    meta = {"prompt": ["a chair", "a lamp"], "seed": 3, "guidance_scale": 15.0,
            "num_inference_steps": 64, "model_id": "openai/shap-e", "note": "123"}
    path = save_latents(tmp_path / "lat.safetensors", latents, meta)
    loaded, got = load_latents(path, width=W, row="all")
    assert torch.equal(loaded, latents)
    assert got.pop("sharpit_version") == sharpit.__version__
    assert got == meta  # "123" stays a string, 3 stays an int
    assert [p.name for p in tmp_path.iterdir()] == ["lat.safetensors"]  # no temporaries left


def test_save_refuses_to_overwrite_and_bad_input(tmp_path):
    path = save_latents(tmp_path / "a.safetensors", torch.zeros(W))
    with pytest.raises(OutputExistsError):
        save_latents(path, torch.zeros(W))
    save_latents(path, torch.ones(W), overwrite=True)
    assert torch.equal(load_latents(path, width=W)[0], torch.ones(1, W))
    with pytest.raises(UnsupportedFormatError):
        save_latents(tmp_path / "a.npy", torch.zeros(W))
    with pytest.raises(InputError, match="NaN"):
        save_latents(tmp_path / "b.safetensors", torch.full((W,), float("nan")))
    with pytest.raises(InputError, match="JSON"):
        save_latents(tmp_path / "c.safetensors", torch.zeros(W), {"x": object()})


@pytest.mark.parametrize("shape", [(W,), (1, W), (8, 8)])
def test_cap3d_pt_shapes(tmp_path, shape):
    latent = torch.randn(shape, dtype=torch.float16)
    torch.save(latent, tmp_path / "x.pt")
    loaded, meta = load_latents(tmp_path / "x.pt", width=W)
    assert loaded.shape == (1, W) and loaded.dtype == torch.float32 and meta == {}
    assert torch.equal(loaded, latent.float().reshape(1, W))


def test_bad_latent_files(tmp_path):
    torch.save(torch.zeros(3, 5), tmp_path / "wrong.pt")
    with pytest.raises(InputError, match=r"\(3, 5\)"):
        load_latents(tmp_path / "wrong.pt", width=W)
    torch.save({"latent": torch.zeros(W)}, tmp_path / "dict.pt")
    with pytest.raises(CorruptFileError, match="one latent tensor"):
        load_latents(tmp_path / "dict.pt", width=W)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptFileError):
        load_latents(tmp_path / "junk.safetensors", width=W)
    save_latents(tmp_path / "small.safetensors", torch.zeros(2, 16))
    with pytest.raises(InputError, match=f"\\(B, {W}\\)"):
        load_latents(tmp_path / "small.safetensors", width=W, row=0)
    with pytest.raises(AssetNotFoundError):
        load_latents(tmp_path / "missing.pt")


def test_several_rows_are_refused_unless_one_is_picked(tmp_path):
    latents = torch.randn(3, W)
    path = save_latents(tmp_path / "batch.safetensors", latents, {"prompt": ["a", "b", "c"]})
    with pytest.raises(InputError) as info:
        load_latents(path, width=W)
    msg = str(info.value)
    assert "batch.safetensors" in msg and "3 latents" in msg and "row=i" in msg and "row='all'" in msg
    for row, expected in ((0, 0), (2, 2), (-1, 2)):
        one, meta = load_latents(path, width=W, row=row)
        assert one.shape == (1, W) and torch.equal(one[0], latents[expected])
        assert meta["prompt"] == ["a", "b", "c"]          # the file's metadata, not sliced
    assert torch.equal(load_latents(path, width=W, row="all")[0], latents)
    for bad in (3, -4):
        with pytest.raises(InputError, match=r"row .* out of range.*3 latent"):
            load_latents(path, width=W, row=bad)
    for bad in ("first", 1.0, True):
        with pytest.raises(InputError, match="row must be"):
            load_latents(path, width=W, row=bad)


def test_single_row_files_load_as_one_latent_with_any_row_choice(tmp_path):
    path = save_latents(tmp_path / "one.safetensors", torch.ones(W))
    for row in (None, 0, -1, "all"):
        assert load_latents(path, width=W, row=row)[0].shape == (1, W)
    torch.save(torch.randn(W), tmp_path / "cap3d.pt")
    assert load_latents(tmp_path / "cap3d.pt", width=W, row=0)[0].shape == (1, W)
    with pytest.raises(InputError, match="out of range"):
        load_latents(tmp_path / "cap3d.pt", width=W, row=1)


def test_find_latents_maps_object_ids_to_every_readable_latent_file(tmp_path):
    from sharpit.coarse import find_latents

    (tmp_path / "sub").mkdir()
    save_latents(tmp_path / "a.safetensors", torch.ones(W))
    torch.save(torch.ones(W), tmp_path / "sub" / "b.pt")
    torch.save(torch.ones(W), tmp_path / "c.pth")
    (tmp_path / "notes.txt").write_text("not a latent")
    found = find_latents(tmp_path)
    assert found == {"a": tmp_path / "a.safetensors", "b": tmp_path / "sub" / "b.pt", "c": tmp_path / "c.pth"}
    assert all(load_latents(p, width=W)[0].shape == (1, W) for p in found.values())
    with pytest.raises(AssetNotFoundError, match="latent folder not found"):
        find_latents(tmp_path / "nowhere")
    with pytest.raises(AssetNotFoundError, match="not a folder"):
        find_latents(tmp_path / "notes.txt")


def test_find_latents_matches_suffixes_in_any_case_and_warns_on_two_files_for_one_object(tmp_path):
    from sharpit.formats import find_latents

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "chair.PT").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "chair.safetensors").write_bytes(b"x")
    with pytest.warns(UserWarning, match="two latent files for object 'chair'"):
        found = find_latents(tmp_path)
    assert found == {"chair": tmp_path / "b" / "chair.safetensors"}
