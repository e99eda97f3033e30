#!/usr/bin/env bash
# Device follow-up: the cold gradient check on the GPU with and without chainrule's compile
# options (O0 + no GEMM autotuning vs XLA's defaults), check_grads beside it, then the check
# suite. Results under $OUT.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
{
  for mode in 1 0 1; do
    echo "CHAINRULE_CHECK_O0=$mode chainrule:"
    CHAINRULE_CHECK_O0=$mode timeout 90 "$PY" -m chainrule.bench.check --child mlp chainrule float32
  done
  echo "check_grads:"
  timeout 90 "$PY" -m chainrule.bench.check --child mlp jax float32
} 2>&1 | tee "$OUT/profile.txt"
timeout "${CHECK_TIMEOUT:-240}" "$PY" -m chainrule.bench check --json "$OUT/check.json" \
  --md "$OUT/check.md" 2>&1 | grep -v "^check  zoo float" | tee -a "$OUT/profile.txt"
