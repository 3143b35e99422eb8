#!/usr/bin/env bash
# Set up if needed, then run the whole test suite offline. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$root/.venv/bin/python" -m pytest -q -n "${SHARPIT_TEST_WORKERS:-2}" "$@"
