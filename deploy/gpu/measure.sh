#!/usr/bin/env bash
# GPU numbers for the standard profile's architectures, on one CUDA machine, in a few minutes.
#
#   deploy/gpu/measure.sh                  # fp16 and bf16, batch sizes 8 and 32, 64 images
#   OUT=/tmp/gpu DTYPES=fp16 BATCHES=16 IMAGES=128 COMPILE=1 deploy/gpu/measure.sh
#
# 1. stops at once, before installing or building anything, when there is no CUDA device;
# 2. uses .venv (or creates it with `make venv`, which needs the package index);
# 3. builds the standard-shapes models once (random weights at real size, about 4.3 GB in the
#    model folder: MODEL_DIR, default $STREAMDETECT_CACHE/models; no model hub is needed);
# 4. runs `streamdetect bench --models-only` for each dtype (and once with torch.compile when
#    COMPILE=1), writing JSON and text under ${OUT:-.run/gpu}, and prints a short table.
# The numbers are throughput only: random weights make the verdicts meaningless.
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-.run/gpu}"
DTYPES="${DTYPES:-fp16 bf16}"
BATCHES="${BATCHES:-8,32}"
IMAGES="${IMAGES:-64}"
COMPILE="${COMPILE:-0}"

no_cuda() {
    echo "measure.sh: no CUDA device: $1. GPU numbers need a machine with an NVIDIA GPU and its driver." >&2
    exit 3
}

# CUDA first: the check takes milliseconds; the venv and the models take minutes.
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || no_cuda "nvidia-smi lists no GPU"
elif ! compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
    no_cuda "no nvidia-smi and no /dev/nvidia* device"
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "measure.sh: no .venv here; creating it with make venv"
    make venv
fi
PY=.venv/bin/python
if ! torch_version=$("$PY" -c 'import sys, torch; print(torch.__version__); sys.exit(not torch.cuda.is_available())'); then
    no_cuda "torch ${torch_version:-(not importable)} sees none"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing is downloaded: the models are built here
# (the ${MODEL_ARGS[@]+...} form below: an empty array under set -u fails on bash before 4.4)
MODEL_ARGS=()
if [[ -n "${MODEL_DIR:-}" ]]; then MODEL_ARGS=(--model-dir "$MODEL_DIR"); fi
mkdir -p "$OUT_DIR"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true

echo "== building the standard-shapes models (once; later runs reuse them)"
start=$SECONDS
"$PY" -m streamdetect.cli --log-level warning models prepare --profile standard-shapes ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} \
    | tee "$OUT_DIR/prepare.txt"
echo "   ready in $((SECONDS - start)) s"

bench() {  # name, then extra bench flags
    local name=$1; shift
    echo "== bench $name"
    "$PY" -m streamdetect.cli --log-level warning bench --models-only --profile standard-shapes --device cuda \
        --images "$IMAGES" --batch-sizes "$BATCHES" ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} --json "$OUT_DIR/bench-$name.json" "$@" \
        | tee "$OUT_DIR/bench-$name.txt"
}
RUNS=()
for dtype in $DTYPES; do
    bench "$dtype" --dtype "$dtype"
    RUNS+=("$OUT_DIR/bench-$dtype.json")
done
if [[ "$COMPILE" == 1 ]]; then
    bench "fp16-compile" --dtype fp16 --compile
    RUNS+=("$OUT_DIR/bench-fp16-compile.json")
fi

echo "== summary (engine: images/s and latency over the burst; stages: ms per image, each alone on one batch)"
"$PY" - "${RUNS[@]}" <<'PYEOF'
import json
import sys
from pathlib import Path

print(f"{'run':14} {'batch':>5} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'caption':>8} {'generate':>9} "
      f"{'embed':>7} {'unet':>6} {'vae':>6}")
for path in sys.argv[1:]:
    result = json.loads(Path(path).read_text())
    name = Path(path).stem.removeprefix("bench-")
    if "reference" in result:
        r = result["reference"]
        print(f"{name:14} {'ref':>5} {r['images_per_s']:9.1f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f}")
    for batch, measured in result["batches"].items():
        e, s = measured["engine"], measured["stages"]
        split = s["generate"]["split_ms_per_batch"]
        embed = sum(enc["ms_per_image"] for enc in s["embed"].values())
        print(f"{name:14} {batch:>5} {e['images_per_s']:9.1f} {e['p50_ms']:8.0f} {e['p99_ms']:8.0f} "
              f"{s['caption']['ms_per_image']:8.1f} {s['generate']['ms_per_image']:9.1f} {embed:7.1f} "
              f"{split.get('unet_ms', 0) / int(batch):6.1f} {split.get('vae_decode_ms', 0) / int(batch):6.1f}"
              + (f"  errors {e['errors']}" if e.get("errors") else ""))
PYEOF
echo "JSON and logs in $OUT_DIR"
