"""CLIP and DINO image-image similarity: cosine of two images' embeddings, per view.

Models load through transformers by hub id or local folder, in the released layouts:

* CLIP: :data:`DEFAULT_CLIP` (``openai/clip-vit-large-patch14``), ``CLIPVisionModelWithProjection``;
  the embedding is ``image_embeds`` (the projected CLS token), as in CLIP's own image-image
  scores. The paper does not name its CLIP variant; ViT-L/14 is the one most 3D-generation
  papers report with (an assumption, a named setting: ``--clip``).
* DINO: :data:`DEFAULT_DINO` (``facebook/dino-vitb16``), the CLS token of the last layer
  (after the final LayerNorm). The paper says "DINO" without a version; DINO v1 ViT-B/16 is the
  model of that name, the one InstantMesh's encoder starts from (so sharpit already depends on
  its layout). DINOv2 (``facebook/dinov2-base``) loads the same way (``--dino``): same CLS rule.

Preprocessing is each model's own image processor (``preprocessor_config.json``), run on the
8-bit views (:mod:`sharpit.evaluation.images`) with transformers' PIL backend, the backend of the
original CLIP/DINO preprocessing (bicubic resize and centre crop for CLIP, resize to 224 for DINO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

from ..errors import InputError
from ..sources import load_errors
from .images import quantize

__all__ = ["DEFAULT_CLIP", "DEFAULT_DINO", "ImageEmbedder", "load_clip", "load_dino", "cosine_similarity"]

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DINO = "facebook/dino-vitb16"


def _processor(source: str, what: str):
    import transformers
    from transformers import AutoImageProcessor

    # transformers 5 defaults to a torchvision backend; the PIL one is the original preprocessing.
    kwargs = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    with load_errors(source, f"{what} image processor"):
        return AutoImageProcessor.from_pretrained(source, **kwargs)


@dataclass
class ImageEmbedder:
    """A vision model and its image processor; :meth:`embed` gives unit-length embeddings.

    Attributes:
        kind: "clip" or "dino".
        source: the hub id or folder it came from.
    """

    kind: str
    source: str
    model: Any
    processor: Any
    batch_size: int = 16

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of (N, 3, H, W) images (uint8, or float in [0, 1]): (N, D) float32 on the CPU,
        each row of unit L2 norm."""
        images = quantize(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            arrays = [im.permute(1, 2, 0).cpu().numpy() for im in images[i:i + self.batch_size]]
            pixels = self.processor(images=arrays, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(device=self.device, dtype=self.model.dtype)
            output = self.model(pixel_values=pixels)
            feats = output.image_embeds if self.kind == "clip" else output.last_hidden_state[:, 0]
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def similarity(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """Per-pair cosine similarity of two aligned image sets: (N,) in [-1, 1]."""
        return cosine_similarity(self.embed(images_a), self.embed(images_b))


def cosine_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, D) embedding sets: (N,).

    Raises:
        InputError: the sets differ in shape (each view needs its reference view).
    """
    if emb_a.shape != emb_b.shape:
        raise InputError(f"similarity needs one reference per image: got {tuple(emb_a.shape)} and "
                         f"{tuple(emb_b.shape)}")
    a = torch.nn.functional.normalize(emb_a.double(), dim=-1)
    b = torch.nn.functional.normalize(emb_b.double(), dim=-1)
    return (a * b).sum(-1).float()


def load_clip(source: str = DEFAULT_CLIP, device: Union[str, torch.device] = "cpu",
              dtype: torch.dtype = torch.float32) -> ImageEmbedder:
    """CLIP's vision tower with its projection, from a hub id or a folder in the ``openai/clip-*``
    layout (``config.json`` of a ``CLIPModel`` or ``CLIPVisionModelWithProjection``,
    ``model.safetensors``, ``preprocessor_config.json``).

    Raises:
        WeightsNotFoundError, AssetNotFoundError, CheckpointError: see :func:`sharpit.sources.load_errors`.
    """
    from transformers import CLIPVisionModelWithProjection

    from transformers.utils import logging as hf_logging

    source = str(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # the checkpoint's text tower is unused by design: no load report
    try:
        with load_errors(source, "CLIP"):
            model = CLIPVisionModelWithProjection.from_pretrained(source, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    return ImageEmbedder("clip", source, model.to(device).eval(), _processor(source, "CLIP"))


def load_dino(source: str = DEFAULT_DINO, device: Union[str, torch.device] = "cpu",
              dtype: torch.dtype = torch.float32) -> ImageEmbedder:
    """A DINO ViT (``facebook/dino-*``, ``ViTModel`` without its pooler) or DINOv2
    (``facebook/dinov2-*``) from a hub id or a folder in that layout.

    Raises:
        WeightsNotFoundError, AssetNotFoundError, CheckpointError: see :func:`sharpit.sources.load_errors`.
    """
    from transformers import AutoConfig, AutoModel, ViTModel

    source = str(source)
    with load_errors(source, "DINO"):
        config = AutoConfig.from_pretrained(source)
        if config.model_type == "vit":   # DINO v1 checkpoints carry no pooler
            model = ViTModel.from_pretrained(source, add_pooling_layer=False, dtype=dtype)
        else:
            model = AutoModel.from_pretrained(source, dtype=dtype)
    if config.model_type not in ("vit", "dinov2", "dinov2_with_registers"):
        raise InputError(f"--dino {source}: a {config.model_type!r} model; pass a DINO or DINOv2 ViT "
                         f"(e.g. {DEFAULT_DINO})")
    return ImageEmbedder("dino", source, model.to(device).eval(), _processor(source, "DINO"))
