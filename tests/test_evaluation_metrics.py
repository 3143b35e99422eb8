"""Reference tests of each evaluation metric (issue 12), on tiny or random-weight extractors in the
released layouts, loaded through the real code paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sharpit.errors import AssetNotFoundError, CheckpointError, InputError, WeightsFileNotFoundError
from sharpit.evaluation.fid import frechet_distance, inception_features, load_inception, trace_sqrt_product
from sharpit.evaluation.geometry import chamfer_distance, fscore, mesh_geometry, sample_surface
from sharpit.evaluation.images import as_views_uint8
from sharpit.evaluation.lpips import NETS, load_lpips, lpips_distance, lpips_reference
from sharpit.evaluation.run import METRICS, parse_metrics
from sharpit.evaluation.pixels import psnr, ssim
from sharpit.evaluation.similarity import load_clip, load_dino
from sharpit.mesh import Mesh
from sharpit.testing.evaluation import save_random_inception, save_random_lpips, save_tiny_clip, save_tiny_dino
from sharpit.testing.meshes import colored_cube, uv_sphere


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    path = save_random_inception(tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth")
    return load_inception(path)


def _images(n=8, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(inception):
    x = _images(5)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    feats = inception_features(inception, x)
    assert feats.shape == (5, 2048) and float(feats.std()) > 1e-3   # the random network is not degenerate
    fids = [frechet_distance(feats, inception_features(inception, (x + s * noise).clamp(0, 1))) for s in (0.05, 0.2, 0.5)]
    self_fid = frechet_distance(feats, feats)
    assert abs(self_fid) < 1e-6 * fids[0]
    assert fids[0] < fids[1] < fids[2]


@pytest.mark.parametrize("n1,n2", [(12, 10), (60, 50)])
def test_trace_sqrt_product_matches_torch_fidelitys_eigvals_formula(n1, n2):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n1, 48)), rng.normal(size=(n2, 48)) * 1.3 + 0.2
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).astype("complex128")).real)   # torch-fidelity's
    assert trace_sqrt_product(a, b) == pytest.approx(reference, rel=1e-6)
    d = a.mean(0) - b.mean(0)
    assert frechet_distance(a, b) == pytest.approx(d @ d + np.trace(s1) + np.trace(s2) - 2 * reference, rel=1e-6)


def test_inception_weights_missing_or_wrong(tmp_path, monkeypatch):
    with pytest.raises(AssetNotFoundError, match="inception-weights"):
        load_inception(tmp_path / "nope.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))     # nothing in the default place: exit 3
    with pytest.raises(WeightsFileNotFoundError, match="--inception-weights FILE"):
        load_inception()
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="Inception"):
        load_inception(tmp_path / "other.pth")


def test_clip_and_dino_similarity_of_identical_images_is_one(tmp_path):
    x = _images(4)
    clip = load_clip(save_tiny_clip(tmp_path / "clip"))
    dino = load_dino(save_tiny_dino(tmp_path / "dino"))
    for embedder in (clip, dino):
        same = embedder.similarity(x, x)
        assert torch.allclose(same, torch.ones(4), atol=1e-5)
        other = embedder.similarity(x, x.flip(0))
        assert float(other.min()) < 1 - 1e-6     # different images are not all 1
    with pytest.raises(InputError, match="one reference per image"):
        clip.similarity(x, x[:2])


def test_psnr_and_ssim():
    x = _images(2, 64)
    assert psnr(x, x) == [math.inf, math.inf] and ssim(x, x) == pytest.approx([1.0, 1.0])
    y = x.clone()
    y[:, :, :8] = 1.0
    assert all(10 < p < 60 for p in psnr(y, x)) and all(s < 1 for s in ssim(y, x))
    # one grey level off everywhere: MSE 1, PSNR 20 log10(255)
    a = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    assert psnr(a + 1, a)[0] == pytest.approx(20 * math.log10(255))
    with pytest.raises(InputError, match="same"):
        psnr(x, x[:1])


def test_a_grid_is_split_into_its_six_views():
    grid = torch.zeros(3, 96, 64)
    grid[:, 32:64, 32:] = 1.0   # row 1, column 1: view 3
    views = as_views_uint8(grid)
    assert views.shape == (6, 3, 32, 32) and views[3].min() == 255 and views[2].max() == 0
    with pytest.raises(InputError, match="divide"):
        as_views_uint8(torch.zeros(3, 97, 64))


def test_chamfer_of_a_mesh_with_itself_is_zero_and_of_an_offset_is_the_offset():
    cube = colored_cube()
    # both surfaces are sampled with the same seed: a mesh against itself (or a moved, scaled
    # copy, normalised back onto it) scores exactly 0 and 1
    assert mesh_geometry(cube, cube, num_points=2000, seed=5) == {"chamfer": 0.0, "fscore": 1.0}
    moved = Mesh(cube.vertices * 2.0 + 1.0, cube.faces)
    assert mesh_geometry(moved, cube, num_points=2000)["chamfer"] < 1e-12
    pts = sample_surface(cube, 3000, seed=0)
    assert chamfer_distance(pts, pts) == 0.0 and fscore(pts, pts) == 1.0
    # a plane and its copy moved along the normal by d: every nearest neighbour is exactly d away
    plane = torch.cat([torch.rand(2000, 2, dtype=torch.float64), torch.zeros(2000, 1, dtype=torch.float64)], 1)
    d = 0.03
    assert chamfer_distance(plane, plane + torch.tensor([0, 0, d], dtype=torch.float64)) == pytest.approx(d)
    assert fscore(plane, plane + torch.tensor([0, 0, 0.1], dtype=torch.float64), threshold=0.05) == 0.0


def test_geometry_normalises_both_meshes_and_is_reproducible():
    sphere = uv_sphere(16, 32)
    moved = Mesh(sphere.vertices * 3.0 + torch.tensor([1.0, -2.0, 0.5]), sphere.faces)
    a = mesh_geometry(moved, sphere, num_points=2000, seed=3)
    assert a == mesh_geometry(moved, sphere, num_points=2000, seed=3)
    assert a["chamfer"] < 0.02 and a["fscore"] > 0.99
    assert mesh_geometry(colored_cube(), sphere, num_points=2000)["chamfer"] > a["chamfer"] * 2


@pytest.fixture(scope="module")
def lpips_alex(tmp_path_factory):
    return load_lpips("alex", save_random_lpips(tmp_path_factory.mktemp("lpips"), "alex"))


def test_lpips_of_identical_views_is_zero_grows_with_noise_and_is_symmetric(lpips_alex):
    x = _images(3, 64)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=g)
    assert lpips_distance(lpips_alex, x, x) == [0.0, 0.0, 0.0]
    d = [lpips_distance(lpips_alex, (x + s * noise).clamp(0, 1), x) for s in (0.02, 0.1, 0.3)]
    assert all(0 < a < b < c for a, b, c in zip(*d))
    y = (x + 0.1 * noise).clamp(0, 1)
    assert lpips_distance(lpips_alex, y, x) == pytest.approx(lpips_distance(lpips_alex, x, y), rel=1e-5)
    # the reference's features made once give the same numbers
    assert lpips_distance(lpips_alex, y, lpips_reference(lpips_alex, x)) == pytest.approx(d[1], rel=1e-6)
    with pytest.raises(InputError, match="same"):
        lpips_distance(lpips_alex, x, x[:2])
    with pytest.raises(InputError, match="32x32"):
        lpips_distance(lpips_alex, x[:, :, :16, :16], x[:, :, :16, :16])


def test_lpips_weights_missing_or_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("sharpit.evaluation.lpips.bundled_linear_path", lambda net: None)
    with pytest.raises(WeightsFileNotFoundError, match="alexnet-owt-7be5be79.pth and alex.pth.*--lpips-weights DIR"):
        load_lpips("alex")
    with pytest.raises(AssetNotFoundError, match="--lpips-weights: no such folder"):
        load_lpips("alex", tmp_path / "nowhere")
    folder = save_random_lpips(tmp_path / "w", "alex")
    # the trunk found in torch's hub cache, the linear layers in the folder
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (folder / NETS["alex"].file).rename(tmp_path / "torch" / "hub" / "checkpoints" / NETS["alex"].file)
    assert load_lpips("alex", folder).net == "alex"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, folder / "alex.pth")
    with pytest.raises(CheckpointError, match=r"lin0.model.1.weight is \(1, 3, 1, 1\)"):
        load_lpips("alex", folder)
    torch.save({"features.0.weight": torch.zeros(2)}, folder / NETS["alex"].file)
    with pytest.raises(CheckpointError, match="not torchvision's alex weights"):
        load_lpips("alex", folder)


def test_metrics_selection():
    assert parse_metrics(None) == METRICS == parse_metrics("all")
    assert parse_metrics("lpips, CLIP,geometry") == ("clip", "lpips", "geometry")
    with pytest.raises(InputError, match="unknown metric 'is'"):
        parse_metrics("fid,is")
    with pytest.raises(InputError, match="empty"):
        parse_metrics(" , ")
