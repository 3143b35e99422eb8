"""The one coarse-render setting shared by inference and training-pair preparation."""

import dataclasses
import inspect

import pytest

from sharpit import InputError
from sharpit.coarse import COARSE_RENDER_MODES, DEFAULT_COARSE_RENDER, CoarseRenderOptions


def test_default_is_anti_aliased_mesh_mode():
    assert DEFAULT_COARSE_RENDER == CoarseRenderOptions() == CoarseRenderOptions("mesh", 2)
    assert DEFAULT_COARSE_RENDER.to_dict() == {"mode": "mesh", "supersample": 2}
    assert COARSE_RENDER_MODES == ("mesh", "nerf")
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_COARSE_RENDER.mode = "nerf"


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="blender"), "mode must be one of"),
    (dict(mode=None), "mode must be one of"),
    (dict(supersample=0), "supersample must be an integer >= 1"),
    (dict(supersample=1.5), "supersample must be an integer >= 1"),
    (dict(supersample=True), "supersample must be an integer >= 1"),
])
def test_bad_values_are_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        CoarseRenderOptions(**kwargs)


def test_nerf_needs_a_latent():
    CoarseRenderOptions("nerf").check_source(has_latent=True)
    CoarseRenderOptions("mesh").check_source(has_latent=False)
    with pytest.raises(InputError, match="mesh asset has none"):
        CoarseRenderOptions("nerf").check_source(has_latent=False)


def test_every_entry_point_defaults_to_the_shared_option():
    """No caller keeps a default of its own: they take None and resolve it to DEFAULT_COARSE_RENDER."""
    from sharpit.coarse import ShapEGenerator
    from sharpit.pipeline import SharpIt3DPipeline
    from training.prepare_pairs import prepare_pairs

    render = inspect.signature(ShapEGenerator.render_views).parameters
    assert render["mode"].default is None and render["supersample"].default is None
    assert inspect.signature(prepare_pairs).parameters["coarse_render"].default is None
    from sharpit.options import GenerationOptions

    assert GenerationOptions().coarse_render == DEFAULT_COARSE_RENDER   # what generate/edit start from
    for fn in (SharpIt3DPipeline.generate, SharpIt3DPipeline.edit):
        assert "coarse_render" not in inspect.signature(fn).parameters, fn.__qualname__   # only via options
