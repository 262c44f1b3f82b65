#!/usr/bin/env bash
# One GPU check on an NVIDIA GPU (nothing is downloaded; models are real architectures with random
# weights built from a config):
#   1. benchmarks/scale_step.py: a few remix-grpo steps of the R1-Distill-Qwen-1.5B architecture
#      (28 layers) with the r1-distill-1.5b preset's precision and token budgets at 2k-token
#      responses: rollout and update tokens/s, MFU of the update, peak memory;
#   2. benchmarks/throughput.py: rollout/update/sync throughput against the raw libraries
#      (Qwen2-0.5B's shape, bf16);
#   3. with more than one GPU: 3 remix-grpo steps of the 1.5B architecture (2 layers, random
#      weights, toy prompts) with 1 process and with one per GPU (FSDP2), same global batch:
#      step time and phases side by side (docs/scale.md). With one GPU it prints the command;
#   4. with vLLM importable: the same 3 steps on one GPU with the vLLM engine asleep during the
#      update (rollout.vllm_sleep=true) and awake, side by side: step time and the GPU memory in use
#      when the update starts (perf/gpu_memory_used_gb_before_update).
#
#   bash scripts/gpu_check.sh                 # writes into $OUT (device tool) or runs/gpu_check
#   BENCH_ARGS="--prompts 8 --n 4" bash scripts/gpu_check.sh
#
# With the `vllm` package importable (a GPU machine with `pip install vllm`, in an environment whose
# transformers satisfies vllm's pin), the vllm rows run too; without it they are reported as skipped.
# Python packages missing on the machine can be carried as wheels in ./.whl (gitignored); they are
# installed into /tmp/site first (the engine needs pydantic, which the CUDA image lacks).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST="${OUT:-runs/gpu_check}"
mkdir -p "$DEST"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if [[ "${SKIP_WHEELS:-0}" != "1" ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
    "$PY" - <<'PY'
import importlib.util, torch, transformers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("transformers", transformers.__version__)
print("vllm importable:", importlib.util.find_spec("vllm") is not None)
PY
} 2>&1 | tee "$DEST/gpu_env.txt"

# shellcheck disable=SC2086
timeout "${SCALE_TIMEOUT:-300}" "$PY" benchmarks/scale_step.py ${SCALE_ARGS:-} --json "$DEST/scale_step_gpu.json" 2>&1 \
    | grep -v -e "^Loading weights" -e "^Writing model" | tee "$DEST/scale_step_gpu.log"
echo "scale_step exit status: ${PIPESTATUS[0]}" | tee -a "$DEST/scale_step_gpu.log"

DEFAULT_ARGS="--model qwen2-0.5b --device cuda --dtype bfloat16 --prompts 32 --n 8 --max-new-tokens 256 --prompt-len 128 --repeats 3 --mini-batch 16"
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-240}" "$PY" benchmarks/throughput.py ${BENCH_ARGS:-$DEFAULT_ARGS} \
    --json "$DEST/throughput_gpu.json" 2>&1 | tee "$DEST/throughput_gpu.log"
status=${PIPESTATUS[0]}
echo "benchmark exit status: $status" | tee -a "$DEST/throughput_gpu.log"

NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
MULTI=(--preset r1-distill-1.5b --algorithm remix-grpo --steps 3 --set model.name_or_path=/tmp/r1-1.5b-2l
       --set data.train=toy --set data.heldout=toy --set data.heldout_size=16 --set rollout.prompts_per_step=32
       --set rollout.group_size=8 --set rollout.max_new_tokens=512 --set trainer.eval_every=3)
if (( NGPU > 1 )); then
    "$PY" -m remix_engine.cli make-model --shape r1-distill-1.5b --layers 2 --output /tmp/r1-1.5b-2l
    for n in 1 "$NGPU"; do
        timeout "${MULTI_TIMEOUT:-300}" "$PY" -m remix_engine.cli train --nproc "$n" --output "$DEST/multi_$n" "${MULTI[@]}" \
            > "$DEST/multi_$n.log" 2>&1
        echo "$n process(es): exit $?" | tee -a "$DEST/multi_gpu.txt"
        "$PY" - "$DEST/multi_$n/metrics.jsonl" <<'PY' | tee -a "$DEST/multi_gpu.txt"
import json, sys
for row in map(json.loads, open(sys.argv[1])):
    if row["step"]:
        print(f"  step {row['step']}: {row['timing_s/step']:.1f} s (gen {row['timing_s/gen']:.1f}, "
              f"update {row['timing_s/update']:.1f}, sync {row['timing_s/sync']:.1f})")
PY
    done
else
    echo "one GPU: on a node run  remix train --nproc <GPUs> --output runs/multi ${MULTI[*]}" | tee "$DEST/multi_gpu.txt"
fi

if "$PY" -c "import vllm" 2>/dev/null; then
    [[ -d /tmp/r1-1.5b-2l ]] || "$PY" -m remix_engine.cli make-model --shape r1-distill-1.5b --layers 2 --output /tmp/r1-1.5b-2l
    for sleep in true false; do
        timeout "${SLEEP_TIMEOUT:-300}" "$PY" -m remix_engine.cli train --output "$DEST/sleep_$sleep" "${MULTI[@]}" \
            --set rollout.vllm_sleep="$sleep" > "$DEST/sleep_$sleep.log" 2>&1
        echo "vllm_sleep=$sleep: exit $?" | tee -a "$DEST/sleep_mode.txt"
        "$PY" - "$DEST/sleep_$sleep/metrics.jsonl" <<'PY' | tee -a "$DEST/sleep_mode.txt"
import json, sys
for row in map(json.loads, open(sys.argv[1])):
    if row["step"]:
        print(f"  step {row['step']}: {row['timing_s/step']:.1f} s (gen {row['timing_s/gen']:.1f}, sync "
              f"{row['timing_s/sync']:.2f}); GPU memory in use before the update "
              f"{row.get('perf/gpu_memory_used_gb_before_update', float('nan')):.1f} GiB, update peak "
              f"{row.get('perf/max_memory_allocated_gb', float('nan')):.1f} GiB")
PY
    done
else
    echo "vllm not importable: sleep-mode comparison skipped" | tee "$DEST/sleep_mode.txt"
fi
exit "$status"
