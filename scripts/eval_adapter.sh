#!/usr/bin/env bash
# The comparison set every candidate adapter is measured on before it may replace the shipped one
# (docs/BENCHMARKS.md, sessions 15-20): BABILong QA1/QA2 at 4K, the pass key at 2K/8K/32K, perplexity with and
# without memory, and chat kept; each benchmark writes its JSON into OUT, a log of the tables goes to OUT/log.
#
#   scripts/eval_adapter.sh ADAPTER OUT [BABI_SEEDS] [PASSKEY_SEEDS]
#   EXTRA=1 scripts/eval_adapter.sh runs/qa4/adapter.safetensors runs/s20/qa4   # all default seeds: 1,474 s
#   EXTRA=1 scripts/eval_adapter.sh default runs/s20/st8 "2 3" ""                 # only bAbI seeds 2-3: 465 s
#
# Segments of SEG tokens (default 1024, the length every comparison before session 23 used; SEG=default reads
# with the adapter's own), greedy decoding, 2 threads (times: a 2-core Zen 4, bf16). An empty seed list skips
# that benchmark. EXTRA=1 adds QA1 at 32K (10 questions, seed 0; about 260 s).
set -euo pipefail
adapter=${1:?adapter file or 'default'}
out=${2:?output folder}
babi_seeds=${3-"0 1 2 3"}
pk_seeds=${4-"1 2 3"}
mkdir -p "$out"
seg=${SEG:-1024}
common=(--adapter "$adapter" --threads 2 -q)
[[ "$seg" == default ]] || common+=(--segment-len "$seg")
run() { echo "\$ infini $*" >>"$out/log"; infini "$@" >>"$out/log"; }
for s in $babi_seeds; do
  run bench babilong "${common[@]}" --task qa1,qa2 --lengths 4k --samples 10 --seed "$s" --json "$out/bl4k_s$s.json"
done
for s in $pk_seeds; do
  run bench passkey "${common[@]}" --lengths 2k,8k --samples 4 --seed "$s" --json "$out/pk8k_s$s.json"
  run bench passkey "${common[@]}" --lengths 32k --samples 2 --seed "$s" --json "$out/pk32k_s$s.json"
done
run bench ppl "${common[@]}" --tokens 8k --json "$out/ppl.json"
run bench chat --adapter "$adapter" --threads 2 -q --json "$out/chat.json"
if [[ "${EXTRA:-0}" == 1 ]]; then
  run bench babilong "${common[@]}" --task qa1 --lengths 32k --samples 10 --seed 0 --json "$out/bl32k_s0.json"
fi
echo "done: $out" >>"$out/log"
