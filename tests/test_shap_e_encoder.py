"""Shap-E encoder: loading the released layout (tiny), frames, reproducibility, decoding, bad input, CLI."""

import math

import pytest
import torch

from sharpit.cameras import gltf_to_sharpit
from sharpit.coarse import ShapEEncoder, ShapEGenerator, load_latents
from sharpit.coarse import encoder_inputs
from sharpit.coarse.encoder_inputs import EncoderInputSettings, mesh_to_shap_e_frame, prepare_encoder_inputs
from sharpit.errors import CheckpointError, ConfigError, InputError, MeshError
from sharpit.mesh import Mesh
from sharpit.testing.meshes import colored_cube, textured_cube
from sharpit.testing.shap_e import TINY_SHAP_E_LATENT_WIDTH, save_tiny_shap_e
from sharpit.testing.shap_e_encoder import TINY_ENCODER_YAML, save_tiny_shap_e_encoder, tiny_transmitter_state_dict


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return save_tiny_shap_e_encoder(tmp_path_factory.mktemp("enc") / "transmitter")


@pytest.fixture(scope="module")
def encoder(released):
    return ShapEEncoder.from_pretrained(released)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_released_layout_loads_every_encoder_key(released, encoder):
    state = tiny_transmitter_state_dict()
    network = {k[len("encoder."):] for k in state if k.startswith("encoder.") and ".params_proj." not in f".{k[8:]}"}
    assert {k[len("network."):] for k in encoder.state_dict()} == network
    assert any(k.startswith("renderer.") for k in state)          # present in the file, ignored
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, state["encoder." + k[len("network."):]])
    assert encoder.latent_width == TINY_SHAP_E_LATENT_WIDTH


def test_dtype_by_either_name(released, encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "own")
    for source in (released, tmp_path / "own"):
        for key in ("dtype", "torch_dtype"):
            assert ShapEEncoder.from_pretrained(source, **{key: torch.float64}).dtype == torch.float64, (source, key)
    with pytest.raises(InputError, match="not both"):
        ShapEEncoder.from_pretrained(released, dtype=torch.float64, torch_dtype=torch.float64)


def test_save_pretrained_round_trip(encoder, tmp_path):
    inputs = prepare_encoder_inputs(colored_cube(), encoder.input_settings, _gen(0))
    encoder.save_pretrained(tmp_path / "own")
    again = ShapEEncoder.from_pretrained(tmp_path / "own")
    assert again.input_settings == encoder.input_settings
    assert torch.equal(again.encode_inputs(inputs, _gen(1)), encoder.encode_inputs(inputs, _gen(1)))


def test_encode_is_reproducible_batched_and_decodes(encoder, tmp_path):
    a = encoder.encode(colored_cube(), generator=_gen(3))
    assert a.shape == (1, TINY_SHAP_E_LATENT_WIDTH) and float(a.abs().max()) < 1
    assert torch.equal(a, encoder.encode(colored_cube(), generator=_gen(3)))
    assert not torch.allclose(a, encoder.encode(colored_cube(), generator=_gen(4)))
    both = encoder.encode([textured_cube(), colored_cube()], generator=[_gen(5), _gen(3)])
    assert torch.allclose(both[1], a[0], atol=1e-6)
    shap_e = ShapEGenerator.from_pretrained(save_tiny_shap_e(tmp_path / "shap_e"))
    mesh = shap_e.to_mesh(a, grid_size=16)
    assert isinstance(mesh, Mesh) and mesh.num_faces > 0


def test_frame_matches_blender_gltf_import_and_normalisation():
    """Blender imports glTF (x, y, z) as (x, -z, y); the encoder frame must be that, with the
    bounding box centred and its longest side 2 (normalize_scene, then pc_scale 2)."""
    g = torch.tensor([[0.3, -1.2, 2.0], [4.0, 0.5, -0.25], [-1.0, 2.0, 0.0]])
    tri = Mesh(gltf_to_sharpit(g), torch.tensor([[0, 1, 2]]))
    v = mesh_to_shap_e_frame(tri).vertices.double()
    blender = torch.stack([g[:, 0], -g[:, 2], g[:, 1]], dim=-1).double()
    lo, hi = blender.min(0).values, blender.max(0).values
    expected = (blender - (lo + hi) / 2) * (2 / float((hi - lo).max()))
    assert torch.allclose(v, expected, atol=1e-6)


