"""How a coarse Shap-E object is rendered into the refiner's input grid: one option, one default.

:class:`CoarseRenderOptions` is the single setting shared by everything that renders coarse views:
:meth:`~sharpit.coarse.ShapEGenerator.render_views`, :class:`~sharpit.pipeline.SharpIt3DPipeline`
(``generate``/``edit``, recorded in results' metadata under ``parameters["coarse_render"]``), the
inference CLIs (``--coarse-render-mode``, ``--coarse-supersample``) and
``training/prepare_pairs.py`` (``--coarse_mode``, ``--coarse_supersample``). The refiner only
works as trained when inference renders coarse views the way its training pairs were rendered, so
there is one default, :data:`DEFAULT_COARSE_RENDER`.

Evidence for the default (``mode="mesh"``, ``supersample=2``):

* The paper: a training pair's coarse input is the object passed through Shap-E's encoder and
  decoder, then rendered at the six Zero123++ views. It does not say which decoder output (the
  STF mesh or the NeRF) nor which renderer.
* The author's pair-making script (``generation/latent_to_3d.py`` in github.com/YiftachEde/shap-d-edit,
  which reads Cap3D latents) decodes every latent with Shap-E's ``decode_latent_mesh`` (the STF
  mesh: marching cubes of the signed-distance field, vertex colours from the texture field),
  writes it as an OBJ and renders that mesh with Blender (a ``render_blender`` tool) at 512 x 512
  at azimuths 30..330 and elevations 20/-10. The same author's notebooks render latents at custom
  cameras (azimuth - 90 degrees, :data:`~sharpit.cameras.SHAP_E_AZIMUTH_OFFSET_DEG`) with Shap-E's
  ``rendering_mode="stf"``, again the mesh, at 512 px; NeRF renders appear only in turntable
  previews (pan cameras). Hence ``mode="mesh"``. Both modes place the object identically
  (:meth:`~sharpit.coarse.ShapEGenerator.framing`, which includes that azimuth offset).
* Anti-aliasing: Blender's renders filter every pixel over several samples, and both paths
  rendered 512 px views for 320 px tiles, so the coarse grids the refiner saw had smooth
  silhouettes and colour edges, not the stair-stepped edges of one sample per pixel.
  ``supersample=2`` (render at twice the size, average 2 x 2 blocks) is the nearest cheap
  equivalent.

Unknown (the tool and its settings are not published): the lighting of ``render_blender`` (the
notebooks' STF renders use Shap-E's fixed "basic" light, ambient 0.3 plus diffuse 0.7; sharpit's
mesh mode renders the vertex colours unlit), whether that Blender version imported the OBJ's vertex
colours, its pixel filter, and the filter that took 512 px to 320 px.

Anti-aliasing in ``"nerf"`` mode means the same box filter: the volume renderer casts one ray
through each sub-pixel of a ``supersample``-times larger view and each ``supersample x
supersample`` block is averaged (colour and opacity; depth weighted by opacity). It costs
``supersample**2`` times the rays.

A mesh asset (no Shap-E latent) can only be rendered in ``"mesh"`` mode; asking for ``"nerf"``
there is an error (:meth:`CoarseRenderOptions.check_source`), not a silent fallback, so the
recorded options always describe the grid the refiner actually received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from ..errors import InputError

__all__ = ["CoarseRenderOptions", "DEFAULT_COARSE_RENDER", "COARSE_RENDER_MODES"]

#: Render modes of a coarse Shap-E object: "mesh" rasterises its STF mesh (vertex colours, unlit);
#: "nerf" volume-renders the latent's NeRF.
COARSE_RENDER_MODES = ("mesh", "nerf")


@dataclass(frozen=True)
class CoarseRenderOptions:
    """How coarse views are rendered (see the module docstring for the evidence behind the defaults).

    Attributes:
        mode: "mesh" (the STF mesh of :meth:`~sharpit.coarse.ShapEGenerator.to_mesh`, rasterised
            with its vertex colours, unlit) or "nerf" (the latent's NeRF, volume-rendered).
        supersample: anti-aliasing factor, an integer >= 1: each view is rendered at
            ``supersample`` times its side and box-filtered down (1 turns anti-aliasing off).
    Raises:
        InputError: an unknown mode or a supersample that is not a positive integer.
    """

    mode: str = "mesh"
    supersample: int = 2

    def __post_init__(self) -> None:
        if self.mode not in COARSE_RENDER_MODES:
            raise InputError(f"coarse render mode must be one of {COARSE_RENDER_MODES}, got {self.mode!r}")
        if isinstance(self.supersample, bool) or not isinstance(self.supersample, int) or self.supersample < 1:
            raise InputError(f"coarse render supersample must be an integer >= 1 (1 = no anti-aliasing), "
                             f"got {self.supersample!r}")

    def to_dict(self) -> Dict[str, Any]:
        """The options as JSON-serialisable data (as recorded in results' metadata)."""
        return {"mode": self.mode, "supersample": self.supersample}

    def check_source(self, has_latent: bool) -> None:
        """Raise :class:`InputError` when these options cannot render a coarse object that has
        (``has_latent``) or lacks a Shap-E latent: "nerf" mode volume-renders the latent."""
        if self.mode == "nerf" and not has_latent:
            raise InputError("coarse render mode 'nerf' volume-renders a Shap-E latent, and a mesh asset has "
                             "none; use mode 'mesh' (--coarse-render-mode mesh) or pass a saved latent")


#: The one default for coarse renders, everywhere (mesh mode, 2x supersampling).
DEFAULT_COARSE_RENDER = CoarseRenderOptions()
