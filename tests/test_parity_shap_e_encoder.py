"""Parity of sharpit's Shap-E encoder with the official ``PointCloudPerceiverChannelsEncoder``.

``tests/fixtures/parity/shap_e_encoder.safetensors`` holds tiny random weights under the released
``transmitter.pt`` names, inputs in the form of the official ``load_or_create_multimodal_batch``,
and the official ``encode_to_bottleneck`` latent (``scripts/parity/shap_e_encoder.py``). The
weights are written back in the released layout and loaded through ``ShapEEncoder.from_pretrained``.
``shap_e_fps.safetensors`` holds the official farthest-point sample of a random cloud
(``scripts/parity/shap_e_fps.py``).
"""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sharpit.coarse import ShapEEncoder, ShapEEncoderInputs

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "shap_e_encoder.safetensors"


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("released")
    with safe_open(str(FIXTURE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    torch.save({k: v for k, v in tensors.items() if k.startswith("encoder.")}, folder / "transmitter.pt")
    (folder / "transmitter_config.yaml").write_text(meta["transmitter_config_yaml"])
    inputs = ShapEEncoderInputs(**{k[len("input."):]: v for k, v in tensors.items() if k.startswith("input.")})
    model = ShapEEncoder.from_pretrained(folder)
    return model, inputs, tensors["output.latent"], int(meta["seed"])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


#: Relative tolerance against the stored latent. The same CPU gives 4.2e-7 (sharpit vs the official
#: code); across CPUs the official code moves by itself: its float32 run on an AMD EPYC is 1.28e-4
#: from the fixture made on another CPU (float32 rounding of the pixel rays, amplified by the NeRF
#: position encoding's 2^9 frequencies and the random tiny weights; float64 moves sharpit by 1.4e-4
#: too). 5e-4 allows that and stays below what a reverted convention costs (> 1e-3, next test).
TOLERANCE = 5e-4


def test_latent_matches_official(fixture):
    model, inputs, expected, seed = fixture
    latent = model.encode_inputs(inputs, torch.Generator().manual_seed(seed))
    assert latent.shape == expected.shape
    assert _rel(latent, expected) <= TOLERANCE


def test_parity_detects_a_reverted_convention(fixture):
    """The fixture can fail: the point order (centres = the first points, in farthest-point order)
    and the point convolution's shuffles (drawn from the generator) both move the latent."""
    model, inputs, expected, seed = fixture
    flipped = ShapEEncoderInputs(**{k: getattr(inputs, k) for k in inputs.__dataclass_fields__})
    flipped.points = inputs.points.flip(1)
    assert _rel(model.encode_inputs(flipped, torch.Generator().manual_seed(seed)), expected) > 1e-2
    assert _rel(model.encode_inputs(inputs, torch.Generator().manual_seed(seed + 1)), expected) > 2 * TOLERANCE


def test_farthest_point_sample_matches_official():
    """``tests/fixtures/parity/shap_e_fps.safetensors`` (``scripts/parity/shap_e_fps.py``): the
    official ``PointCloud.farthest_point_sample`` from the start sharpit's generator draws."""
    from sharpit.coarse.encoder_inputs import farthest_point_sample

    with safe_open(str(FIXTURE.parent / "shap_e_fps.safetensors"), "pt") as f:
        points, start, indices = (f.get_tensor(k) for k in ("points", "start", "indices"))
        seed = int(f.metadata()["seed"])
    got = farthest_point_sample(points, len(indices), torch.Generator().manual_seed(seed + 1))
    assert int(got[0]) == int(start) and got.tolist() == indices.tolist()
