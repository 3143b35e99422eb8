"""Benchmark: marching cubes on a realistic density grid, scikit-image (sharpit) vs PyMCubes
(official InstantMesh).

The field imitates a reconstructor's density: a bumpy torus (or a sphere) whose density rises
from ~0 outside to 25 inside over a thin shell, extracted at InstantMesh's level 10 on an R^3 grid
over [-1, 1]^3. Timed, each on the same float32 volume already on the CPU:

``sharpit``      ``sharpit.isosurface.marching_cubes`` (scikit-image Lewiner, weld, winding flip)
``torch``        ``sharpit.isosurface.marching_cubes(method="torch")`` on ``--device`` (the vectorised
                 PyTorch version the pipeline uses on CUDA; timed with a device sync)
``skimage``      ``skimage.measure.marching_cubes`` alone (Lewiner)
``lorensen``     ``skimage.measure.marching_cubes(method="lorensen")`` (the classic table)
``pymcubes``     ``mcubes.marching_cubes`` (PyMCubes; skipped when not installed: it is not a
                 sharpit dependency)

It also checks that the methods place the same vertices (nearest-neighbour distances in voxels;
Lewiner adds vertices inside some ambiguous cells) and compares face counts. Prints a markdown table.

    python benchmarks/bench_marching_cubes.py --repeats 5
    python benchmarks/bench_marching_cubes.py --quick          # 32^3, one repeat (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import sys
import time

import numpy as np
import torch
from benchutil import sync

from sharpit.isosurface import grid_points, marching_cubes

LEVEL = 10.0


def density_field(resolution: int, shape: str, device) -> torch.Tensor:
    """(R, R, R) [x, y, z] density: 25 * sigmoid(-sdf / 0.01), sdf of a bumpy torus or a sphere
    ("noisy": a softer torus plus per-voxel Gaussian noise inside the sigmoid)."""
    p = grid_points(resolution, device=device)
    x, y, z = p.unbind(-1)
    if shape == "sphere":
        sdf = p.norm(dim=-1) - 0.6
    elif shape == "noisy":   # the torus plus per-voxel noise: many ambiguous cells, like random weights
        gen = torch.Generator().manual_seed(0)
        ring = torch.sqrt(x * x + y * y) - 0.55
        sdf = torch.sqrt(ring * ring + z * z) - 0.22
        noise = torch.randn(sdf.shape, generator=gen).to(device)
        return 25.0 * torch.sigmoid(-sdf / 0.05 + 2.0 * noise)
    else:
        ring = torch.sqrt(x * x + y * y) - 0.55
        sdf = torch.sqrt(ring * ring + z * z) - 0.22
        sdf = sdf + 0.03 * torch.sin(9 * x) * torch.sin(7 * y) * torch.sin(11 * z)
    return 25.0 * torch.sigmoid(-sdf / 0.01)


def _methods(device: torch.device):
    from skimage.measure import marching_cubes as sk_mc

    def torch_mc(vol_t, vol_np):
        verts, faces = marching_cubes(vol_t.to(device), LEVEL, method="torch")
        sync(device)
        return [verts.cpu().numpy(), faces.cpu().numpy()]

    methods = {
        "sharpit": lambda vol_t, vol_np: [t.numpy() for t in marching_cubes(vol_t, LEVEL, method="skimage")],
        "torch": torch_mc,
        "skimage": lambda vol_t, vol_np: sk_mc(vol_np, level=LEVEL)[:2],
        "lorensen": lambda vol_t, vol_np: sk_mc(vol_np, level=LEVEL, method="lorensen")[:2],
    }
    try:
        import mcubes

        methods["pymcubes"] = lambda vol_t, vol_np: mcubes.marching_cubes(vol_np, LEVEL)
    except ImportError:
        print("PyMCubes is not installed: its rows are skipped (pip install PyMCubes outside the project)",
              file=sys.stderr)
    return methods


def _to_voxels(name: str, verts: np.ndarray, resolution: int) -> np.ndarray:
    """Vertices in grid-index units (sharpit's come in [-1, 1])."""
    if name in ("sharpit", "torch"):
        return (verts.astype(np.float64) + 1.0) * (resolution - 1) / 2.0
    return verts.astype(np.float64)


def _compare(a: np.ndarray, b: np.ndarray):
    """(max distance from a's vertices to b's, from b's to a's, a's vertices farther than 1e-3 voxel)."""
    from scipy.spatial import cKDTree

    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return float(d_ab.max()), float(d_ba.max()), int((d_ab > 1e-3).sum())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu",
                        help="where the density grid is built and the torch method runs (the others run on the CPU)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--shape", default="torus", choices=["torus", "sphere", "noisy"],
                        help="torus (bumpy, default), sphere, or noisy (torus + per-voxel noise)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (grid construction)")
    parser.add_argument("--no-compare", action="store_true", help="skip the vertex-set comparison")
    parser.add_argument("--quick", action="store_true", help="32^3, one repeat, no warm-up (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions, args.repeats, args.warmup = [32], 1, 0

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = _methods(device)
    rows, checks = [], []
    for res in args.resolutions:
        vol_t = density_field(res, args.shape, device)
        sync(device)
        vol_t = vol_t.cpu()
        vol_np = vol_t.numpy()
        results = {}
        for name, fn in methods.items():
            for _ in range(args.warmup):
                fn(vol_t, vol_np)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = fn(vol_t, vol_np)
                times.append(time.perf_counter() - start)
            verts, faces = out
            results[name] = _to_voxels(name, np.asarray(verts), res)
            rows.append((res, name, statistics.median(times), min(times), len(verts), len(faces)))
        if not args.no_compare and "pymcubes" in results:
            for name in ("sharpit", "torch", "skimage", "lorensen"):
                checks.append((res, name, *_compare(results[name], results["pymcubes"])))

    cpu = f"{platform.processor() or platform.machine()} CPU"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"{cpu}, {datetime.date.today().isoformat()}, `{command}`, field {args.shape}, level {LEVEL}\n")
    print("| grid | method | median s | min s | vertices | faces |")
    print("|---|---|---|---|---|---|")
    for res, name, med, low, nv, nf in rows:
        print(f"| {res}^3 | {name} | {med:.3f} | {low:.3f} | {nv:,} | {nf:,} |")
    if checks:
        print("\n| grid | method vs pymcubes | max dist to pymcubes (voxels) | max dist from pymcubes | "
              "vertices not in pymcubes |")
        print("|---|---|---|---|---|")
        for res, name, d_ab, d_ba, extra in checks:
            print(f"| {res}^3 | {name} | {d_ab:.2e} | {d_ba:.2e} | {extra:,} |")


if __name__ == "__main__":
    main()
