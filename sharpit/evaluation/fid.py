"""Fréchet Inception Distance (FID) between two sets of images, with torch-fidelity's Inception.

Implementation choice (issue 12): **torch-fidelity** (``torch_fidelity.feature_extractor_inceptionv3``,
the extractor torchmetrics' ``FrechetInceptionDistance`` also wraps), not clean-fid, because

* it is a PyTorch re-implementation of the TensorFlow Inception graph of the original FID
  (Heusel et al. 2017, ``pt_inception-2015-12-05``) whose outputs torch-fidelity validates
  against the TTUR reference code, and its constructor takes a local weights file
  (``feature_extractor_weights_path``), so a machine without internet points at the file;
* its architecture is ordinary ``nn.Module`` code, so tests and benchmarks build the *same*
  network with random weights (:func:`sharpit.testing.evaluation.save_random_inception`, saved in
  the released file's layout) and run the real code path. clean-fid's default ("clean") mode runs
  NVIDIA's TorchScript export of the graph, which cannot be rebuilt with other weights.

Protocol (torch-fidelity's, which is the original TF protocol):

* images are quantised to 8 bits (uint8, :func:`sharpit.evaluation.images.quantize`: the rounding
  a saved PNG has), RGB, any size;
* inside the extractor: bilinear resize to 299x299 exactly as TF1's ``tf.image.resize_bilinear``
  (``align_corners=False``, no antialiasing; torch-fidelity's
  ``interpolate_bilinear_2d_like_tensorflow1x``), then ``(x - 128) / 128``;
* features: the 2048-d pool3 layer (feature ``"2048"``);
* distance: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`` with sample covariances
  (``np.cov``), as torch-fidelity's ``fid_statistics_to_metric``. torch-fidelity takes
  ``tr sqrt(S1 S2)`` as ``sum(sqrt(eigvals(S1 @ S2)).real)``, a general eigen-decomposition of a
  2048x2048 matrix (18 s on a busy 2-core CPU). The same number comes from symmetric problems
  (:func:`trace_sqrt_product`): with ``A1``, ``A2`` the centred feature rows, ``S1 S2`` has the
  non-zero eigenvalues of ``M^T M / ((n1 - 1)(n2 - 1))`` for ``M = A1 A2^T``, so the trace is the
  nuclear norm of ``M`` over ``sqrt((n1 - 1)(n2 - 1))`` (used when ``n1 + n2 <= 2048``); otherwise
  ``sum(sqrt(eigvalsh(R S2 R)))`` with ``R = S1^(1/2)`` (two ``eigh``). Both agree with
  torch-fidelity's formula to ~1e-7 relative (tested); everything is float64 (torch-fidelity
  takes the means in float32).

torchmetrics' wrapper is not used: since torchmetrics 1.x it resizes with ``antialias=True`` by
default, which is not the published protocol.

Weights: ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's release,
:data:`INCEPTION_URL`). Pass its path, or leave it in torch's hub cache
(``$TORCH_HOME/hub/checkpoints/``) where torch-fidelity itself would download it; nothing is
downloaded here (:func:`inception_weights_path`: a missing default file is a
:class:`~sharpit.errors.WeightsFileNotFoundError`, exit code 3 of the command line).

Loading note: torch-fidelity's package ``__init__`` imports torchvision (for its CIFAR/STL data
sets and CLIP/DINOv2 extractors), which a CPU-only torch cannot always import (PyPI's torchvision
wheels are CUDA builds). FID needs none of that: :func:`inception_class` imports the Inception
module and the three torch-only modules it uses (``feature_extractor_base``, ``helpers``,
``interpolate_compat_tensorflow``) without running the package ``__init__``. The class is
torch-fidelity's own, unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..errors import AssetNotFoundError, CheckpointError, ConfigError, InputError, WeightsFileNotFoundError
from .images import quantize

__all__ = ["INCEPTION_URL", "INCEPTION_FILE", "FID_FEATURE", "inception_class", "default_inception_weights",
           "inception_weights_path", "load_inception", "inception_features", "trace_sqrt_product", "frechet_distance", "fid"]

#: torch-fidelity's Inception weights (the TF FID graph's, converted).
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
#: The feature layer of FID: pool3, 2048-d.
FID_FEATURE = "2048"
_MODULE = "torch_fidelity.feature_extractor_inceptionv3"


def require_torch_fidelity():
    """torch-fidelity's package spec, found without importing it (a check before any model loads).

    Raises:
        ConfigError: torch-fidelity is not installed; says how to install it without torchvision.
    """
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("FID needs torch-fidelity: pip install --no-deps 'torch-fidelity>=0.3' (--no-deps: its "
                          "torchvision requirement is not used and its wheels would replace a CPU torch; "
                          "scripts/setup.sh installs it so), or leave fid out with --metrics")
    return spec


def inception_class():
    """torch-fidelity's ``FeatureExtractorInceptionV3`` class (see the module docstring for how it
    is imported without torchvision).

    Raises:
        ConfigError: torch-fidelity is not installed (:func:`require_torch_fidelity`).
    """
    if _MODULE in sys.modules:
        return sys.modules[_MODULE].FeatureExtractorInceptionV3
    spec = require_torch_fidelity()
    placed = "torch_fidelity" not in sys.modules
    if placed:  # the package without its __init__: only the submodules imported below run
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torch_fidelity"] = package
    try:
        return importlib.import_module(_MODULE).FeatureExtractorInceptionV3
    finally:
        if placed:  # a later `import torch_fidelity` runs the real __init__ (reusing these submodules)
            del sys.modules["torch_fidelity"]


def default_inception_weights() -> Path:
    """Where torch-fidelity keeps its downloaded Inception weights: ``<torch hub dir>/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights_path(weights: Union[str, Path, None] = None, flag: str = "--inception-weights") -> Path:
    """The Inception weights file to load: ``weights`` when given, else :func:`default_inception_weights`.

    Raises:
        AssetNotFoundError: ``weights`` does not exist. InputError: ``weights`` is a folder.
        WeightsFileNotFoundError: no ``weights`` and nothing at the default place (how to get the
            file, and that ``flag`` takes its path).
    """
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise AssetNotFoundError(path, f"{flag}: no such file; pass torch-fidelity's {INCEPTION_FILE} "
                                           f"(download {INCEPTION_URL})")
        if not path.is_file():
            raise InputError(f"{flag} {path} is a folder; pass the file {INCEPTION_FILE}")
        return path
    path = default_inception_weights()
    if not path.is_file():
        raise WeightsFileNotFoundError(INCEPTION_FILE, f"FID needs torch-fidelity's Inception weights: download "
                                                       f"{INCEPTION_URL} and pass it with {flag} FILE (or put it at "
                                                       f"{path}).")
    return path


