"""Benchmark: six Zero123++ v1.2 views of a ~100k-face mesh at 320x320 (one 3x2 grid).

Prints a markdown table with the device, date, command, median / min time per grid and peak
memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set size).

    python benchmarks/bench_render.py --device cpu --repeats 10
    python benchmarks/bench_render.py --device cuda --repeats 50
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

import torch
from benchutil import peak_memory_bytes, sync

from sharpit.cameras import zero123plus_cameras
from sharpit.render import render_views
from sharpit.testing.meshes import uv_sphere


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32"],
                        help="vertex dtype (the rasteriser works in float32, exact float32/float64 edge tests)")
    parser.add_argument("--faces", type=int, default=100_000, help="approximate number of triangles")
    parser.add_argument("--size", type=int, default=320, help="side of each view in pixels")
    parser.add_argument("--shading", default="unlit", choices=["unlit", "lambertian"])
    parser.add_argument("--supersample", type=int, default=1)
    parser.add_argument("--cull-backfaces", action="store_true")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    side = max(3, round(math.sqrt(args.faces / 2)))
    mesh = uv_sphere(n_lat=side, n_lon=side).to(device)
    cameras = zero123plus_cameras().to(device)
    kwargs = dict(size=args.size, shading=args.shading, supersample=args.supersample, backend="torch",
                  cull_backfaces=args.cull_backfaces)

    for _ in range(args.warmup):
        render_views(mesh, cameras, **kwargs)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        render_views(mesh, cameras, **kwargs)
        sync(device)
        times.append(time.perf_counter() - start)
    peak = peak_memory_bytes(device) / 2**20

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print("| device | date | command | faces | views | size | median ms/grid | min ms/grid | peak memory MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {name} | {datetime.date.today().isoformat()} | `{command}` | {mesh.num_faces} | {len(cameras)} | "
          f"{args.size} | {statistics.median(times) * 1e3:.1f} | {min(times) * 1e3:.1f} | "
          f"{peak:.0f}{' (process RSS)' if device.type == 'cpu' else ''} |")


if __name__ == "__main__":
    main()
