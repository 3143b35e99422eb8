"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), per view, without torchvision.

The metric of the ``lpips`` package v0.1 (``lpips.LPIPS(net="alex")``, its default; ``net="vgg"``
also), written here because that package imports torchvision for its trunks, and PyPI's
torchvision wheels are CUDA builds that a CPU-only torch cannot import. For two images in
[-1, 1]:

1. ``x' = (x - shift) / scale`` per channel (the package's ``ScalingLayer``: :data:`SHIFT`,
   :data:`SCALE`, ImageNet statistics moved to [-1, 1]);
2. the trunk's ReLU outputs at five fixed layers (AlexNet relu1..relu5; VGG16 relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3: :data:`NETS`), each unit-normalised over channels at every pixel
   (``f / (|f| + 1e-10)``);
3. per layer, the squared difference of the two normalised features, weighted per channel by the
   learned 1x1 linear layer (no bias), averaged over the pixels; the sum over the five layers.

Weights, in their released files (nothing is downloaded here):

* the trunk: torchvision's ImageNet classifiers, ``alexnet-owt-7be5be79.pth`` /
  ``vgg16-397923af.pth`` (:attr:`Trunk.file`), which torchvision keeps in torch's hub cache
  (``$TORCH_HOME/hub/checkpoints/``). :class:`LPIPSTrunk` has the parameter names of
  torchvision's ``alexnet().features`` / ``vgg16().features``, so the ``features.*`` part of
  those files loads with no missing or unexpected key (the classifier is not used);
* the linear layers: ``lpips/weights/v0.1/<net>.pth`` (keys ``lin<k>.model.1.weight``), shipped
  inside the ``lpips`` pip package; ``pip install lpips --no-deps`` puts them on disk without
  torchvision, and :func:`bundled_linear_path` finds them without importing the package.

``--lpips-weights DIR`` (:func:`lpips_weight_files`) is a folder holding either file or both; a
file not there is taken from its default place above.

Parity: ``tests/test_parity_lpips.py`` compares with the official package on a random trunk and
its real v0.1 linear layers (fixture from ``scripts/parity/lpips_metric.py``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import AssetNotFoundError, CheckpointError, InputError, WeightsFileNotFoundError
from .images import quantize

__all__ = ["SHIFT", "SCALE", "EPS", "LPIPS_VERSION", "NETS", "DEFAULT_NET", "Trunk", "LPIPSTrunk", "LPIPS",
           "default_trunk_path", "bundled_linear_path", "lpips_weight_files", "load_lpips", "LPIPSReference",
           "lpips_reference", "lpips_distance"]

#: The package's ScalingLayer: ``(x - SHIFT) / SCALE`` on inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: The package's ``normalize_tensor`` epsilon (added to the channel norm).
EPS = 1e-10
#: Version of the linear layers (the package's default and latest; v0.0 fed unscaled inputs).
LPIPS_VERSION = "0.1"
DEFAULT_NET = "alex"


@dataclass(frozen=True)
class Trunk:
    """A torchvision ``features`` stack, as far as LPIPS reads it.

    Attributes:
        layers: per index of torchvision's ``features``: ``("conv", in, out, kernel, stride,
            padding)``, ``("relu",)`` or ``("pool", kernel, stride)``.
        taps: the indices of the ReLUs whose outputs LPIPS compares.
        file: torchvision's released weights file; ``url`` where it is published.
    """

    layers: Tuple[tuple, ...]
    taps: Tuple[int, ...]
    file: str
    url: str

    @property
    def channels(self) -> Tuple[int, ...]:
        """Channels of each tapped layer (the width of its linear layer)."""
        out, width = [], 3
        for i, layer in enumerate(self.layers):
            if layer[0] == "conv":
                width = layer[2]
            if i in self.taps:
                out.append(width)
        return tuple(out)


def _vgg16_layers() -> Tuple[tuple, ...]:
    layers, width = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(("pool", 2, 2))
        else:
            layers += [("conv", width, v, 3, 1, 1), ("relu",)]
            width = v
    return tuple(layers)


#: The trunks of ``lpips.pretrained_networks``: torchvision's AlexNet (features 0-11) and VGG16
#: (features 0-29), tapped after each ReLU named in the module docstring.
NETS = {
    "alex": Trunk(layers=(("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",),
                          ("pool", 3, 2), ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1),
                          ("relu",), ("conv", 256, 256, 3, 1, 1), ("relu",)),
                  taps=(1, 4, 7, 9, 11), file="alexnet-owt-7be5be79.pth",
                  url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": Trunk(layers=_vgg16_layers(), taps=(3, 8, 15, 22, 29), file="vgg16-397923af.pth",
                 url="https://download.pytorch.org/models/vgg16-397923af.pth"),
}
_LINEAR_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth"


def _net(net: str) -> Trunk:
    if net not in NETS:
        raise InputError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
    return NETS[net]


