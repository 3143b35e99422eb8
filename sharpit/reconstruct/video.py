"""Turntable videos: MP4 (imageio-ffmpeg, H.264) or GIF (Pillow), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_path
from ..errors import InputError, OutputExistsError, OutputNotWritableError, UnsupportedFormatError

__all__ = ["write_video", "VIDEO_FORMATS"]

VIDEO_FORMATS = (".mp4", ".gif")

Frames = Union[torch.Tensor, np.ndarray, Sequence[Image.Image]]


def _to_uint8(frames: Frames) -> np.ndarray:
    """Frames -> (N, H, W, 3) uint8."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise InputError("no frames to write")
        arr = np.stack([np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f)
                        for f in frames])
    elif isinstance(frames, torch.Tensor):
        t = frames.detach().float().cpu()
        if t.ndim != 4 or t.shape[1] != 3:
            raise InputError(f"frame tensors must be (N, 3, H, W) in [0, 1], got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise InputError("frames contain NaN or inf values")
        arr = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    else:
        arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise InputError(f"frames must be N x H x W x 3 images, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def write_video(frames: Frames, path: Union[str, os.PathLike], fps: int = 24,
                overwrite: bool = False) -> Path:
    """Write frames to ``path`` (.mp4 or .gif) via a temporary file and an atomic rename.

    Args:
        frames: (N, 3, H, W) float tensor in [0, 1] (what ``render_novel_views`` returns), an
            (N, H, W, 3) uint8 array, or a list of PIL images.
        fps: frames per second.
        overwrite: replace an existing file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise UnsupportedFormatError(path, f"unsupported video format; use one of {', '.join(VIDEO_FORMATS)}")
    if fps < 1:
        raise InputError(f"fps must be >= 1, got {fps}")
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OutputNotWritableError(path, "the folder does not exist or is not writable")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (imageio's FFMPEG plugin needs it)
        except ImportError as exc:
            raise UnsupportedFormatError(path, "MP4 needs imageio-ffmpeg: pip install 'sharpit[video]' "
                                               "(or write a .gif)") from exc
    arr = _to_uint8(frames)
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix == ".gif":
            images = [Image.fromarray(a) for a in arr]
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        else:
            _write_mp4(arr, tmp, fps)
    return path


def _write_mp4(arr: np.ndarray, tmp: Path, fps: int) -> None:
    import imageio.v2 as imageio

    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2  # H.264 with yuv420p needs even sizes
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                macro_block_size=2, pixelformat="yuv420p")
    try:
        for frame in arr:
            writer.append_data(frame)
    finally:
        writer.close()
