"""Textured export: UV layout + bake for a ~20k-face mesh, "pairs" vs "xatlas", and how close the
textured mesh renders to the vertex-coloured one (PSNR over the six Zero123++ views); then where
texture colours should come from ("field" vs "views", below).

    python benchmarks/bench_texture.py                     # 20k faces, 1024^2 texture, CPU
    python benchmarks/bench_texture.py --device cuda

The mesh is a sphere coloured by a smooth field; ``bake_texture`` bakes the interpolated vertex
colours (``color_fn=None``: no network in the timing), so the PSNR measures the layout, the
baking and the seams, not a colour field's extra detail.

Texture source: a dense sphere (icosphere, 5 subdivisions) carries a detailed colour field and is
rendered at the six Zero123++ views (the "refined views"); a coarse sphere (3 subdivisions, what a
reconstruction gives) with that field only at its vertices (the "colour field") is textured from
the field alone or from the views, and both are compared with the dense sphere at eight novel
views (azimuths 15..330, elevation 5), over the pixels both cover.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import sync  # noqa: E402

from sharpit.mesh import Mesh  # noqa: E402
from sharpit.options import UV_LAYOUTS  # noqa: E402
from sharpit.reconstruct.texture import bake_texture  # noqa: E402
from sharpit.render import render_views  # noqa: E402
from sharpit.testing.meshes import uv_sphere  # noqa: E402


def coloured_sphere(faces: int, device) -> Mesh:
    n = max(4, round(math.sqrt(faces / 4)))   # uv_sphere(n, 2n) has 4n(n - 1) faces
    ball = uv_sphere(n, 2 * n, colored=False)
    v = ball.vertices
    colours = 0.5 + 0.4 * torch.stack([torch.sin(7 * v[:, 0]), torch.cos(5 * v[:, 1]), torch.sin(6 * v[:, 2] + 1)], -1)
    return Mesh(v, ball.faces, vertex_colors=colours).to(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces", type=int, default=20000)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mesh = coloured_sphere(args.faces, device)
    reference = render_views(mesh, supersample=2).images
    rows = []
    for layout in UV_LAYOUTS:
        times = []
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            textured = bake_texture(mesh, texture_size=args.texture_size, face_budget=None, uv_layout=layout)
            sync(device)
            times.append(time.perf_counter() - start)
        images = render_views(textured, supersample=2).images
        rows.append((layout, statistics.median(times), min(times), psnr(images, reference), textured.num_vertices))
    base = dict((r[0], r[1]) for r in rows)["xatlas"]
    print(f"{platform.processor() or platform.machine()}, {datetime.date.today()}, "
          f"`python benchmarks/bench_texture.py {shlex.join(argv if argv is not None else sys.argv[1:])}`, "
          f"{mesh.num_faces} faces, {args.texture_size}^2\n")
    print("| layout | median s | min s | vs xatlas | PSNR vs vertex colours (dB) | vertices |")
    print("|---|---|---|---|---|---|")
    for layout, med, low, quality, verts in rows:
        print(f"| {layout} | {med:.3f} | {low:.3f} | {med / base:.3f}x | {quality:.1f} | {verts:,} |")
    print("\n| texture source | bake s | PSNR at novel views (dB, covered pixels) |")
    print("|---|---|---|")
    for source, seconds, quality in texture_sources(device, args.texture_size):
        print(f"| {source} | {seconds:.3f} | {quality:.2f} |")
    return 0


def texture_sources(device, texture_size: int = 1024):
    """``[(source, bake seconds, masked PSNR at novel views)]`` for "field" and "views" (see above)."""
    import trimesh

    from sharpit.cameras import orbit_cameras, zero123plus_cameras

    def sphere(subdivisions):
        s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.45)
        v = torch.from_numpy(s.vertices).float()
        colours = 0.5 + 0.45 * torch.stack([torch.sin(14 * v[:, 0]), torch.sin(11 * v[:, 1] + 1),
                                            torch.sin(13 * v[:, 2] + 2)], -1)
        return Mesh(v, torch.from_numpy(s.faces).long(), vertex_colors=colours).to(device)

    truth, coarse = sphere(5), sphere(3)
    views = render_views(truth, supersample=2).images
    cams = zero123plus_cameras()
    novel = orbit_cameras(torch.arange(15.0, 360.0, 45.0), torch.full((8,), 5.0), float(cams.position[0].norm()))
    reference = render_views(truth, novel.to(device), supersample=2)
    rows = []
    for source in ("field", "views"):
        sync(device)
        start = time.perf_counter()
        textured = bake_texture(coarse, texture_size=texture_size, face_budget=None,
                                **({"views": views} if source == "views" else {}))
        sync(device)
        seconds = time.perf_counter() - start
        render = render_views(textured, novel.to(device), supersample=2)
        covered = ((reference.alpha > 0.99) & (render.alpha > 0.99)).expand(-1, 3, -1, -1)
        rows.append((source, seconds, psnr(render.images[covered], reference.images[covered])))
    return rows


if __name__ == "__main__":
    sys.exit(main())
