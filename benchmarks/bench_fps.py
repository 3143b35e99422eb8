"""Time the farthest-point sampling of Shap-E's encoder inputs (the CPU-heavy part of encoding).

    python benchmarks/bench_fps.py [--points 524288] [--picks 2048] [--threads 1] [--repeats 2] [--device cpu]

Random points in [-1, 1]^3; :func:`sharpit.coarse.encoder_inputs.farthest_point_sample` picks
``--picks`` of them (the released encoder picks 16384 of 2^19). Prints the seconds of each repeat
and the extrapolation to 16384 picks (the cost is linear in the picks).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchutil import sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2 ** 19)
    parser.add_argument("--picks", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from sharpit.coarse.encoder_inputs import farthest_point_sample

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    points = (torch.rand(args.points, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    for r in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        farthest_point_sample(points, args.picks, torch.Generator().manual_seed(1))
        sync(device)
        seconds = time.perf_counter() - start
        print(f"repeat {r}: {seconds:.2f} s for {args.picks} picks of {args.points} points "
              f"({seconds * 16384 / args.picks:.1f} s extrapolated to 16384 picks)")


if __name__ == "__main__":
    main()
