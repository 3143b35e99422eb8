#!/usr/bin/env bash
# Every GPU benchmark in one run, for the `device` tool's GPU machine (one H100/H200, under 8
# minutes in total): render, coarse (Shap-E), refine per CFG step, reconstruct, marching cubes,
# end to end fp16, resident vs offloaded peak memory, a training step at batch 3 with peak
# memory, latent editing (encode + DDPM inversion + regeneration), one texture-optimisation
# (score distillation) step, and the evaluation metrics' cost per asset. Each benchmark prints its own markdown rows; everything goes to stdout and to
# ${OUT:-benchmarks/out}/gpu_suite.md, ready to paste into benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_suite.sh                  # on the GPU machine, from the repository root
#   SUITE_DEVICE=cpu SUITE_QUICK=1 bash benchmarks/gpu_suite.sh   # a CPU smoke run of the plumbing
#
# Every step has its own time limit (SUITE_STEP_LIMIT seconds, default 150), and a failing step is
# reported and skipped, so one problem does not cost the whole (scarce) GPU session.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
device="${SUITE_DEVICE:-cuda}"
quick="${SUITE_QUICK:-0}"
limit="${SUITE_STEP_LIMIT:-150}"
out_dir="${OUT:-benchmarks/out}"
mkdir -p "$out_dir"
report="$out_dir/gpu_suite.md"
py="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
failed=0

if [ "$quick" = 1 ]; then   # tiny settings: checks that every command runs, not how fast
  render_args="--faces 2000 --repeats 1 --warmup 0"
  coarse_args="--steps 2 --prior-calls 1 --grids 32 --nerf-size 32 --nerf-views 1"
  refine_args="--steps 1 --warmup 0 --mode concat"
  recon_args="--grid 32 --mesh-faces 2000 --face-budget 1000 --texture-size 64 --skip-texture"
  mc_args="--quick --no-compare"
  e2e_args="--coarse-steps 2 --refine-steps 1 --coarse-grid-size 32 --mesh-resolution 32"
  train_args="--batch 1 --steps 1"
  edit_args="--steps 4 --timed-steps 2 --skip-encode"
  optimize_args="--steps 1 --warmup 0 --faces 2000"
  evaluate_args="--repeats 1 --points 1000"
else
  render_args="--faces 100000 --supersample 2 --repeats 20 --warmup 3"
  coarse_args="--steps 64 --grids 128 256"
  refine_args="--steps 10 --warmup 3"
  recon_args="--grid 256 --repeats 3"
  mc_args="--resolutions 128 256 --repeats 5 --no-compare"
  e2e_args=""
  train_args="--batch 3 --steps 5"
  edit_args="--dtype float16"
  optimize_args="--dtype fp16 --steps 10 --warmup 2"
  evaluate_args="--repeats 3"
fi

{
  echo "# gpu_suite ($(date -u +%Y-%m-%d), device $device, quick=$quick)"
  if [ "$device" = cuda ]; then
    "$py" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')"
  fi
} | tee "$report"

step() {   # step NAME COMMAND...
  local name="$1"; shift
  echo -e "\n## $name\n\`$*\`\n" | tee -a "$report"
  local start=$SECONDS
  timeout "$limit" "$@" 2>"$out_dir/$name.err" | tee -a "$report"
  local rc=${PIPESTATUS[0]}
  echo "(${name}: exit $rc, $((SECONDS - start)) s)" | tee -a "$report"
  if [ "$rc" != 0 ]; then
    failed=$((failed + 1))
    tail -n 20 "$out_dir/$name.err" | tee -a "$report"
  fi
}

step render "$py" benchmarks/bench_render.py --device "$device" $render_args
step coarse "$py" benchmarks/bench_coarse.py --device "$device" $coarse_args
step refine "$py" benchmarks/bench_refine.py --device "$device" $refine_args
step reconstruct "$py" benchmarks/bench_reconstruct.py --device "$device" $recon_args
step marching_cubes "$py" benchmarks/bench_marching_cubes.py --device "$device" $mc_args
step end_to_end "$py" benchmarks/bench_end_to_end.py --device "$device" $e2e_args
step offload "$py" benchmarks/bench_offload.py --device "$device" $e2e_args
step train "$py" benchmarks/bench_train.py --device "$device" $train_args
step edit "$py" benchmarks/bench_edit.py --device "$device" $edit_args
step optimize "$py" benchmarks/bench_optimize.py --device "$device" $optimize_args
step evaluate "$py" benchmarks/bench_evaluate.py --device "$device" $evaluate_args

echo -e "\n$failed step(s) failed; report in $report" | tee -a "$report"
exit $((failed > 0))
