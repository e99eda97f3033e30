#!/usr/bin/env bash
# One prepared GPU session: chainrule's bench suites and the raw JAX / torch anchor, in one
# device call. At most ~8 minutes on one H100/H200 (jax 0.11.2, Python 3.12, torch, no
# pydantic). Installs nothing: the package runs from the tree via PYTHONPATH=src.
#
#   device run:  bash benchmarks/gpu_bench.sh          (results under $OUT)
#   CPU smoke:   CHAINRULE_BENCH_QUICK=1 OUT=/tmp/gb bash benchmarks/gpu_bench.sh
#
# Writes $OUT/env.txt, log.txt, ad_norm.{json,md}, check.{json,md}, init.json, anchor_ad.txt:
# 8 files, the device tool's limit. Each step has its own timeout so a stuck one cannot eat the
# rest, and each group's JSON is written when it ends.
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

# 1. chainrule's suites, one process per group so that a slow group cannot eat the others' time:
# ad and norm first (the benchmark issue's targets, the norm bandwidth), then check (cold
# figures: fresh processes), then init. Each writes its JSON as soon as it ends.
QARG=()
[ "$QUICK" != "0" ] && QARG=(--quick)
BENCH_RC=0
run_suites() {  # name timeout suites...
  local name=$1 limit=$2
  shift 2
  step "chainrule bench $* (limit ${limit}s)"
  timeout "$limit" "$PY" -m chainrule.bench "$@" "${QARG[@]}" --json "$OUT/$name.json" \
    --md "$OUT/$name.md" 2>&1 | tee -a "$OUT/log.txt"
  local rc=${PIPESTATUS[0]}
  step "$name exit status $rc"
  [ "$rc" -eq 0 ] || BENCH_RC=$rc
}
run_suites ad_norm "${AD_TIMEOUT:-200}" ad norm
run_suites check "${CHECK_TIMEOUT:-170}" check
run_suites init "${INIT_TIMEOUT:-40}" init
rm -f "$OUT/init.md"  # the device tool returns at most 8 files

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
  timeout "${ANCHOR_TIMEOUT:-90}" "$PY" "$ANCHOR" "${ANCHOR_ARGS[@]}" > "$OUT/anchor_ad.txt" 2>&1
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
GPU_RC=$?  # the status of the suites and the anchor above

# 3. Curvature (issue 18): `chainrule bench curvature --size gpu` -- a tanh MLP [64, 256, 256, 10]
# (85k parameters), 2048 samples, float32 (TF32 matmuls: JAX's GPU default; the header says),
# against PyHessian and hessian-eigenthings when installed (their torch runs on the CPU here);
# the float64 reference is Lanczos at tol 1e-10 (the dense Hessian would be 58 GB).
CURV_ARGS=(curvature)
[ "$QUICK" = "0" ] && CURV_ARGS+=(--size gpu)
run_suites curvature "${CURVATURE_TIMEOUT:-240}" "${CURV_ARGS[@]}"
rm -f "$OUT/curvature.md"  # the JSON has every row; the device tool returns at most 8 files
[ "$GPU_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
