"""Golden LPIPS distances from the official ``lpips`` package (v0.1 linear layers) on a random backbone.

Runs the ``lpips`` pip package (Zhang et al. 2018, github.com/richzhang/PerceptualSimilarity; nothing
of it is stored) in a scratch environment where torchvision imports, e.g.::

    python -m venv /work/scratch/lpips_venv
    /work/scratch/lpips_venv/bin/pip install torch==2.13.0 torchvision==0.28.0 lpips scipy safetensors
    /work/scratch/lpips_venv/bin/python scripts/parity/lpips_metric.py --out tests/fixtures/parity

(``--official-root`` is accepted for ``make_parity_fixtures.py`` and unused: the official code is
the installed package.)

What it runs, for ``net`` in alex and vgg: ``lpips.LPIPS(net=net, pretrained=True, pnet_rand=True)``
(the package's learned v0.1 linear layers, shipped inside it as ``lpips/weights/v0.1/<net>.pth``;
a randomly initialised torchvision trunk), then EVERY trunk weight redrawn by :func:`backbone`'s
rule so that the test can rebuild the same trunk from the seed instead of storing 10 MB (AlexNet)
or 59 MB (VGG16) of weights. The distances ``model(a, b, retPerLayer=True)`` are taken in eval mode
on 8-bit image pairs converted by the package's own ``lpips.im2tensor`` (``x / 127.5 - 1``): smooth
random images, a slightly noised copy, an unrelated image and an identical pair, at 64x64 and at a
non-square 80x112.

Stored in ``lpips_<net>.safetensors``: the linear layers under the package's names
(``lin<k>.model.1.weight``), ``backbone_check.<key>`` (float64 sum and sum of squares of each trunk
tensor, under torchvision's ``features`` names, so the test proves it rebuilt the same trunk),
the inputs (uint8), the distances (``output.<size>``, (N,)) and the per-layer terms
(``output_layers.<size>``, (N, 5)); the seed and rule in the metadata.
"""

from __future__ import annotations

import argparse
import math
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

SEED = 2018
SIZES = {"64": (64, 64), "80x112": (80, 112)}
#: The construction rule of the trunk (also :func:`sharpit.testing.evaluation.random_lpips_backbone`).
RULE = ("torch.Generator().manual_seed(seed); for each key of torchvision's <net>().features.state_dict() "
        "in order: weight = randn(shape) * sqrt(2 / fan_in), bias = randn(shape) * 0.1")


def backbone(features: torch.nn.Module, seed: int) -> dict:
    """The trunk's state dict under torchvision's ``features`` names, redrawn by :data:`RULE`."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in features.state_dict().items():
        if key.endswith("weight"):
            fan_in = math.prod(value.shape[1:])
            out[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.1
    return out


def _pairs(size, seed):
    """(a, b) uint8 (4, H, W, 3): b = a slightly noised, an unrelated image, a itself, a brighter a."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size

    def smooth(n):
        base = torch.rand(n, 3, h // 8, w // 8, generator=gen)
        return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)

    a = smooth(4)
    b = a.clone()
    b[0] = (a[0] + 0.05 * torch.randn(a[0].shape, generator=gen)).clamp(0, 1)
    b[1] = smooth(1)[0]
    b[3] = (a[3] * 1.2 + 0.05).clamp(0, 1)
    to8 = lambda x: (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # noqa: E731
    return to8(a), to8(b)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, default=None, help="unused (the official code is the package)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import lpips
    import torchvision
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    for net, tv_net in (("alex", torchvision.models.alexnet), ("vgg", torchvision.models.vgg16)):
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
        trunk = backbone(tv_net().features, SEED)
        # lpips keeps torchvision's modules in slices under their original indices: net.slice<s>.<i>.*
        own = {name: name.split(".", 1)[1] for name in model.net.state_dict()}
        assert set(own.values()) == set(trunk), sorted(set(trunk) ^ set(own.values()))
        model.net.load_state_dict({name: trunk[key] for name, key in own.items()})
        tensors = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("lin") and not k.startswith("lins")}
        for key in own.values():
            t = trunk[key].double()
            tensors[f"backbone_check.{key}"] = torch.stack([t.sum(), (t * t).sum()])
        for name, size in SIZES.items():
            a, b = _pairs(size, SEED + len(name))
            tensors[f"input.a.{name}"], tensors[f"input.b.{name}"] = a, b
            with torch.no_grad():
                ta = torch.cat([lpips.im2tensor(x.numpy()) for x in a])
                tb = torch.cat([lpips.im2tensor(x.numpy()) for x in b])
                value, layers = model(ta, tb, retPerLayer=True)
            tensors[f"output.{name}"] = value.flatten().float()
            tensors[f"output_layers.{name}"] = torch.stack([r.flatten() for r in layers], 1).float()
            print(f"[lpips] {net} {name}: {value.flatten().tolist()}", flush=True)
        meta = {"net": net, "seed": str(SEED), "rule": RULE, "lpips": version("lpips"),
                "torchvision": torchvision.__version__, "torch": torch.__version__, "numpy": np.__version__}
        save_file(tensors, str(args.out / f"lpips_{net}.safetensors"), metadata=meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
