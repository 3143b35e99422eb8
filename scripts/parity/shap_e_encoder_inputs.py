"""Effect of making Shap-E's encoder inputs with sharpit's renderer instead of the official Blender pipeline.

Runs the official ``openai/shap-e`` input pipeline (``shap_e/util/data_util.py``
``load_or_create_multimodal_batch`` with ``mv_light_mode="basic"``, and
``shap_e/rendering/blender/blender_script.py`` through EEVEE), imported at run time from a
checkout (nothing of it is stored), with the official random camera directions replaced by fixed
ones; then :func:`sharpit.coarse.encoder_inputs.prepare_encoder_inputs` at the very same cameras,
and compares the inputs and the latents of random encoders (the tiny one of
:mod:`sharpit.testing.shap_e_encoder` and a mid-size one at the released input sizes).

Environment: the ``bpy`` module (Blender 5.0.1, ``pip install bpy``) in the Python that runs this
script (sharpit's venv has it), the official checkout extracted to a folder (``git archive``; its
example data is not needed), no display (EEVEE runs through EGL, software is enough)::

    python scripts/parity/shap_e_encoder_inputs.py --shap-e /work/scratch/shap-e-src \
        --work /work/scratch/blender_inputs/run

The official Blender script targets Blender 3.x; :data:`PATCHES` lists every change made to a
copy of it (Blender 5.0 API renames, and the fixed cameras); the official Python side
(``data_util``, ``PointCloud``, ``BlenderViewData``, ``_combine_rgba``) runs unchanged, with
``blobfile`` stubbed by local file functions and the official ``random``/``numpy`` draws seeded.
Renders are cached in ``--work`` (about 4 s per 512 px EEVEE render here; a full run takes ~8 min
on 2 CPU cores). Prints, and writes to ``--work/report_<mesh>.json``, the per-input differences
(sharpit vs official, and official vs official with another sampling seed) and the latent relative
L2 of the tiny random encoder and of a random mid-size encoder at the released view sizes, for
sharpit's inputs, for the official inputs with sharpit's multi-view renders (all three, then each
of views/depths/alphas), for another official sampling seed and for other cameras.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

#: (old, new, why) applied to a copy of ``blender_script.py``.
PATCHES = [
    ("    direction = random_unit_vector()\n    set_camera(direction, camera_dist=camera_dist)",
     "    direction = Vector(_FIXED_DIRECTIONS.pop(0))\n    set_camera(direction, camera_dist=camera_dist)",
     "fixed camera directions read from $SHARPIT_CAMERAS instead of mathutils' random_unit_vector"),
    ("MAX_DEPTH = 5.0\n",
     "MAX_DEPTH = 5.0\n_FIXED_DIRECTIONS = json.load(open(os.environ['SHARPIT_CAMERAS']))\n",
     "load the fixed directions"),
    ('socket_map["Specular"]', 'socket_map["Specular IOR Level"]', "Principled BSDF socket renamed in Blender 4.0"),
    ('socket_map["Emission"]', 'socket_map["Emission Color"]', "Principled BSDF socket renamed in Blender 4.0"),
    ('["Base Color", "Emission", "Emission Strength", "Alpha", "Specular"]',
     '["Base Color", "Emission Color", "Emission Strength", "Alpha", "Specular IOR Level"]', "same renames"),
    ("obj.data.vertex_colors", "obj.data.color_attributes", "Mesh.vertex_colors removed in Blender 5.0"),
    ("    tree = bpy.context.scene.node_tree\n",
     "    tree = bpy.data.node_groups.new('Compositing', 'CompositorNodeTree')\n"
     "    bpy.context.scene.compositing_node_group = tree\n",
     "Blender 5.0: the compositor is a node group assigned to the scene (Scene.node_tree removed)"),
    ('"CompositorNodeMath"', '"ShaderNodeMath"', "Blender 5.0 compositor uses the shared Math node"),
    ('"CompositorNodeSeparateXYZ"', '"ShaderNodeSeparateXYZ"', "Blender 5.0 compositor uses the shared node"),
    ('"CompositorNodeSepRGBA"', '"CompositorNodeSeparateColor"', "SepRGBA removed (Separate Color, RGB mode)"),
    ('"CompositorNodeCombRGBA"', '"CompositorNodeCombineColor"', "CombRGBA removed (Combine Color, RGB mode)"),
    ('color_node.from_color_space = "Linear"', 'color_node.from_color_space = "Linear Rec.709"',
     "OCIO colour-space name in Blender 4+"),
    ('        output_node.base_path = f"{output_path}_{channel}"\n',
     '        output_node.directory = f"{output_path}_{channel}"\n        _file_output(output_node)\n',
     "Blender 5.0 File Output: directory + items + own format (3.x copied the scene's BW 16-bit PNG)"),
    ('    output_node.base_path = f"{output_path}_depth"\n',
     '    output_node.directory = f"{output_path}_depth"\n    _file_output(output_node)\n', "same"),
    ("def setup_nodes(",
     "def _file_output(node):\n    node.file_name = 'Image'\n    node.file_output_items.new('FLOAT', 'Image')\n"
     "    node.format.media_type = 'IMAGE'\n    node.format.file_format = 'PNG'\n    node.format.color_mode = 'BW'\n    node.format.color_depth = '16'\n\n\n"
     "def setup_nodes(", "helper for the File Output patch"),
]


def patch_blender_script(text: str) -> str:
    for old, new, why in PATCHES:
        if old not in text:
            raise RuntimeError(f"patch target not found ({why}): {old[:60]!r}")
        text = text.replace(old, new)
    return text


def _stub_blobfile():
    bf = types.ModuleType("blobfile")
    bf.join = os.path.join
    bf.exists = os.path.exists
    bf.basename = os.path.basename
    bf.BlobFile = open
    bf.copy = lambda a, b, overwrite=False: shutil.copyfile(a, b)
    sys.modules["blobfile"] = bf
    sys.modules.setdefault("clip", types.ModuleType("clip"))


def unit_directions(n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return (d / d.norm(dim=-1, keepdim=True)).numpy()


class OfficialRenderer:
    """Stands in for ``shap_e.rendering.blender.render.render_model``: runs the patched script in
    this Python (bpy module) with the fixed cameras, then the official ``_combine_rgba`` and zip."""

    def __init__(self, script: Path, work: Path, pc_dirs, mv_dirs, tag: str):
        self.script, self.work, self.tag = script, work, tag
        self.dirs = {True: pc_dirs, False: mv_dirs}

    def __call__(self, model_path, output_path, num_images, backend="BLENDER_EEVEE", light_mode="random",
                 camera_pose="random", fast_mode=False, extract_material=False, **_):
        from shap_e.rendering.blender import render as official_render
        from shap_e.rendering.blender.constants import (BASIC_AMBIENT_COLOR, BASIC_DIFFUSE_COLOR,
                                                        UNIFORM_LIGHT_DIRECTION)
        kind = "pc" if extract_material else "mv"
        out = self.work / f"{self.tag}_{Path(model_path).stem}_{kind}{num_images}"
        zip_path = out.with_suffix(".zip")
        if not zip_path.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            cams = out.with_suffix(".cameras.json")
            cams.write_text(json.dumps(self.dirs[extract_material][:num_images].tolist()))
            args = [sys.executable, str(self.script), "--", "--input_path", str(model_path), "--output_path", str(out),
                    "--num_images", str(num_images), "--backend", backend, "--light_mode", light_mode,
                    "--camera_pose", camera_pose, "--camera_dist_min", "2.0", "--camera_dist_max", "2.0",
                    "--uniform_light_direction", *[str(x) for x in UNIFORM_LIGHT_DIRECTION],
                    "--basic_ambient", str(BASIC_AMBIENT_COLOR), "--basic_diffuse", str(BASIC_DIFFUSE_COLOR)]
            if fast_mode:
                args.append("--fast_mode")
            if extract_material:
                args.append("--extract_material")
            res = subprocess.run(args, env=dict(os.environ, SHARPIT_CAMERAS=str(cams)), capture_output=True, text=True)
            if not (out / "info.json").exists():
                raise RuntimeError(f"blender failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
            official_render._combine_rgba(str(out))
            with zipfile.ZipFile(zip_path, "w") as zf:
                for name in sorted(os.listdir(out)):
                    zf.write(out / name, name)
        shutil.copyfile(zip_path, output_path)


def official_inputs(data_util, glb: Path, s, np_seed: int):
    """ShapEEncoderInputs from the official batch (``load_or_create_multimodal_batch``)."""
    from sharpit.coarse.encoder_model import ShapEEncoderInputs

    random.seed(np_seed)        # the official farthest-point start (random.randrange)
    np.random.seed(np_seed)     # the official jitter and random_sample
    batch = data_util.load_or_create_multimodal_batch(
        torch.device("cpu"), model_path=str(glb), point_count=s.point_count, random_sample_count=s.random_sample_count,
        pc_num_views=s.point_cloud_views, mv_light_mode="basic", mv_num_views=s.num_views,
        mv_image_size=s.image_size)
    views = torch.stack([torch.from_numpy(np.array(v)).float().permute(2, 0, 1) / 127.5 - 1 for v in batch.views[0]])
    alphas = torch.stack([torch.from_numpy(np.array(a)).float()[None] / 255.0 for a in batch.view_alphas[0]])
    depths = torch.stack([torch.from_numpy(np.asarray(d, dtype=np.float32))[None] for d in batch.depths[0]])
    cams = batch.cameras[0]
    f = lambda k: torch.stack([torch.from_numpy(np.asarray(getattr(c, k), dtype=np.float32)) for c in cams])
    fov = torch.tensor([c.x_fov for c in cams], dtype=torch.float32)
    return ShapEEncoderInputs(batch.points.transpose(1, 2).float(), views[None], depths[None], alphas[None],
                              f("origin")[None], f("x")[None], f("y")[None], f("z")[None], fov[None])


def sharpit_inputs(mesh, s, pc_dirs, mv_dirs, seed: int):
    """prepare_encoder_inputs with its camera draws replaced by the fixed Blender directions."""
    from sharpit.cameras import CameraBatch, look_at_c2w
    from sharpit.coarse import encoder_inputs as ei

    queue = [pc_dirs[: s.point_cloud_views], mv_dirs[: s.num_views]]

    def fixed(n, distance, fov, generator, device):
        d = torch.from_numpy(queue.pop(0)).double()
        assert d.shape[0] == n
        nan = torch.full((n,), float("nan"))
        # Blender puts the camera at -dist * direction looking along direction.
        return CameraBatch(look_at_c2w(-d * distance), torch.full((n,), math.degrees(fov)), nan, nan,
                           torch.full((n,), float(distance))).to(device)

    original = ei._random_cameras
    ei._random_cameras = fixed
    try:
        return ei.prepare_encoder_inputs(mesh, s, torch.Generator().manual_seed(seed))
    finally:
        ei._random_cameras = original


def compare_inputs(a, b) -> dict:
    rgb_a, rgb_b = (a.views[0] + 1) / 2, (b.views[0] + 1) / 2
    ma, mb = a.alphas[0] > 0.5, b.alphas[0] > 0.5
    both = ma & mb
    da, db = a.depths[0], b.depths[0]
    fin = torch.isfinite(da) & torch.isfinite(db) & (a.alphas[0] >= 0.999) & (b.alphas[0] >= 0.999)
    pa, pb = a.points[0, :, :3].double(), b.points[0, :, :3].double()
    dist = torch.cdist(pa, pb)
    ab, ba = dist.min(1), dist.min(0)
    col = (a.points[0, :, 3:] - b.points[0, ab.indices, 3:]).abs().mean()
    cam = max(float((getattr(a, k) - getattr(b, k)).abs().max()) for k in ("origins", "x", "y", "z", "fov"))
    return {
        "camera_max_abs": cam,
        "rgb_mean_abs_all": float((rgb_a - rgb_b).abs().mean()),
        "rgb_mean_abs_covered_both": float((rgb_a - rgb_b).abs().mean(1, keepdim=True)[both].mean()),
        "alpha_iou_0.5": float(both.sum() / (ma | mb).sum()),
        "alpha_mean_abs": float((a.alphas - b.alphas).abs().mean()),
        "depth_mean_abs_opaque_both": float((da - db).abs()[fin].mean()),
        "depth_p99_abs_opaque_both": float((da - db).abs()[fin].quantile(0.99)),
        "pc_chamfer_mean": float((ab.values.mean() + ba.values.mean()) / 2),
        "pc_nn_rgb_mean_abs": float(col),
    }


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def mid_encoder(point_count: int, num_views: int, seed: int = 0):
    """A random encoder at the released input sizes (views of 256 px) with a small transformer."""
    from sharpit.coarse.encoder import ShapEEncoder

    model = ShapEEncoder(width=128, heads=4, layers=3, xattn_layers=1, d_latent=64, latent_ctx=64, data_ctx=64,
                         pointconv_samples=32, pointconv_hidden=(64, 128), pointconv_patch_size=8, pointconv_stride=4,
                         point_count=point_count, num_views=num_views)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if name.endswith("output_tokens") else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * scale
                    + (1.0 if "ln_" in name and name.endswith("weight") else 0.0))
    return model.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shap-e", type=Path, required=True, help="extracted openai/shap-e checkout")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--pc-views", type=int, default=40)
    p.add_argument("--mv-views", type=int, default=20)
    p.add_argument("--mesh", default="box", choices=["box", "sphere"])
    p.add_argument("--skip-mid", action="store_true")
    p.add_argument("--points", type=int, default=2048, help="point count of the full-size inputs")
    p.add_argument("--tiny-only", action="store_true", help="skip the full-size inputs (slow official FPS)")
    args = p.parse_args(argv)
    _stub_blobfile()
    sys.path.insert(0, str(args.shap_e))
    from shap_e.util import data_util

    from sharpit.coarse.encoder_inputs import EncoderInputSettings
    from sharpit.mesh import Mesh
    from sharpit.mesh_io import load_mesh, save_mesh
    from sharpit.testing.meshes import textured_cube, uv_sphere
    from sharpit.testing.shap_e_encoder import tiny_shap_e_encoder

    args.work.mkdir(parents=True, exist_ok=True)
    script = args.work / "blender_script_patched.py"
    script.write_text(patch_blender_script((args.shap_e / "shap_e/rendering/blender/blender_script.py").read_text()))
    glb = args.work / f"{args.mesh}.glb"
    if args.mesh == "box":   # asymmetric: a 1 x 0.8 x 0.6 box, six distinct texture colours
        m = textured_cube()
        m = Mesh(m.vertices * torch.tensor([1.0, 0.8, 0.6]), m.faces, uvs=m.uvs, texture=m.texture)
    else:
        m = uv_sphere()
    save_mesh(m, glb)
    mesh = load_mesh(glb)

    # The released view sizes; fewer points than 16384 (the official numpy farthest-point sampling
    # of 16384 from 2^19 points takes minutes per run on 2 CPU cores).
    full = EncoderInputSettings(point_count=args.points, point_cloud_views=args.pc_views, num_views=args.mv_views)
    tiny = EncoderInputSettings(point_count=128, num_views=2, image_size=32, render_factor=16,
                                point_cloud_views=args.pc_views)
    runs = {"A": (unit_directions(args.pc_views, 1), unit_directions(args.mv_views, 2)),
            "B": (unit_directions(args.pc_views, 3), unit_directions(args.mv_views, 4))}
    report = {"mesh": args.mesh, "pc_views": args.pc_views, "mv_views": args.mv_views}
    tiny_enc, mid_enc = tiny_shap_e_encoder(0), (None if args.skip_mid else mid_encoder(args.points, args.mv_views))
    latents = {}
    for tag, (pc_dirs, mv_dirs) in runs.items():
        data_util.render_model = OfficialRenderer(script, args.work, pc_dirs, mv_dirs, tag)
        for size, s, enc in (("tiny", tiny, tiny_enc), ("full", full, mid_enc))[: 1 if args.tiny_only else 2]:
            off = official_inputs(data_util, glb, s, np_seed=0)
            sh = sharpit_inputs(mesh, s, pc_dirs, mv_dirs, seed=0)
            if tag == "A":
                report[f"inputs_{size}"] = compare_inputs(sh, off)
                off_seed = official_inputs(data_util, glb, s, np_seed=1)   # same renders, other sampling
                report[f"inputs_{size}_official_other_sampling_seed"] = compare_inputs(off_seed, off)
            if enc is None:
                continue
            g = lambda: torch.Generator().manual_seed(0)
            latents[(tag, size, "official")] = enc.encode_inputs(off, g())
            latents[(tag, size, "sharpit")] = enc.encode_inputs(sh, g())
            # Only the multi-view renders swapped (same points): the renderer's effect without sampling noise.
            swap = dataclasses.replace(off, views=sh.views, depths=sh.depths, alphas=sh.alphas)
            latents[(tag, size, "sharpit_mv_only")] = enc.encode_inputs(swap, g())
            for part in ("views", "depths", "alphas"):
                one = dataclasses.replace(off, **{part: getattr(sh, part)})
                latents[(tag, size, f"sharpit_{part}_only")] = enc.encode_inputs(one, g())
            if tag == "A":
                latents[(tag, size, "official_seed1")] = enc.encode_inputs(off_seed, g())
    for size in ("tiny", "full"):
        if ("A", size, "official") not in latents:
            continue
        o = latents[("A", size, "official")]
        report[f"latent_{size}"] = {
            "rel_l2_sharpit_vs_official_same_cameras": rel(latents[("A", size, "sharpit")], o),
            "rel_l2_sharpit_mv_renders_official_points": rel(latents[("A", size, "sharpit_mv_only")], o),
            **{f"rel_l2_sharpit_{part}_only": rel(latents[("A", size, f"sharpit_{part}_only")], o)
               for part in ("views", "depths", "alphas")},
            "rel_l2_official_other_sampling_seed": rel(latents[("A", size, "official_seed1")], o),
            "rel_l2_official_other_cameras": rel(latents[("B", size, "official")], o),
            "rel_l2_sharpit_B_vs_official_B": rel(latents[("B", size, "sharpit")], latents[("B", size, "official")]),
        }
    print(json.dumps(report, indent=2))
    (args.work / f"report_{args.mesh}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
