#!/usr/bin/env bash
# Device follow-up for the gradient check on a GPU, one call (~4-5 minutes on an H100/H200):
#  1. benchmarks/gpu_check_variants.py: the cold MLP check under XLA option variants, with
#     check_grads beside it (variants.jsonl: compile events, second-point split);
#  2. the fastest variant's options (chosen.json; {} = chainrule's defaults) exported as
#     CHAINRULE_CHECK_XLA_OPTIONS, then the whole `chainrule bench check` suite in one run.
#
#   device run:  bash benchmarks/gpu_check_profile.sh        (results under $OUT)
#   CPU smoke:   QUICK=1 OUT=/tmp/gp PYTHON=.venv/bin/python bash benchmarks/gpu_check_profile.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
Q=()
[ "${QUICK:-0}" != "0" ] && Q=(--quick)
mkdir -p "$OUT"
T0=$SECONDS
{ date -u; nvidia-smi -L 2>/dev/null; "$PY" -c "import jax, sys; print(sys.version.split()[0], jax.__version__, jax.devices())"; } \
  > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout "${VARIANTS_TIMEOUT:-200}" "$PY" benchmarks/gpu_check_variants.py "${Q[@]}" \
  | tee "$OUT/variants.jsonl"
"$PY" benchmarks/gpu_check_variants.py --pick "$OUT/variants.jsonl" > "$OUT/chosen.json" \
  || echo '{}' > "$OUT/chosen.json"
echo "[+$((SECONDS - T0))s] chosen options: $(cat "$OUT/chosen.json")"
if [ "$(cat "$OUT/chosen.json")" != "{}" ]; then
  export CHAINRULE_CHECK_XLA_OPTIONS="$(cat "$OUT/chosen.json")"
fi
timeout "${CHECK_TIMEOUT:-240}" "$PY" -m chainrule.bench check "${Q[@]}" --json "$OUT/check.json" \
  --md "$OUT/check.md" 2>&1 | grep -v "^check  zoo float" | tee "$OUT/log.txt"
echo "[+$((SECONDS - T0))s] done"