def load_inception(weights: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu"):
    """torch-fidelity's InceptionV3 feature extractor (pool3 features), in eval mode on ``device``.

    Args:
        weights: a local ``.pth`` state dict in torch-fidelity's layout; None uses
            :func:`default_inception_weights`.
    Raises:
        AssetNotFoundError, InputError, WeightsFileNotFoundError: see :func:`inception_weights_path`.
        CheckpointError: a file that is not a plain tensor state dict of this network.
    """
    path = inception_weights_path(weights)
    # torch-fidelity reads the file with torch.load(weights_only=False). Read it first with the
    # restricted unpickler: a file it accepts names only tensor-rebuild globals, so the second
    # read can execute nothing else.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        raise CheckpointError(path, f"not a PyTorch state dict of tensors ({type(exc).__name__}); pass "
                                    f"{INCEPTION_FILE}") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise CheckpointError(path, f"not torch-fidelity's Inception state dict; pass {INCEPTION_FILE}")
    del state
    cls = inception_class()
    try:
        model = cls("inception-v3-compat", [FID_FEATURE], feature_extractor_weights_path=str(path))
    except RuntimeError as exc:
        raise CheckpointError(path, f"does not fit torch-fidelity's InceptionV3: {str(exc).splitlines()[0]}") from None
    return model.to(device)


@torch.no_grad()
def inception_features(model, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Pool3 features of ``images``.

    Args:
        model: from :func:`load_inception`.
        images: (N, 3, H, W) uint8, or float in [0, 1] (quantised first).
    Returns:
        (N, 2048) float64 on the CPU.
    """
    images = quantize(images)
    device = next(model.parameters()).device
    out = [model(images[i:i + batch_size].to(device))[0].double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 2048, dtype=torch.float64)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID between two feature sets (rows are samples), by torch-fidelity's formula in float64.

    Raises:
        ConfigError: fewer than two samples in a set, or different feature sizes.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"FID needs two (N, D) feature sets of the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ConfigError(f"FID needs at least two images per set, got {len(a)} and {len(b)}")
    diff = a.mean(0) - b.mean(0)
    # tr(S) of a sample covariance is the summed squared deviation over n - 1
    tr1 = float(((a - a.mean(0)) ** 2).sum() / (len(a) - 1))
    tr2 = float(((b - b.mean(0)) ** 2).sum() / (len(b) - 1))
    return float(diff.dot(diff) + tr1 + tr2 - 2 * trace_sqrt_product(a, b))


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """``tr sqrt(S_a S_b)`` of the sample covariances of feature rows ``a`` (n1, D) and ``b`` (n2, D),
    by symmetric eigen-problems (module docstring)."""
    a1, b1 = a - a.mean(0), b - b.mean(0)
    if len(a) + len(b) <= a.shape[1]:
        singular = np.linalg.svd(a1 @ b1.T, compute_uv=False)
        return float(singular.sum() / np.sqrt((len(a) - 1) * (len(b) - 1)))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum())


def fid(images_a: torch.Tensor, images_b: torch.Tensor, model, batch_size: int = 16) -> float:
    """FID between two image sets ((N, 3, H, W) uint8 or float in [0, 1]) with ``model``
    (:func:`load_inception`). The paper's protocol compares every view of every test object
    with the ground-truth renders of the same objects."""
    return frechet_distance(inception_features(model, images_a, batch_size),
                            inception_features(model, images_b, batch_size))
