#!/usr/bin/env bash
# The multi-device suite on a machine with one or more accelerators, in one device call:
# `chainrule bench multidevice` over d = 1, 2, 4, ... of the local devices (in-process, JAX's
# own sharding). On a one-GPU machine only the d = 1 row exists, and it carries the target: the
# data-parallel path over one device costs at most 1.05x the plain path. ~2-4 minutes on one
# H100/H200. Installs nothing: the package runs from the tree via PYTHONPATH=src.
#
#   device run:  bash benchmarks/multi_gpu_bench.sh              (results under $OUT)
#   CPU smoke:   CHAINRULE_BENCH_QUICK=1 OUT=/tmp/mgb bash benchmarks/multi_gpu_bench.sh
#
# Writes $OUT/env.txt, multidevice.json, multidevice.md, log.txt.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
QUICK="${CHAINRULE_BENCH_QUICK:-0}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
{
  date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import jax; print("jax", jax.__version__, jax.default_backend(), jax.devices())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
QARG=()
[ "$QUICK" != "0" ] && QARG=(--quick)
timeout "${MULTI_GPU_BENCH_LIMIT:-480}" "$PY" -m chainrule.bench multidevice "${QARG[@]}" \
  --json "$OUT/multidevice.json" --md "$OUT/multidevice.md" 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "multi_gpu_bench: exit status $rc; results in $OUT"
exit "$rc"
