"""Colour spaces: the one definition of the sRGB transfer function in sharpit.

sharpit keeps every colour in **sRGB (display) space** in [0, 1]: ``Mesh.vertex_colors``,
``Mesh.texture``, rendered images and grids. Linear values appear only at boundaries whose
specification says so:

* glTF 2.0 (section 3.7.2.1 "Meshes", 3.9.2 "Metallic-Roughness Material"): the ``COLOR_0``
  vertex attribute and ``baseColorFactor`` are **linear**; ``baseColorTexture`` images are sRGB.
  :mod:`sharpit.mesh_io` converts with these functions when writing and reading ``.glb``/``.gltf``,
  so a save/load round trip returns the colours it was given and a viewer (Blender, three.js,
  model-viewer) shows the same colours as sharpit's renders. Official Shap-E treats its texture
  field as sRGB too and stores ``srgb_to_linear(texture)`` as the colours of the meshes it
  shades (``shap_e/models/stf/renderer.py``, ``output_srgb``), converting renders back to sRGB.
* Blender's Cycles shades in linear light: ``training/renderers.py`` hands it linear colours.

OBJ and PLY carry no colour space; by convention (and in every exporter we know) they hold display
values, so sharpit reads and writes them as sRGB unchanged.

Functions accept a ``torch.Tensor`` or a ``numpy`` array of any shape and return the same type.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["srgb_to_linear", "linear_to_srgb", "NEUTRAL_GREY"]

#: sRGB grey of surfaces that have no colour of their own: the albedo the renderer gives meshes
#: without vertex colours or texture, and the colour :mod:`sharpit.mesh_io` gives uncoloured parts
#: of a file whose other parts are coloured.
NEUTRAL_GREY = 0.7

Array = TypeVar("Array", torch.Tensor, np.ndarray)

# IEC 61966-2-1 piecewise sRGB transfer function.
_SRGB_KNEE = 0.04045
_LINEAR_KNEE = 0.0031308


def srgb_to_linear(values: Array) -> Array:
    """sRGB-encoded values in [0, 1] -> linear light in [0, 1] (values outside are clamped first)."""
    if isinstance(values, torch.Tensor):
        c = values.clamp(0.0, 1.0)
        return torch.where(c <= _SRGB_KNEE, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    out = np.where(c <= _SRGB_KNEE, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return out.astype(np.result_type(values, np.float32) if np.issubdtype(np.asarray(values).dtype, np.floating)
                      else np.float32)


def linear_to_srgb(values: Array) -> Array:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1] (values outside are clamped first)."""
    if isinstance(values, torch.Tensor):
        c = values.clamp(0.0, 1.0)
        return torch.where(c <= _LINEAR_KNEE, c * 12.92, 1.055 * c.clamp_min(_LINEAR_KNEE) ** (1 / 2.4) - 0.055)
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    out = np.where(c <= _LINEAR_KNEE, c * 12.92, 1.055 * np.maximum(c, _LINEAR_KNEE) ** (1 / 2.4) - 0.055)
    return out.astype(np.result_type(values, np.float32) if np.issubdtype(np.asarray(values).dtype, np.floating)
                      else np.float32)
