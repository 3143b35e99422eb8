"""Zero123++ reference attention as a diffusers attention processor.

Only self-attention layers (``attn1``) are hooked. A UNet call with reference attention is two
UNet passes (see :func:`reference_unet_forward`):

1. *write*: the condition latent, noised to the same timestep with fresh noise, goes through the
   UNet; every ``attn1`` stores its input hidden states ``(B, N_ref, C)`` in a :class:`ReferenceBank`
   and otherwise attends normally;
2. *read*: the main pass; every ``attn1`` uses ``concat([own tokens, stored tokens], dim=1)``
   (``(B, N + N_ref, C)``) as keys and values. Cross-attention (``attn2``) is untouched.

No parameters are added. The processor wraps the layer's existing processor (SDPA by default, or
xformers), so the attention kernel stays whatever was chosen.
"""

from __future__ import annotations

from typing import Dict

import torch

from ..errors import ConfigError

__all__ = [
    "ReferenceBank",
    "ReferenceAttnProcessor",
    "enable_reference_attention",
    "disable_reference_attention",
    "noise_reference_latents",
    "reference_unet_forward",
]

_MODES = ("off", "write", "read")


class ReferenceBank:
    """Hidden states shared between the write and read passes of one UNet call.

    ``mode`` is ``"off"`` (plain self-attention), ``"write"`` (store) or ``"read"`` (attend to stored).
    """

    def __init__(self):
        self.mode = "off"
        self.states: Dict[str, torch.Tensor] = {}

    def set_mode(self, mode: str) -> None:
        if mode not in _MODES:
            raise ConfigError(f"reference attention mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode

    def clear(self) -> None:
        self.mode = "off"
        self.states.clear()


class ReferenceAttnProcessor:
    """Self-attention processor with Zero123++ reference attention (wraps ``inner``).

    Args:
        bank: the shared :class:`ReferenceBank`.
        name: the layer's processor name (key of ``unet.attn_processors``).
        inner: the processor to call for the attention itself (e.g. ``AttnProcessor2_0``).
    """

    def __init__(self, bank: ReferenceBank, name: str, inner):
        self.bank = bank
        self.name = name
        self.inner = inner

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        mode = self.bank.mode
        if mode == "write":
            self.bank.states[self.name] = hidden_states
        elif mode == "read":
            stored = self.bank.states.get(self.name)
            if stored is None:
                raise ConfigError(f"reference attention read at {self.name} before any write pass; "
                                  "run the UNet on the reference latent first (reference_unet_forward)")
            encoder_hidden_states = torch.cat([hidden_states, stored.to(hidden_states.dtype)], dim=1)
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=attention_mask, temb=temb, **kwargs)


def enable_reference_attention(unet) -> ReferenceBank:
    """Install :class:`ReferenceAttnProcessor` on every ``attn1`` of ``unet``; return the bank.

    Idempotent: when all ``attn1`` layers already carry reference processors of one bank, that
    bank is returned. Layers whose processor was replaced since (e.g. by
    ``enable_xformers_memory_efficient_attention``) are re-wrapped around the new processor.
    """
    processors = unet.attn_processors
    self_attn = [n for n in processors if n.endswith("attn1.processor")]
    if not self_attn:
        raise ConfigError("the UNet has no self-attention (attn1) layers to hook for reference attention")
    banks = {id(p.bank): p.bank for n, p in processors.items() if isinstance(p, ReferenceAttnProcessor)}
    if len(banks) == 1 and all(isinstance(processors[n], ReferenceAttnProcessor) for n in self_attn):
        return next(iter(banks.values()))
    bank = ReferenceBank()
    new = {}
    for name, proc in processors.items():
        if name in self_attn:
            inner = proc.inner if isinstance(proc, ReferenceAttnProcessor) else proc
            new[name] = ReferenceAttnProcessor(bank, name, inner)
        else:
            new[name] = proc
    unet.set_attn_processor(new)
    return bank


def disable_reference_attention(unet) -> None:
    """Undo :func:`enable_reference_attention`: put the wrapped processors back."""
    processors = unet.attn_processors
    if any(isinstance(p, ReferenceAttnProcessor) for p in processors.values()):
        unet.set_attn_processor({n: p.inner if isinstance(p, ReferenceAttnProcessor) else p
                                 for n, p in processors.items()})


def noise_reference_latents(scheduler, condition_latents: torch.Tensor, noise: torch.Tensor,
                            timestep: torch.Tensor) -> torch.Tensor:
    """Noise condition latents to ``timestep`` and scale them as a UNet input.

    ``scheduler.add_noise`` then ``scheduler.scale_model_input`` (a no-op for DDPM); ``timestep``
    is a scalar or a (B,) tensor. Returns a tensor shaped like ``condition_latents``.
    """
    t = timestep.reshape(-1) if isinstance(timestep, torch.Tensor) else torch.tensor([timestep])
    if t.numel() == 1:
        t = t.expand(condition_latents.shape[0])
    noisy = scheduler.add_noise(condition_latents, noise, t)
    return scheduler.scale_model_input(noisy, timestep)


def reference_unet_forward(unet, bank: ReferenceBank, sample: torch.Tensor, timestep,
                           encoder_hidden_states: torch.Tensor, reference: torch.Tensor,
                           **unet_kwargs) -> torch.Tensor:
    """One UNet call with reference attention: a write pass on ``reference``, then the main pass.

    Args:
        unet: a UNet prepared with :func:`enable_reference_attention` (``bank`` is its return value).
        sample: (B, C, h, w) model input.
        timestep: as for ``UNet2DConditionModel.forward``.
        encoder_hidden_states: (B, 77, D); used by both passes.
        reference: (B, C, h', w') noised, scaled reference latents (:func:`noise_reference_latents`);
            their spatial size may differ from the sample's (the stored tokens are only keys and values).
    Returns:
        The UNet's output for ``sample``, (B, out_channels, h, w).
    """
    if reference.shape[:2] != sample.shape[:2]:
        raise ConfigError(f"reference latents {tuple(reference.shape)} must have the batch size and channels of "
                          f"the sample {tuple(sample.shape)}")
    try:
        bank.set_mode("write")
        unet(reference, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False, **unet_kwargs)
        bank.set_mode("read")
        return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False,
                    **unet_kwargs)[0]
    finally:
        bank.clear()
