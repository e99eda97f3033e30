#!/usr/bin/env bash
# One prepared GPU session for issue 9: chainrule's bench suites and the raw JAX / torch anchor,
# in one device call. Target: < 6 minutes on one H100 (jax 0.11.2, Python 3.12, torch, no
# pydantic). Installs nothing: the package runs from the tree via PYTHONPATH=src.
#
#   device run:  bash benchmarks/gpu_bench.sh          (results under $OUT)
#   CPU smoke:   CHAINRULE_BENCH_QUICK=1 OUT=/tmp/gb bash benchmarks/gpu_bench.sh
#
# Writes $OUT/bench.json, bench.md, bench.txt, anchor_ad.txt, env.txt: 5 files, within the
# device tool's limit of 8. Each step has its own timeout so a stuck one cannot eat the rest;
# bench.json is rewritten after every suite, so a timeout keeps what was measured.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
QUICK="${CHAINRULE_BENCH_QUICK:-0}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX takes 75% of GPU memory up front by default; torch runs in the same process (the ad
# suite's torch.func comparison), so leave it room.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"
T0=$SECONDS
step() { echo "[gpu_bench +$((SECONDS - T0))s] $*"; }

{
  date -u; uname -a; nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  "$PY" - <<'PY'
import importlib.metadata as md, sys
print("python", sys.version.split()[0])
for d in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "torch", "optax", "chex", "flax"):
    try:
        print(d, md.version(d))
    except md.PackageNotFoundError:
        print(d, "-")
try:
    import pydantic  # noqa: F401
    print("pydantic present")
except ImportError:
    print("pydantic absent (the bench path must not need it)")
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. chainrule's suites: ad first (the issue's targets), then check, norm, init.
step "chainrule bench ad check norm init"
BENCH_ARGS=(ad check norm init --json "$OUT/bench.json" --md "$OUT/bench.md")
[ "$QUICK" != "0" ] && BENCH_ARGS+=(--quick)
timeout "${BENCH_TIMEOUT:-240}" "$PY" -m chainrule.bench "${BENCH_ARGS[@]}" 2>&1 | tee "$OUT/bench.txt"
BENCH_RC=$?
step "bench exit status $BENCH_RC"

# 2. The anchor (raw JAX, torch.func, torch.compile on the same MLP) in the same session, with
# torch in TF32 to match JAX's default: the baseline every ratio is read against. ../shared
# does not travel to the device machine, so a vendored copy is the fallback.
ANCHOR=""
for a in shared/anchors/anchor_ad.py ../shared/anchors/anchor_ad.py benchmarks/anchors/anchor_ad.py; do
  [ -f "$a" ] && { ANCHOR="$a"; break; }
done
if [ -n "$ANCHOR" ]; then
  step "anchor $ANCHOR"
  ANCHOR_ARGS=(--tf32)
  [ "$QUICK" != "0" ] && ANCHOR_ARGS+=(--small)
  timeout "${ANCHOR_TIMEOUT:-150}" "$PY" "$ANCHOR" "${ANCHOR_ARGS[@]}" > "$OUT/anchor_ad.txt" 2>&1
  ANCHOR_RC=$?
  cat "$OUT/anchor_ad.txt"
  step "anchor exit status $ANCHOR_RC"
else
  echo "no anchor_ad.py found" | tee "$OUT/anchor_ad.txt"
  ANCHOR_RC=1
fi
step "done; files in $OUT"
ls -la "$OUT"
[ "$BENCH_RC" -eq 0 ] && [ "$ANCHOR_RC" -eq 0 ]
