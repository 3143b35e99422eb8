"""What :class:`~sharpit.pipeline.SharpIt3DPipeline` returns, and how it is saved and shown."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from diffusers.utils import BaseOutput
from PIL import Image

from .atomic import atomic_dir
from .mesh import Mesh, Similarity

__all__ = ["SharpIt3DPipelineOutput", "SharpItResult", "RESULT_FILES"]

#: Files of a saved result folder (``latent.safetensors`` only when a Shap-E latent exists).
RESULT_FILES = {
    "mesh": "mesh.glb",
    "coarse_mesh": "coarse_mesh.glb",
    "coarse_grid": "coarse_grid.png",
    "refined_grid": "refined_grid.png",
    "latent": "latent.safetensors",
    "metadata": "metadata.json",
}


def _versions() -> Dict[str, str]:
    import diffusers
    import transformers

    from . import __version__

    return {"sharpit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


@dataclass
class SharpIt3DPipelineOutput(BaseOutput):
    """One generated or edited asset (a diffusers ``BaseOutput``: fields by attribute or key,
    ``to_tuple()``).

    Attributes:
        prompt: the text prompt the refiner used.
        mesh: the final mesh; for :meth:`~sharpit.pipeline.SharpIt3DPipeline.generate` in the
            sharpit world frame at the v1.2 scale (bounding sphere radius about 0.5), for
            :meth:`~sharpit.pipeline.SharpIt3DPipeline.edit` in the input asset's frame and size.
        coarse_mesh: the coarse object, in the same frame as ``mesh``.
        coarse_grid, refined_grid: 640x960 RGB grids (six 320x320 views, 3 rows x 2 columns).
        latent: the (1, D) Shap-E latent when the coarse object came from Shap-E, else None.
        seed: the seed every stage's generator was derived from.
        parameters: every generation parameter (steps, guidance scales, strength, ...).
        models: the model ids or paths each stage was loaded from.
        timings: seconds per stage (``coarse``, ``render``, ``refine``, ``reconstruct``, the
            last including texture baking) and ``total``.
        transform: maps the normalised working frame to the output frame (identity for generate).
        source: the edited asset's path, when there is one.
    """

    prompt: str
    mesh: Mesh
    coarse_mesh: Mesh
    coarse_grid: Image.Image
    refined_grid: Image.Image
    latent: Optional[torch.Tensor]
    seed: int
    parameters: Dict[str, Any]
    models: Dict[str, str]
    timings: Dict[str, float]
    transform: Similarity = field(default_factory=Similarity.identity)
    source: Optional[str] = None

    def metadata(self) -> Dict[str, Any]:
        """Everything needed to reproduce the result, as JSON-serialisable data."""
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "source": self.source,
            "parameters": self.parameters,
            "models": self.models,
            "versions": _versions(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "output_transform": self.transform.to_matrix().tolist(),
            "mesh": {"vertices": self.mesh.num_vertices, "faces": self.mesh.num_faces,
                     "textured": self.mesh.has_texture},
            "files": {k: v for k, v in RESULT_FILES.items() if k != "latent" or self.latent is not None},
        }

    def save(self, out_dir, overwrite: bool = False) -> Path:
        """Write the result folder atomically: GLB meshes, PNG grids, the latent and metadata.

        Raises:
            OutputExistsError: when ``out_dir`` exists and ``overwrite`` is False.
            OutputNotWritableError: when ``out_dir``'s parent cannot be written.
        """
        from .coarse import save_latents
        from .mesh_io import save_mesh

        out_dir = Path(out_dir)
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            save_mesh(self.mesh, tmp / RESULT_FILES["mesh"])
            save_mesh(self.coarse_mesh, tmp / RESULT_FILES["coarse_mesh"])
            self.coarse_grid.save(tmp / RESULT_FILES["coarse_grid"])
            self.refined_grid.save(tmp / RESULT_FILES["refined_grid"])
            if self.latent is not None:
                save_latents(tmp / RESULT_FILES["latent"], self.latent,
                             {"prompt": self.prompt, "seed": self.seed, **self.parameters})
            (tmp / RESULT_FILES["metadata"]).write_text(json.dumps(self.metadata(), indent=2))
        return out_dir

    # -- notebook display ---------------------------------------------------------------
    def comparison_image(self) -> Image.Image:
        """The coarse and refined grids side by side (1280x960)."""
        canvas = Image.new("RGB", (self.coarse_grid.width * 2, self.coarse_grid.height), "white")
        canvas.paste(self.coarse_grid, (0, 0))
        canvas.paste(self.refined_grid, (self.coarse_grid.width, 0))
        return canvas

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.comparison_image().save(buf, format="PNG")
        return buf.getvalue()

    def show(self):
        """An interactive 3D view of the final mesh (trimesh's viewer; in Jupyter an HTML viewer)."""
        import tempfile

        import trimesh

        from .mesh_io import save_mesh

        with tempfile.TemporaryDirectory() as tmp:
            path = save_mesh(self.mesh, Path(tmp) / "mesh.glb")
            scene = trimesh.load(path)
        return scene.show()


#: The name of the first release; the same class.
SharpItResult = SharpIt3DPipelineOutput