def test_point_cloud_lands_where_official_preprocessing_puts_it():
    """An asymmetric object (a long bar along sharpit +x = glTF +z, the front) lies along -y in
    the encoder's frame, spanning [-1, 1]; points sit on its surface; colours are 8-bit."""
    cube = colored_cube()
    bar = Mesh(cube.vertices * torch.tensor([2.0, 0.25, 0.25]) + torch.tensor([0.5, 0.0, 0.0]), cube.faces,
               cube.vertex_colors)
    s = EncoderInputSettings(point_count=256, num_views=2, image_size=32, point_cloud_views=6,
                             point_cloud_render_size=64, random_sample_count=2048)
    inputs = prepare_encoder_inputs(bar, s, _gen(0))
    xyz, rgb = inputs.points[0, :, :3], inputs.points[0, :, 3:]
    assert float(xyz[:, 1].min()) == pytest.approx(-1.0, abs=0.05)
    assert float(xyz[:, 1].max()) == pytest.approx(1.0, abs=0.05)
    assert float(xyz[:, 0].abs().max()) < 0.2 and float(xyz[:, 2].abs().max()) < 0.2
    assert torch.allclose(rgb * 255, (rgb * 255).round(), atol=1e-4)
    assert inputs.views.shape == (1, 2, 3, 32, 32) and float(inputs.views.min()) >= -1
    assert math.isclose(float(inputs.origins[0].norm(dim=-1).mean()), 4.0, rel_tol=1e-5)


def test_bad_meshes_are_clear_errors(encoder, monkeypatch):
    cube = colored_cube()
    with pytest.raises(MeshError, match="point cloud"):
        encoder.encode(Mesh(cube.vertices, torch.zeros(0, 3, dtype=torch.long)))
    with pytest.raises(InputError, match="Mesh"):
        encoder.encode("chair.glb")
    with pytest.raises(InputError, match="generators"):
        encoder.encode([cube, cube], generator=[_gen(0)])
    monkeypatch.setattr(encoder_inputs, "MAX_ENCODE_FACES", 4)
    with pytest.raises(MeshError, match="decimate"):
        encoder.encode(cube)


def test_wrong_kind_transmitter_files(released, tmp_path):
    import shutil

    import yaml

    def folder(name, weights=None, config=None):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(released / "transmitter_config.yaml", d)
        if weights is not None:
            torch.save(weights, d / "transmitter.pt")
        if config is not None:
            (d / "transmitter_config.yaml").write_text(yaml.safe_dump(config))
        return d

    with pytest.raises(CheckpointError, match="no encoder"):   # e.g. a prior's checkpoint
        ShapEEncoder.from_pretrained(folder("prior", {"wrapped.input_proj.weight": torch.zeros(2, 2)}))
    with pytest.raises(CheckpointError, match="plain state dict"):
        ShapEEncoder.from_pretrained(folder("listed", [torch.zeros(1)]))
    d = folder("text")
    (d / "transmitter.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="transmitter"):
        ShapEEncoder.from_pretrained(d)
    state = tiny_transmitter_state_dict()
    del state["encoder.ln_post.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        ShapEEncoder.from_pretrained(folder("missing", state))
    other = dict(TINY_ENCODER_YAML, encoder=dict(TINY_ENCODER_YAML["encoder"], cross_attention_dataset="pcl"))
    with pytest.raises(ConfigError, match="cross_attention_dataset"):
        ShapEEncoder.from_pretrained(folder("config", tiny_transmitter_state_dict(), other))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="transmitter.pt"):
        ShapEEncoder.from_pretrained(empty)


def test_cli_tiny_round_trip_and_bad_input(tmp_path, capsys, monkeypatch):
    from inference.encode import main
    from sharpit.mesh_io import save_mesh

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asset = tmp_path / "cube.glb"
    save_mesh(colored_cube(), asset)
    out = tmp_path / "latent.safetensors"
    assert main(["--asset", str(asset), "--out", str(out), "--tiny", "--seed", "2", "--device", "cpu"]) == 0
    latents, meta = load_latents(out, width=TINY_SHAP_E_LATENT_WIDTH)
    assert latents.shape == (1, TINY_SHAP_E_LATENT_WIDTH) and meta["seed"] == 2 and meta["mode"] == "encode"
    capsys.readouterr()
    assert main(["--asset", str(asset), "--out", str(out), "--tiny"]) == 2               # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--asset", str(asset), "--out", str(tmp_path / "x.safetensors")]) == 3   # no weights
    assert "--encoder" in capsys.readouterr().err
    assert main(["--asset", str(asset), "--out", str(tmp_path / "x.safetensors"), "--encoder",
                 "nobody/no-such-encoder"]) == 3
    assert "nobody/no-such-encoder" in capsys.readouterr().err
    assert main(["--asset", str(tmp_path / "none.glb"), "--out", str(tmp_path / "y.safetensors"), "--tiny"]) == 2
    assert main(["--asset", str(asset), "--out", str(tmp_path / "y.pt"), "--tiny"]) == 2
    assert main(["--asset", str(asset), "--out", str(tmp_path / "y.safetensors"), "--tiny", "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error:") for line in err)

