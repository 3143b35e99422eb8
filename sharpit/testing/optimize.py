"""A refiner whose prior is known in closed form, for testing the texture optimisation.

:class:`TargetPriorUNet` stands in for the refiner's UNet: at every timestep it predicts exactly
the noise (or v) that points from the noisy latent to one fixed clean latent ``target``, i.e. the
score of a prior concentrated on ``target``. Built from the latent of a render of the mesh in a
known colour (:func:`colour_prior_refiner`), it is "a prior that prefers that colour": score
distillation under it must drive the texture towards the colour.

:class:`LinearVAE` is an ``AutoencoderKL`` stand-in whose encoder is an 8x8 box filter followed
by a fixed full-rank 3 -> 4 colour map (and its decoder the least-squares inverse): a random tiny
``AutoencoderKL`` normalises colour away in its group norms (many colours map to nearly one
latent), so a colour cannot be recovered through it, and its mid-block attention over the 9600
latent positions makes every backward pass seconds long on a CPU.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..grid import views_to_grid
from ..mesh import Mesh

__all__ = ["TargetPriorUNet", "LinearVAE", "colour_prior_refiner"]

#: LinearVAE's colour map: latent channels from the VAE input's RGB (full rank, so invertible on its image).
_COLOUR_MAP = ((4.0, 0.0, 0.0), (0.0, 4.0, 0.0), (0.0, 0.0, 4.0), (2.0, 2.0, 2.0))


class LinearVAE(ModelMixin, ConfigMixin):
    """``encode(x).latent_dist``: mean ``M @ avg_pool_8(x)`` (per pixel, M = :data:`_COLOUR_MAP`),
    log-variance -20; ``decode(z).sample``: ``pinv(M) @ z`` repeated over 8x8 pixels. Config fields
    are the ones the refiner reads (8x downsampling from four ``block_out_channels``)."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, scaling_factor: float = 0.18215, force_upcast: bool = True,
                 block_out_channels=(4, 4, 4, 4)):
        super().__init__()
        self.colour_map = torch.nn.Parameter(torch.tensor(_COLOUR_MAP))

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        mean = torch.einsum("ck,bkhw->bchw", self.colour_map.to(x.dtype), torch.nn.functional.avg_pool2d(x, 8))
        params = torch.cat([mean, torch.full_like(mean, -20.0)], dim=1)
        return AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution(params))

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DecoderOutput

        rgb = torch.einsum("kc,bchw->bkhw", torch.linalg.pinv(self.colour_map.to(z.dtype)), z)
        return DecoderOutput(sample=rgb.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3))


class TargetPriorUNet(ModelMixin, ConfigMixin):
    """A concat-mode "UNet" (8 input channels) predicting the noise towards ``target``.

    With ``a = alphas_cumprod[t]`` and the noisy half ``x`` of the input:
    ``eps = (x - sqrt(a) target) / sqrt(1 - a)``; for ``prediction_type="v_prediction"`` it returns
    ``v = sqrt(a) eps - sqrt(1 - a) target``. The condition half and the text are ignored.

    Args:
        target: (1, 4, h, w) clean latent (the Zero123++-scaled space the refiner denoises).
        alphas_cumprod: (T,) the scheduler's cumulative alphas.
        prediction_type: ``"v_prediction"`` or ``"epsilon"``.
    """

    @register_to_config
    def __init__(self, in_channels: int = 8, out_channels: int = 4, prediction_type: str = "v_prediction",
                 latent_height: int = 120, latent_width: int = 80, num_train_timesteps: int = 1000):
        super().__init__()
        self.register_buffer("target", torch.zeros(1, out_channels, latent_height, latent_width))
        self.register_buffer("alphas_cumprod", torch.ones(num_train_timesteps))
        # one weight so that the model has a dtype and device like any diffusers model
        self.scale = torch.nn.Parameter(torch.ones(()))

    @property
    def attn_processors(self):
        """No attention layers (the refiner's attention-backend switch finds nothing to change)."""
        return {}

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states=None, return_dict: bool = True):
        x = sample[:, :self.config.out_channels].float()
        a = self.alphas_cumprod[torch.as_tensor(timestep, device=x.device).long()].float().reshape(-1, 1, 1, 1)
        target = self.target.float()
        eps = (x - a.sqrt() * target) / (1 - a).sqrt()
        out = eps if self.config.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * target
        out = (self.scale * out).to(sample.dtype)
        return (out,) if not return_dict else {"sample": out}


@torch.no_grad()
def colour_prior_refiner(mesh: Mesh, colour, seed: int = 0, supersample: int = 1, linear_vae: bool = True):
    """A tiny :class:`~sharpit.refine.SharpItRefinePipeline` whose UNet is a :class:`TargetPriorUNet`
    aimed at the latent of ``mesh`` rendered in the flat ``colour`` at the six v1.2 views (white
    background, the VAE's posterior mean). The VAE is a :class:`LinearVAE` unless ``linear_vae`` is
    False (then the tiny random ``AutoencoderKL``).

    Returns:
        ``(refiner, target_grid)``: the pipeline and the (1, 3, 960, 640) grid its prior prefers.
    """
    from ..refine.conditioning import encode_posterior
    from ..refine.scaling import scale_latents
    from ..render import render_views
    from .refine import tiny_sharpit_pipeline

    refiner = tiny_sharpit_pipeline("concat", seed)
    if linear_vae:
        refiner.register_modules(vae=LinearVAE())
    flat = Mesh(mesh.vertices, mesh.faces,
                vertex_colors=torch.as_tensor(colour, dtype=torch.float32).expand(mesh.num_vertices, 3))
    grid = views_to_grid(render_views(flat, supersample=supersample).images)[None]
    mean = encode_posterior(refiner.vae, grid).chunk(2, dim=1)[0]
    scheduler = refiner.scheduler
    unet = TargetPriorUNet(prediction_type=scheduler.config.prediction_type, latent_height=mean.shape[-2],
                           latent_width=mean.shape[-1], num_train_timesteps=scheduler.config.num_train_timesteps)
    unet.target.copy_(scale_latents(mean * refiner.vae.config.scaling_factor))
    unet.alphas_cumprod.copy_(scheduler.alphas_cumprod)
    refiner.register_modules(unet=unet)
    return refiner, grid
