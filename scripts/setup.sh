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
stamp="$venv/.sharpit-setup-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)-$extras"
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
# The Khronos glTF validator (a Node package) lets the tests check exported GLBs; optional.
if command -v npm >/dev/null 2>&1 && [ ! -d "$root/.tools/node_modules/gltf-validator" ]; then
  echo "[setup] installing the glTF validator into .tools/"
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && npm install --silent --no-audit --no-fund --prefix . gltf-validator@2.0.0-dev.3.10 >/dev/null 2>&1) \
    || echo "[setup] could not install gltf-validator; the GLB validation test will be skipped"
fi
rm -f "$venv"/.sharpit-setup-*
touch "$stamp"
echo "[setup] done"
