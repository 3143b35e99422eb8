"""sharpit: text or a rough 3D asset to a detailed textured mesh (Sharp-It as a library)."""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AssetNotFoundError,
    CheckpointError,
    ConfigError,
    CorruptFileError,
    EmptySurfaceError,
    InputError,
    MeshError,
    OutputExistsError,
    OutputNotWritableError,
    SharpItError,
    UnsupportedFormatError,
    WeightsNotFoundError,
)

__all__ = [
    "AssetNotFoundError", "CheckpointError", "ConfigError", "CorruptFileError", "EmptySurfaceError",
    "InputError", "MeshError", "OutputExistsError", "OutputNotWritableError", "SharpItError",
    "UnsupportedFormatError", "WeightsNotFoundError",
    "SharpIt3DPipeline", "SharpItResult", "Mesh", "load_mesh", "save_mesh", "zero123plus_cameras",
    "render_views", "ShapEGenerator", "SharpItRefinePipeline", "InstantMeshReconstructor", "GenerationOptions",
    "SharpIt3DPipelineOutput", "ShapEEncoder",
]

_LAZY = {
    "SharpIt3DPipeline": ("sharpit.pipeline", "SharpIt3DPipeline"),
    "SharpItResult": ("sharpit.result", "SharpItResult"),
    "Mesh": ("sharpit.mesh", "Mesh"),
    "load_mesh": ("sharpit.mesh_io", "load_mesh"),
    "save_mesh": ("sharpit.mesh_io", "save_mesh"),
    "zero123plus_cameras": ("sharpit.cameras", "zero123plus_cameras"),
    "render_views": ("sharpit.render", "render_views"),
    "ShapEGenerator": ("sharpit.coarse", "ShapEGenerator"),
    "ShapEEncoder": ("sharpit.coarse", "ShapEEncoder"),
    "SharpItRefinePipeline": ("sharpit.refine", "SharpItRefinePipeline"),
    "SharpItPipeline": ("sharpit.refine", "SharpItPipeline"),   # deprecated: warns
    "GenerationOptions": ("sharpit.options", "GenerationOptions"),
    "SharpIt3DPipelineOutput": ("sharpit.result", "SharpIt3DPipelineOutput"),
    "InstantMeshReconstructor": ("sharpit.reconstruct", "InstantMeshReconstructor"),
}


def __getattr__(name):
    """Import the heavy parts (diffusers, transformers) only when first used."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        if name == "SharpItPipeline":
            return value   # a deprecated alias warns on every access, so it is not cached
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sharpit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
