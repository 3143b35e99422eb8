"""Benchmark the reconstruct stage at full size with random weights.

Measures: encoder + triplane transformer (six 320 px views -> planes), mesh extraction (density
grid + marching cubes + vertex colours), and texture export (a ~200k-face mesh decimated to 50k,
xatlas unwrap, UV-space bake from the triplane). Prints a markdown table.

    python benchmarks/bench_reconstruct.py --device cuda --dtype fp16
    python benchmarks/bench_reconstruct.py --device cpu --dtype fp32 --grid 128 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import torch
from benchutil import peak_memory_bytes, sync

from sharpit.isosurface import query_grid, query_points
from sharpit.mesh import Mesh
from sharpit.reconstruct import InstantMeshReconstructor, bake_texture, decimate
from sharpit.reconstruct.inputs import camera_vectors

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _timed(fn, device, repeats: int):
    """Run ``fn`` ``repeats`` times; return (last result, best seconds)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return out, best


def _uv_sphere(faces: int, radius: float = 0.35) -> Mesh:
    import trimesh

    n = max(8, int(round((faces / 4) ** 0.5)))  # trimesh's uv_sphere has about 4 n^2 faces
    s = trimesh.creation.uv_sphere(radius=radius, count=[n, n])
    return Mesh(torch.from_numpy(s.vertices).float(), torch.from_numpy(s.faces).long())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    ap.add_argument("--variant", choices=["base", "large"], default="large")
    ap.add_argument("--grid", type=int, default=256, help="marching-cubes resolution")
    ap.add_argument("--mesh-faces", type=int, default=200_000, help="faces of the mesh to texture")
    ap.add_argument("--face-budget", type=int, default=50_000)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--skip-texture", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)

    model = InstantMeshReconstructor.from_variant(args.variant).to(device).eval()
    if dtype != torch.float32:
        model = model.to(dtype)
    images = torch.rand(1, 6, 3, 320, 320, device=device, dtype=dtype)
    images[..., :16, :] = 1.0
    cams = camera_vectors(None, 1, device).to(dtype)
    rows = []

    with torch.no_grad():
        if device.type == "cuda":
            model(images, cams)  # warm-up (kernels, allocator)
        planes, t_enc = _timed(lambda: model(images, cams).planes, device, args.repeats)
        rows.append(("encoder + transformer (6 views -> planes)", t_enc, f"planes {tuple(planes.shape)}"))

        # Random weights rarely cross the released threshold 10: use the median density instead,
        # which gives a large (worst-case) surface; the grid query cost does not depend on it.
        probe = torch.rand(1 << 16, 3, device=device) - 0.5
        level = float(model.query(planes, probe)[0].median())
        grid_pts = args.grid ** 3
        field = lambda p: model.synthesizer(planes, p[None])[0][0].float()  # noqa: E731
        _, t_grid = _timed(lambda: query_grid(field, args.grid, -1.0, 1.0, device=device), device, args.repeats)
        rows.append((f"density grid query {args.grid}^3", t_grid, f"{grid_pts / t_grid / 1e6:.1f} M points/s"))
        mesh, t_mesh = _timed(lambda: model.extract_mesh(planes, args.grid, threshold=level), device, args.repeats)
        rows.append((f"mesh extraction {args.grid}^3 (grid + marching cubes + colours)", t_mesh,
                     f"{mesh.num_vertices} vertices, {mesh.num_faces} faces (level {level:.3g})"))
        rows.append(("reconstruction total (planes + mesh)", t_enc + t_mesh, "no texture"))

        if not args.skip_texture:
            big = _uv_sphere(args.mesh_faces).to(device)
            color = lambda p: model.query(planes, p)[1]  # noqa: E731
            small, t_dec = _timed(lambda: decimate(big, args.face_budget), device, args.repeats)
            rows.append((f"decimate {big.num_faces} -> {args.face_budget} faces", t_dec, f"{small.num_faces} faces"))
            tex, t_tex = _timed(lambda: bake_texture(big, color, args.texture_size, args.face_budget), device,
                                args.repeats)
            rows.append((f"texture export total (decimate + xatlas + bake {args.texture_size}^2)", t_tex,
                         f"{tex.num_vertices} vertices after seams"))
            _, t_q = _timed(lambda: query_points(color, small.vertices, 1 << 18), device, args.repeats)
            rows.append(("  of which triplane colour query at vertices", t_q, ""))

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\n### bench_reconstruct ({args.variant}, {args.dtype})\n")
    print(f"- device: {device} ({dev_name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    kind = "CUDA allocated" if device.type == "cuda" else "process max RSS"
    print(f"- peak memory: {peak_memory_bytes(device) / 2**30:.2f} GiB ({kind})\n")
    print("| step | seconds | notes |\n|---|---|---|")
    for name, sec, note in rows:
        print(f"| {name} | {sec:.3f} | {note} |")


if __name__ == "__main__":
    main()
