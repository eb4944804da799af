#!/usr/bin/env bash
# Several training runs side by side on one lent GPU, then each adapter benchmarked there, and the shipped
# adapter benchmarked alongside as the baseline read the same way (same samples, bf16 on the GPU).
# A training step at these sizes is bound by kernel launches and Python, not by the GPU's arithmetic, so
# processes side by side each keep most of their own speed. Everything is packed into OUT/jobs.tgz (the
# checkpoints left out) and OUT/tail.txt, because the device tool brings back at most 8 files.
# Usage: scripts/device/variants.sh OUT [BUDGET_S] [TRAIN_STOP_S] [DEADLINE_S]
# A quick check of the script without a GPU (tiny runs, short benchmarks):
#   JOB_DEVICE=cpu JOB_K=16 JOB_EVALS=pk_short JOB_SETS="optim.batch_size=1 curriculum.start_min=1
#   curriculum.start_max=2 curriculum.end_min=1 curriculum.end_max=2 model.segment_len=64" \
#   scripts/device/variants.sh /tmp/v 15 60 150
set -u
OUT=$1
BUDGET=${2:-230}
STOP=${3:-290}
DEADLINE=${4:-440}
JOBS=${JOBS_DIR:-/tmp/jobs}
CONFIG=infinicli/train/gpu_stage10.toml
SHIPPED=infinicli/adapters/smollm2-135m.safetensors
EVALS=${JOB_EVALS:-pk_short,pk_128k,qa1_4k,ppl,pk_1m}
mkdir -p "$JOBS" "$OUT"
common=(--config "$CONFIG" --budget "$BUDGET" --train-stop "$STOP" --deadline "$DEADLINE" --evals "$EVALS"
  --set "model.init_adapter=$SHIPPED" --set run.threads=2 --set "run.device=${JOB_DEVICE:-cuda}")
extra=()
for s in ${JOB_SETS:-}; do extra+=(--set "$s"); done  # a local check's smaller runs
job() {
  local name=$1
  shift
  timeout -s INT -k 15 $((DEADLINE + 40)) python3 scripts/device/run_job.py "$JOBS/$name" "$@" \
    >"$JOBS/$name.log" 2>&1 &
}
# the shipped adapter: no training, benchmarks only
job shipped --adapter "$SHIPPED" --deadline "$DEADLINE" --evals "$EVALS"
# the recipe as written: 8-32 segments of 256 per sample at the end
job long "${common[@]}" "${extra[@]}"
# product-length segments (512 since session 23): 4-12 growing to 8-32 segments of 512
job prod "${common[@]}" --set model.segment_len=512 --set curriculum.start_min=4 --set curriculum.start_max=12 \
  --set curriculum.end_min=8 --set curriculum.end_max=32 "${extra[@]}"
# QA2 stories too (two supporting facts: where is the object a person carried), as many bAbI samples in all
job qa12 "${common[@]}" --set 'data.babi_tasks=[1,2]' "${extra[@]}"
wait
tar czf "$OUT/jobs.tgz" --exclude=checkpoint.safetensors -C "$JOBS" .
for f in "$JOBS"/*.log; do
  echo "== $f"
  grep -v "^\[.*step [0-9]*/" "$f" | tail -n 40
done >"$OUT/tail.txt"
cat "$OUT/tail.txt"
