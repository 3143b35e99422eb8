"""Parity of sharpit's LPIPS with the official ``lpips`` package (v0.1, nets alex and vgg).

``tests/fixtures/parity/lpips_<net>.safetensors`` (``scripts/parity/lpips_metric.py``) holds the
package's own v0.1 linear layers, checks of a seed-regenerated random trunk, 8-bit image pairs and
the package's distances and per-layer terms. The trunk is rebuilt here by
:func:`sharpit.testing.evaluation.random_lpips_trunk`, written with the linear layers in the
released file layouts, and loaded through :func:`sharpit.evaluation.lpips.load_lpips`.
"""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sharpit.evaluation import lpips as lp
from sharpit.evaluation.lpips import NETS, load_lpips, lpips_distance
from sharpit.testing.evaluation import random_lpips_trunk

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
SIZES = ("64", "80x112")


def _fixture(net):
    with safe_open(str(FIXTURES / f"lpips_{net}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module", params=["alex", "vgg"])
def loaded(request, tmp_path_factory):
    net = request.param
    tensors, meta = _fixture(net)
    trunk = random_lpips_trunk(net, int(meta["seed"]))
    folder = tmp_path_factory.mktemp(f"lpips-{net}")
    # the released torchvision file: the trunk under features.*, and a classifier LPIPS must ignore
    released = {f"features.{k}": v for k, v in trunk.items()}
    released.update({"classifier.1.weight": torch.zeros(2, 2), "classifier.1.bias": torch.zeros(2)})
    torch.save(released, folder / NETS[net].file)
    torch.save({k: v for k, v in tensors.items() if k.startswith("lin")}, folder / f"{net}.pth")
    return net, load_lpips(net, folder), trunk, tensors


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_the_trunk_is_the_one_the_official_code_ran(loaded):
    net, _, trunk, tensors = loaded
    checks = {k[len("backbone_check."):]: v for k, v in tensors.items() if k.startswith("backbone_check.")}
    assert set(checks) == set(trunk)
    for key, value in trunk.items():
        t = value.double()
        assert torch.allclose(torch.stack([t.sum(), (t * t).sum()]), checks[key], rtol=1e-9, atol=1e-9), key


@pytest.mark.parametrize("size", SIZES)
def test_distances_match_the_official_package(loaded, size):
    net, model, _, tensors = loaded
    a = tensors[f"input.a.{size}"].permute(0, 3, 1, 2)
    b = tensors[f"input.b.{size}"].permute(0, 3, 1, 2)
    ours = torch.tensor(lpips_distance(model, a, b))
    expected = tensors[f"output.{size}"]
    assert _rel(ours, expected) <= 1e-4, (net, ours, expected)
    assert float(ours[2]) == 0.0 and float(expected[2]) == 0.0          # the identical pair
    _, terms = model(a.float() / 127.5 - 1, b.float() / 127.5 - 1, per_layer=True)
    assert _rel(terms, tensors[f"output_layers.{size}"]) <= 1e-4


def test_parity_detects_a_reverted_convention(loaded, monkeypatch):
    """The fixture can fail: without the ScalingLayer (the v0.0 bug), with inputs left in [0, 1],
    or without the per-pixel unit normalisation, the distances move by far more than 1e-4."""
    net, model, _, tensors = loaded
    a = tensors["input.a.64"].permute(0, 3, 1, 2).float()
    b = tensors["input.b.64"].permute(0, 3, 1, 2).float()
    expected = tensors["output.64"]
    assert _rel(model(a / 255, b / 255), expected) > 1e-2                  # [0, 1], not [-1, 1]
    shift, scale = model.shift.clone(), model.scale.clone()
    model.shift.zero_()
    model.scale.fill_(1.0)
    try:
        assert _rel(model(a / 127.5 - 1, b / 127.5 - 1), expected) > 1e-2  # no ScalingLayer
    finally:
        model.shift.copy_(shift)
        model.scale.copy_(scale)
    monkeypatch.setattr(lp, "_unit", lambda f: f)
    assert _rel(model(a / 127.5 - 1, b / 127.5 - 1), expected) > 1e-2      # no unit normalisation
