"""Text to 3D: ``python -m inference.generate --prompt "a red chair" --out outputs/chair``.

Batches: ``--prompts FILE`` (one prompt per line) writes one folder per prompt under ``--out``;
under ``accelerate launch`` or ``torchrun`` the prompts are split across processes, and a re-run
skips finished prompts and redoes half-written ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from inference.common import (add_common_args, check_done_items, check_model_flags, check_output, check_weights,
                              collect_prompts, expected_parameters, generation_overrides, main_guard,
                              optimize_state_path, plan_items, prog, run_items)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("generate"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="what to make")
    src.add_argument("--prompts", help="a text file with one prompt per line (batch)")
    parser.add_argument("--coarse-steps", type=int, default=None, help="Shap-E steps (64)")
    parser.add_argument("--coarse-guidance-scale", type=float, default=None, help="Shap-E CFG scale (15)")
    add_common_args(parser)
    return parser


def _main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_model_flags(args)   # before any import or file access
    overrides = generation_overrides(args, coarse_steps=args.coarse_steps,
                                     coarse_guidance_scale=args.coarse_guidance_scale)
    prompts, batch = collect_prompts(args, "a red wooden chair")
    items = plan_items(prompts, Path(args.out), args.seed, batch)
    check_output(args.out, args.overwrite, batch)
    check_weights(args, need_coarse=True)
    expected = expected_parameters(args, overrides, mode="generate")
    check_done_items(items, expected, args.overwrite)

    def run_one(pipe, item):
        return pipe.generate(item.prompt, seed=item.seed, optimize_state=optimize_state_path(item), **overrides)

    return run_items(items, args, run_one, expected, need_coarse=True, batch=batch)


def main(argv: Optional[List[str]] = None) -> int:
    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
