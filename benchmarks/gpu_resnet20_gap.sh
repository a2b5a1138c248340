#!/usr/bin/env bash
# Issue 7's gap at 50% fewer FLOPs with a longer schedule than 2 CPU cores allow: the ResNet-20
# cut of benchmarks/README.md ("block-conv1 cut"), fine-tuned by `compress` on a GPU for as many
# epochs as fit the time given, beside the dense model trained alike (same epochs, recipe and
# teacher) in a second process on the same GPU. Prepared for a session lent a GPU (the device tool).
#
# Before, on the development machine (the cut is deterministic; about a minute on 2 cores):
#   mkdir -p .gpu/whl && cp ../shared/assets/data/cifar10_{train,test}_jpeg.npz \
#       ../shared/assets/models/akamaster_cifar10_resnet20_bn.onnx .gpu/   # .gpu/ is git-ignored
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/whl \
#       onnx-graphsurgeon==0.6.1 onnx2torch==1.5.15 (plus the --platform flags of the device README)
#   onnxprune compress (the command below, on the CPU) and stop it once it says "fine-tune":
#       .gpu/r20.onnx.stages/ then holds the cut, BatchNorm recalibrated (1_pruned.onnx).
# On the GPU machine, from the repository root, carrying .gpu:  BUDGET_S=540 bash benchmarks/gpu_resnet20_gap.sh
# BUDGET_S is the wall time the whole script may take; the epochs are chosen from a timed probe.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/gpu-gap}
A=${ASSETS:-.gpu}
NAME=${NAME:-r20}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-540}
MAX_EPOCHS=${MAX_EPOCHS:-60}
PY=${PY:-python3}
EXTRA=${EXTRA:-}  # e.g. "--limit 640" for a dry run
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
elapsed() { echo $(( $(date +%s) - T0 )); }
ONNXPRUNE=("$PY" -P -c 'import sys; from onnxprune.cli import main; sys.exit(main())')

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
nproc
if [ -z "${SKIP_INSTALL:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$A"/whl/*.whl || exit 1
  "$PY" -m pip install -q --no-build-isolation --no-deps --target /tmp/site -Cbuild-dir=/tmp/build-cpu \
    -Ccmake.define.ONNXPRUNE_CUDA=OFF . 2>&1 | tail -5
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
echo "installed at $(elapsed) s"

MODEL=$A/akamaster_cifar10_resnet20_bn.onnx
STAGES=$A/$NAME.onnx.stages
[ -f "$STAGES/1_pruned.onnx" ] || { echo "no cut at $STAGES/1_pruned.onnx: run the compress command on the CPU first"; exit 1; }
# The CPU run's record names its epochs: while the folder holds only its cut, the cut is reused on
# purpose under other epochs. Once a model was trained here the record stays, so that a run with other
# settings is refused rather than resumed from models it did not train.
ls "$STAGES"/*tuned* > /dev/null 2>&1 || rm -f "$STAGES/settings.json"
# Small per-image ops on many threads in two processes oversubscribe the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Step time alone, then with both trainings stepping at once (two processes share the GPU by time
# slices, which can cost a launch-bound model more than it gains): the faster way is taken.
PROBE=(-P benchmarks/gpu_step_time.py --device "$DEVICE" --steps 100 --warmup 10)
"$PY" "${PROBE[@]}" "$STAGES/1_pruned.onnx" "$MODEL" > "$OUT/probe_alone.json"
"$PY" "${PROBE[@]}" "$STAGES/1_pruned.onnx" "$MODEL" > "$OUT/probe_both_pruned.json" & P1=$!
"$PY" "${PROBE[@]}" "$MODEL" "$MODEL" > "$OUT/probe_both_dense.json" & P2=$!
wait $P1 $P2  # a bare wait would also wait for the tee above
# Per epoch: 1,563 steps of batch 32 and the 10,000 validation images; fixed: loading 60,000 JPEG
# images, the model round trips, compress's evaluations and latency runs (measured: about 45 s).
read -r EPOCHS MODE < <("$PY" - "$OUT" "$(elapsed)" "$BUDGET_S" "$MAX_EPOCHS" <<'EOF2'
import json, sys, pathlib
out, spent, budget, most = pathlib.Path(sys.argv[1]), *map(int, sys.argv[2:])
probes = {p.stem: json.loads(p.read_text())["seconds_per_step"] for p in sorted(out.glob("probe_*.json"))}
for p in out.glob("probe_*.json"):
    p.unlink()
(out / "probe.json").write_text(json.dumps(probes, indent=1) + "\n")
epoch = lambda step: 1563 * step * 1.1 + 3
both = (budget - spent - 100) // epoch(max(probes["probe_both_pruned"], probes["probe_both_dense"]))
alone = (budget - spent - 130) // (2 * epoch(probes["probe_alone"]))
mode = "parallel" if both >= alone else "sequential"
print(max(1, min(most, int(max(both, alone)))), mode, file=sys.stdout)
print(probes, f"epochs side by side {both:.0f}, one after the other {alone:.0f}", file=sys.stderr)
EOF2
)
echo "epochs: $EPOCHS, $MODE (at $(elapsed) s)"
COMMON=(--data "npz:$A/cifar10_train_jpeg.npz" --val "npz:$A/cifar10_test_jpeg.npz" --preset cifar
        --batch-size 32 --lr 0.01 --device "$DEVICE" $EXTRA)
COMPRESS=(compress "$MODEL" -o "$A/$NAME.onnx" --phases '*layer*/conv1/*' --flops-target 0.5 --relative
          --sf 0.7 --sf-low 0.3 --sg 0.7 --recalibrate-bn 1024 --finetune-epochs "$EPOCHS" --distill "${COMMON[@]}")
LEFT=$(( BUDGET_S - $(elapsed) - 40 ))
if [ "$MODE" = parallel ]; then
  timeout "$LEFT" "${ONNXPRUNE[@]}" "${COMPRESS[@]}" > "$OUT/pruned.log" 2>&1 & P1=$!
  # The dense baseline compress would train next, under the name it looks for (so it is not trained twice).
  timeout "$LEFT" "${ONNXPRUNE[@]}" finetune "$MODEL" \
    -o "$STAGES/dense_tuned_${EPOCHS}ep.onnx" --teacher "$MODEL" --epochs "$EPOCHS" "${COMMON[@]}" > "$OUT/dense.log" 2>&1 & P2=$!
  wait $P1 $P2
else
  timeout "$LEFT" "${ONNXPRUNE[@]}" "${COMPRESS[@]}" --dense-baseline > "$OUT/pruned.log" 2>&1
  touch "$OUT/dense.log"
fi
echo "trained at $(elapsed) s"
for f in pruned dense; do tr '\r' '\n' < "$OUT/$f.log" | grep -v 'it/s' > "$OUT/$f.txt"; rm "$OUT/$f.log"; done
tail -n 4 "$OUT/pruned.txt" "$OUT/dense.txt"
# Everything exists now: compress only evaluates both on the validation set and writes its report.
"${ONNXPRUNE[@]}" "${COMPRESS[@]}" --dense-baseline --json > "$OUT/report.json"
cp "$STAGES/1_tuned.onnx" "$OUT/tuned.onnx"; cp "$STAGES/dense_tuned_${EPOCHS}ep.onnx" "$OUT/dense.onnx"
"$PY" - "$OUT/report.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print({k: r.get(k) for k in ("metric_before", "metric_after", "metric_dense_tuned", "dense_tuned_epochs",
                             "params_after", "flops_before", "flops_after")})
EOF
echo "done at $(elapsed) s"
