"""Benchmark: six Zero123++ v1.2 views of a ~100k-face mesh at 320x320 (one 3x2 grid).

Prints a markdown table with the device, date, command, median / min time per grid and peak
memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set size).

    python benchmarks/bench_render.py --device cpu --repeats 10
    python benchmarks/bench_render.py --device cuda --repeats 50
    python benchmarks/bench_render.py --peers --repeats 15

sharpit renders with ``render_views``' defaults (the torch backend, automatic back-face culling)
unless ``--cull-backfaces`` / ``--no-cull-backfaces`` say otherwise.

``--baseline DIR`` also times ``render_views`` of another sharpit source folder (before/after in
one run). ``--peers`` also times the OpenGL renderers of :mod:`sharpit.render.gl_reference` that work here
(moderngl on EGL and pyrender on OSMesa; on a CPU-only machine both are Mesa's llvmpipe) on the
same mesh and cameras, each in its own process (two OpenGL libraries cannot share one), in
turns with sharpit: every round runs each renderer once, in a rotating order, so that load from
other work on the machine falls on all of them alike. Each peer's time covers what a caller
does per mesh: uploading it, drawing the views and reading the images back as float tensors
(its context and shaders are made once). It also reports how each peer's image agrees with
sharpit's (coverage IoU and mean colour difference where both cover).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch
from benchutil import peak_memory_bytes, sync

from sharpit.cameras import zero123plus_cameras
from sharpit.render import render_views
from sharpit.testing.meshes import uv_sphere

PEER_NAMES = ("moderngl", "pyrender")


def _mesh(faces: int):
    side = max(3, round(math.sqrt(faces / 2)))
    return uv_sphere(n_lat=side, n_lon=side)


def _agreement(images, masks, reference) -> dict:
    """Coverage IoU and colour differences of a peer's views against sharpit's."""
    ours = reference.alpha[:, 0].cpu() > 0
    both = ours & masks
    diff = (images - reference.images.cpu()).abs().amax(1)[both]
    return {"iou": float(both.sum() / (ours | masks).sum()), "mean_abs": float(diff.mean()),
            "share_over_2_255": float((diff > 2 / 255).float().mean())}


class _Baseline:
    """``render_views`` of another sharpit checkout (``--baseline``), as a renderer."""

    name = "baseline"

    def __init__(self, size: int, **kwargs):
        import sharpit

        self.size, self.kwargs = size, kwargs
        self.device = f"sharpit {sharpit.__version__} `render_views` from {os.path.dirname(os.path.dirname(sharpit.__file__))}"

    def render(self, mesh, cameras):
        out = render_views(mesh, cameras, size=self.size, **self.kwargs)
        return out.images, out.alpha[:, 0] > 0

    def release(self) -> None:
        pass


def _worker(name: str, args) -> None:
    """A renderer in its own process: answers each "run" line on stdin with its time in seconds."""
    torch.set_num_threads(args.threads)
    mesh, cameras = _mesh(args.faces), zero123plus_cameras()
    if name == "baseline":
        renderer = _Baseline(args.size, **_render_kwargs(args))
        renderer.render(mesh, cameras)
        print(json.dumps({"device": renderer.device}), flush=True)
    else:
        from sharpit.render import gl_reference

        if not gl_reference.PEERS[name].available():
            print(json.dumps({"error": f"{name} is not available here"}), flush=True)
            return
        renderer = gl_reference.PEERS[name](args.size)
        images, masks = renderer.render(mesh, cameras)
        reference = render_views(mesh, cameras, size=args.size)
        print(json.dumps({"device": renderer.device, **_agreement(images, masks, reference)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        renderer.render(mesh, cameras)
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
    renderer.release()


def _render_kwargs(args) -> dict:
    """render_views' settings from the command line (its defaults unless given)."""
    return dict(shading=args.shading, supersample=args.supersample,
                cull_backfaces=True if args.cull_backfaces else False if args.no_cull_backfaces else None)


