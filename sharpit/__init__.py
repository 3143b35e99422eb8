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
