"""Turn a 4-channel Zero123++ UNet into the 8-channel concat-conditioned Sharp-It UNet."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["init_unet_from_zero123plus"]


def init_unet_from_zero123plus(unet, condition_channels: int = 4):
    """Widen ``unet.conv_in`` to take ``[noisy latent, condition latent]`` (training initialisation).

    The input convolution gets ``condition_channels`` extra input channels whose weights are zero;
    the original weights and bias are copied, and ``config.in_channels`` is updated so the model
    saves and reloads as an 8-channel UNet. With zero weights the UNet's output at initialisation
    equals the original UNet's output on the noisy part, whatever the condition.

    Args:
        unet: a ``UNet2DConditionModel`` with ``in_channels == out_channels`` (4 for Zero123++).
            It is modified in place.
        condition_channels: channels of the condition latent (the VAE's latent channels, 4).
    Returns:
        The same ``unet`` object, now with ``in_channels + condition_channels`` input channels.
    """
    old = unet.conv_in
    if unet.config.in_channels != unet.config.out_channels:
        raise ConfigError(
            f"expected a 4-channel Zero123++ UNet (in_channels == out_channels), got in_channels="
            f"{unet.config.in_channels}, out_channels={unet.config.out_channels}; it may already be widened")
    if condition_channels < 1:
        raise ConfigError(f"condition_channels must be positive, got {condition_channels}")
    new = nn.Conv2d(old.in_channels + condition_channels, old.out_channels, kernel_size=old.kernel_size,
                    stride=old.stride, padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + condition_channels)
    return unet