class _Peer:
    def __init__(self, name: str, args, source: str = None):
        command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--size", str(args.size),
                   "--faces", str(args.faces), "--threads", str(args.threads), "--shading", args.shading,
                   "--supersample", str(args.supersample)]
        command += ["--cull-backfaces"] if args.cull_backfaces else ["--no-cull-backfaces"] if args.no_cull_backfaces else []
        env = dict(os.environ)
        if source:  # import sharpit from that checkout
            env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(source)] + env.get("PYTHONPATH", "").split(os.pathsep))
        self.name = name
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = json.loads(self.proc.stdout.readline() or '{"error": "the worker died"}')

    def run(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32"],
                        help="vertex dtype (the rasteriser works in float32, exact float32/float64 edge tests)")
    parser.add_argument("--faces", type=int, default=100_000, help="approximate number of triangles")
    parser.add_argument("--size", type=int, default=320, help="side of each view in pixels")
    parser.add_argument("--shading", default="unlit", choices=["unlit", "lambertian"])
    parser.add_argument("--supersample", type=int, default=1)
    cull = parser.add_mutually_exclusive_group()
    cull.add_argument("--cull-backfaces", action="store_true", help="force back-face culling")
    cull.add_argument("--no-cull-backfaces", action="store_true",
                      help="disable back-face culling (default: render_views' automatic choice, which culls "
                           "this closed mesh)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--peers", action="store_true",
                        help="also time the OpenGL peers (moderngl/EGL, pyrender/OSMesa) that work here, in turns")
    parser.add_argument("--peer", action="append", choices=PEER_NAMES,
                        help="with --peers: only these peers (repeatable; default: all)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also time render_views of the sharpit package in this source folder (e.g. an earlier "
                             "commit's `git archive`), in its own process and in the same turns")
    parser.add_argument("--worker", choices=PEER_NAMES + ("baseline",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mesh = _mesh(args.faces).to(device)
    cameras = zero123plus_cameras().to(device)
    kwargs = dict(size=args.size, **_render_kwargs(args))
    if args.peers and (args.shading != "unlit" or args.supersample != 1):
        print("<!-- the OpenGL peers draw unlit vertex colours, one sample per pixel, whatever the options -->")

    def sharpit_run() -> float:
        sync(device)
        start = time.perf_counter()
        render_views(mesh, cameras, **kwargs)
        sync(device)
        return time.perf_counter() - start

    peers = []
    if args.baseline:
        peers.append(_Peer("baseline", args, source=args.baseline))
    if args.peers:
        peers += [_Peer(name, args) for name in args.peer or PEER_NAMES]
    for peer in [p for p in peers if "error" in p.info]:
        print(f"<!-- {peer.name}: {peer.info['error']} -->")
        peer.close()
        peers.remove(peer)
    runners = [("sharpit", sharpit_run)] + [(p.name, p.run) for p in peers]
    times = {name: [] for name, _ in runners}
    try:
        for _ in range(args.warmup):
            for _, run in runners:
                run()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for r in range(args.repeats):
            for name, run in runners[r % len(runners):] + runners[:r % len(runners)]:
                times[name].append(run())
    finally:
        for peer in peers:
            peer.close()
    peak = peak_memory_bytes(device) / 2**20

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    ours = statistics.median(times["sharpit"])
    print("| device | date | command | faces | views | size | median ms/grid | min ms/grid | peak memory MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {name} | {datetime.date.today().isoformat()} | `{command}` | {mesh.num_faces} | {len(cameras)} | "
          f"{args.size} | {ours * 1e3:.1f} | {min(times['sharpit']) * 1e3:.1f} | "
          f"{peak:.0f}{' (process RSS)' if device.type == 'cpu' else ''} |")
    if peers:
        print()
        print(f"Medians of {args.repeats} rounds; each round runs every renderer once, in a rotating order.")
        print()
        print("| renderer | median ms/grid | min ms/grid | sharpit / renderer (medians) | mask IoU vs sharpit | "
              "mean abs colour diff | pixels > 2/255 apart |")
        print("|---|---|---|---|---|---|---|")
        print(f"| sharpit `render_views` ({name}) | {ours * 1e3:.1f} | {min(times['sharpit']) * 1e3:.1f} | 1.00 | "
              "| | |")
        for peer in peers:
            t, info = times[peer.name], peer.info
            agreement = (f"{info['iou']:.5f} | {info['mean_abs']:.2e} | {info['share_over_2_255']:.2%}"
                         if "iou" in info else " | |")
            print(f"| {peer.name}: {info['device']} | {statistics.median(t) * 1e3:.1f} | {min(t) * 1e3:.1f} | "
                  f"{ours / statistics.median(t):.2f} | {agreement} |")


if __name__ == "__main__":
    main()
