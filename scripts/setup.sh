#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Safe to re-run: it only
# reinstalls when setup.cfg changed. On a machine without an NVIDIA driver it installs the
# CPU build of torch first, so pip never pulls multi-GB CUDA wheels.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
extras="${SHARPIT_EXTRAS:-dev}"
stamp="$venv/.sharpit-setup-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)-$extras-blender${SHARPIT_BLENDER:-0}"
if [ -f "$stamp" ]; then
  exit 0
fi
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing torch with CUDA"
    "${pip[@]}" install -q "torch>=2.4"
  else
    echo "[setup] no GPU: installing the CPU build of torch"
    "${pip[@]}" install -q "torch==2.13.0" 2>/dev/null \
      || "${pip[@]}" install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "[setup] installing sharpit[$extras]"
"${pip[@]}" install -q -e ".[$extras]"
# FID (sharpit/evaluation/fid.py) uses torch-fidelity's Inception. torch-fidelity lists torchvision,
# whose PyPI wheels are CUDA builds that would replace a CPU torch (and fail to import against
# it); FID needs nothing of torchvision, so it is installed without dependencies (the others,
# numpy, scipy, pillow, tqdm, come with sharpit). The same holds for the lpips package, whose
# bundled v0.1 linear layers sharpit's own LPIPS reads (sharpit/evaluation/lpips.py) without
# importing it.
case ",$extras," in
  *,dev,*|*,eval,*) "${pip[@]}" install -q --no-deps "torch-fidelity>=0.3" "lpips>=0.1.4" ;;
esac
# The Khronos glTF validator (a Node package) lets the tests check exported GLBs; optional.
if command -v npm >/dev/null 2>&1 && [ ! -d "$root/.tools/node_modules/gltf-validator" ]; then
  echo "[setup] installing the glTF validator into .tools/"
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && npm install --silent --no-audit --no-fund --prefix . gltf-validator@2.0.0-dev.3.10 >/dev/null 2>&1) \
    || echo "[setup] could not install gltf-validator; the GLB validation test will be skipped"
fi
# Blender as a Python module (bpy, ~370 MB, CPython 3.11 only) renders training targets with
# Cycles; opt in with SHARPIT_BLENDER=1. --no-deps: bpy pins numpy<2, which the rest of the
# stack does not use; the parts of bpy that sharpit calls work with numpy 2 (tests/test_blender_renderer.py).
if [ "${SHARPIT_BLENDER:-0}" = "1" ]; then
  if "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "[setup] installing bpy (Blender) for the Blender target renderer"
    "${pip[@]}" install -q --no-deps "bpy==5.0.1" zstandard cython
  else
    echo "[setup] SHARPIT_BLENDER=1 ignored: bpy wheels exist for Python 3.11 only"
  fi
fi
rm -f "$venv"/.sharpit-setup-*
touch "$stamp"
echo "[setup] done"