class LPIPSTrunk(nn.Sequential):
    """Torchvision's ``features`` up to the last tapped ReLU, with its module indices (so its
    ``state_dict`` keys are torchvision's: ``0.weight``, ``3.weight``, ...). ReLUs are not in-place."""

    def __init__(self, net: str = DEFAULT_NET):
        spec = _net(net)
        modules = []
        for layer in spec.layers:
            if layer[0] == "conv":
                _, cin, cout, k, s, p = layer
                modules.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif layer[0] == "relu":
                modules.append(nn.ReLU())
            else:
                modules.append(nn.MaxPool2d(layer[1], layer[2]))
        super().__init__(*modules)
        self.taps = spec.taps

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, H, W) scaled input -> the five tapped (N, C_k, H_k, W_k) activations."""
        out = []
        for i, module in enumerate(self):
            x = module(x)
            if i in self.taps:
                out.append(x)
        return out


def _unit(features: torch.Tensor) -> torch.Tensor:
    """Unit-normalise over channels at every pixel (the package's ``normalize_tensor``)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """The LPIPS distance: a trunk, five 1x1 linear layers and the input scaling (module docstring).

    ``forward(a, b)`` takes (N, 3, H, W) float in [-1, 1] (H, W at least 32 for AlexNet's
    pooling) and returns (N,) distances >= 0 (0 for identical images), or with ``per_layer=True``
    also the (N, 5) per-layer terms whose sum is the distance.
    """

    def __init__(self, net: str = DEFAULT_NET):
        super().__init__()
        self.net = net
        self.trunk = LPIPSTrunk(net)
        self.linear = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _net(net).channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] -> the five unit-normalised tapped features (N, C_k, H_k, W_k)."""
        return [_unit(f) for f in self.trunk((x - self.shift) / self.scale)]

    def compare(self, feats_a: List[torch.Tensor], feats_b: List[torch.Tensor], per_layer: bool = False):
        """Distances of two feature sets from :meth:`features` (see the class docstring)."""
        terms = torch.stack([lin((fa - fb) ** 2).mean(dim=(2, 3))[:, 0]
                             for lin, fa, fb in zip(self.linear, feats_a, feats_b)], dim=1)
        distance = terms.sum(dim=1)
        return (distance, terms) if per_layer else distance

    def forward(self, a: torch.Tensor, b: torch.Tensor, per_layer: bool = False):
        return self.compare(self.features(a), self.features(b), per_layer)


def default_trunk_path(net: str = DEFAULT_NET) -> Path:
    """Where torchvision keeps the trunk's released weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _net(net).file


def bundled_linear_path(net: str = DEFAULT_NET) -> Optional[Path]:
    """``lpips/weights/v0.1/<net>.pth`` inside an installed ``lpips`` package (found without
    importing it, so ``pip install lpips --no-deps`` is enough), or None when it is not installed."""
    _net(net)
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"


def lpips_weight_files(net: str = DEFAULT_NET, weights: Union[str, Path, None] = None,
                       flag: str = "--lpips-weights") -> Tuple[Path, Path]:
    """``(trunk file, linear-layers file)`` of ``net``: each from the folder ``weights`` when it
    holds it, else from its default place (:func:`default_trunk_path`, :func:`bundled_linear_path`).

    Raises:
        AssetNotFoundError: ``weights`` does not exist. InputError: ``weights`` is a file.
        WeightsFileNotFoundError: a file is in neither place (the message says where to download
            it and that ``flag`` takes the folder).
    """
    spec = _net(net)
    folder = None
    if weights is not None:
        folder = Path(weights)
        if not folder.exists():
            raise AssetNotFoundError(folder, f"{flag}: no such folder; pass the folder holding {spec.file} "
                                             f"and {net}.pth")
        if not folder.is_dir():
            raise InputError(f"{flag} {folder} is a file; pass the folder holding {spec.file} and {net}.pth")
    trunk = folder / spec.file if folder is not None and (folder / spec.file).is_file() else default_trunk_path(net)
    linear = folder / f"{net}.pth" if folder is not None and (folder / f"{net}.pth").is_file() \
        else bundled_linear_path(net)
    missing = []
    if not trunk.is_file():
        missing.append(f"{spec.file} (torchvision's {net} trunk: {spec.url})")
    if linear is None or not linear.is_file():
        missing.append(f"{net}.pth (the lpips v{LPIPS_VERSION} linear layers, shipped in the lpips pip package: "
                       f"`pip install lpips --no-deps`, or {_LINEAR_URL.format(net=net)})")
    if missing:
        where = f"{folder}, " if folder is not None else ""
        raise WeightsFileNotFoundError(
            " and ".join(m.split(" ", 1)[0] for m in missing),
            f"LPIPS ({net}) needs {' and '.join(missing)}; looked in {where}{default_trunk_path(net).parent} and the "
            f"lpips package. Put the files in a folder and pass {flag} DIR.")
    return trunk, linear


def _read_state(path: Path, what: str) -> dict:
    try:   # the lpips files were saved from a GPU: map to the CPU; never unpickle anything but tensors
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        raise CheckpointError(path, f"not a PyTorch state dict of tensors ({type(exc).__name__}); pass {what}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, f"not a state dict of tensors; pass {what}")
    return state


def _load_trunk(model: LPIPS, path: Path) -> None:
    spec = _net(model.net)
    state = _read_state(path, spec.file)
    if any(k.startswith("features.") for k in state):   # the released classifier: keep its trunk
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    expected = set(model.trunk.state_dict())
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(path, f"not torchvision's {model.net} weights (missing {missing[:3]}, unexpected "
                                    f"{unexpected[:3]}); pass {spec.file}")
    try:
        model.trunk.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(path, f"does not fit torchvision's {model.net} trunk: {str(exc).splitlines()[-1].strip()}; "
                                    f"pass {spec.file}") from None


def _load_linear(model: LPIPS, path: Path) -> None:
    state = _read_state(path, f"lpips' weights/v{LPIPS_VERSION}/{model.net}.pth")
    for k, (lin, channels) in enumerate(zip(model.linear, _net(model.net).channels)):
        weight = state.get(f"lin{k}.model.1.weight")
        if weight is None or tuple(weight.shape) != (1, channels, 1, 1):
            got = None if weight is None else tuple(weight.shape)
            raise CheckpointError(path, f"not lpips' v{LPIPS_VERSION} {model.net} linear layers (lin{k}.model.1.weight "
                                        f"is {got}, expected (1, {channels}, 1, 1)); pass lpips/weights/"
                                        f"v{LPIPS_VERSION}/{model.net}.pth")
        with torch.no_grad():
            lin.weight.copy_(weight)


def load_lpips(net: str = DEFAULT_NET, weights: Union[str, Path, None] = None,
               device: Union[str, torch.device] = "cpu") -> LPIPS:
    """LPIPS v0.1 with ``net``'s released weights (:func:`lpips_weight_files`), in eval mode on ``device``.

    Raises:
        AssetNotFoundError, InputError, WeightsFileNotFoundError: see :func:`lpips_weight_files`.
        CheckpointError: a file that is not the expected state dict.
    """
    trunk, linear = lpips_weight_files(net, weights)
    model = LPIPS(net)
    _load_trunk(model, trunk)
    _load_linear(model, linear)
    return model.eval().requires_grad_(False).to(device)


@dataclass
class LPIPSReference:
    """The reference views of :func:`lpips_distance`, their features computed once (a run compares
    every method with the same ground-truth views): ``shape`` (N, 3, H, W) of the views,
    ``features`` the five tapped, unit-normalised (N, C_k, H_k, W_k) tensors."""

    shape: Tuple[int, ...]
    features: List[torch.Tensor]


def _as_input(model: LPIPS, images: torch.Tensor) -> torch.Tensor:
    """8-bit views to the model's [-1, 1] input, as the package's ``im2tensor`` (``x / 127.5 - 1``)."""
    return images.to(device=model.shift.device, dtype=model.shift.dtype) / 127.5 - 1


def _views(images: torch.Tensor, name: str) -> torch.Tensor:
    x = quantize(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"LPIPS {name} must be (N, 3, H, W) RGB views, got {tuple(x.shape)}")
    if min(x.shape[2:]) < 32:
        raise InputError(f"LPIPS needs views of at least 32x32 pixels, got {x.shape[2]}x{x.shape[3]}")
    return x


@torch.no_grad()
def lpips_reference(model: LPIPS, reference: torch.Tensor, batch_size: int = 6) -> LPIPSReference:
    """The features of reference views ((N, 3, H, W) uint8, or float in [0, 1]) for :func:`lpips_distance`."""
    x = _views(reference, "references")
    feats = [model.features(_as_input(model, x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return LPIPSReference(tuple(x.shape), [torch.cat(layer) for layer in zip(*feats)])


@torch.no_grad()
def lpips_distance(model: LPIPS, images: torch.Tensor, reference: Union[torch.Tensor, LPIPSReference],
                   batch_size: int = 6) -> List[float]:
    """LPIPS of each view against its reference: N floats >= 0 (lower is closer).

    Args:
        images: (N, 3, H, W) uint8, or float in [0, 1] (quantised to 8 bits first, like every
            image metric here), converted to [-1, 1] as the package's ``im2tensor``.
        reference: the N reference views in the same form, or their :func:`lpips_reference`.
    Raises:
        InputError: views and references of different shapes, or views smaller than 32x32.
    """
    x = _views(images, "views")
    if not isinstance(reference, LPIPSReference):
        reference = lpips_reference(model, reference, batch_size)
    if tuple(x.shape) != reference.shape:
        raise InputError(f"LPIPS needs views and references of the same (N, 3, H, W) shape, got {tuple(x.shape)} "
                         f"and {reference.shape}")
    out: List[float] = []
    for i in range(0, len(x), batch_size):
        ref = [f[i:i + batch_size] for f in reference.features]
        out += model.compare(model.features(_as_input(model, x[i:i + batch_size])), ref).float().cpu().tolist()
    return out
