#!/usr/bin/env bash
# Accuracy of each CPU precision on the demo's trained engine (issue 19): export the demo's
# checkpoint as fp32, int8 dynamic and int8 static (calibrated on the demo's own images), then
# ZS / GZS mAP@all with every CPU variant (SPLIP_CPU_ENGINE picks the variant under --backend auto).
# Usage: benchmarks/cpu_precisions_demo.sh DEMO_OUT WORK_DIR   (DEMO_OUT from `splip-engine demo`)
set -euo pipefail
DEMO=$1; WORK=$2; SPLIP=${SPLIP:-splip-engine}
CKPT="$DEMO/runs/seed0/checkpoint"
mkdir -p "$WORK"
[ -f "$WORK/fp32/manifest.json" ] || $SPLIP export --checkpoint "$CKPT" --out "$WORK/fp32"
[ -f "$WORK/int8d/manifest.json" ] || $SPLIP export --checkpoint "$CKPT" --int8 --out "$WORK/int8d"
[ -f "$WORK/int8s/manifest.json" ] || $SPLIP export --checkpoint "$CKPT" --int8 --calibration "$DEMO/data" --out "$WORK/int8s"
run() {  # name engine_dir backend variant
  SPLIP_CPU_ENGINE=$4 SPLIP_ENGINE_CACHE="$WORK/cache" $SPLIP eval --model "$2" --backend "$3" --device cpu \
    --data-root "$DEMO/data" --modes zs,gzs --out "$WORK/$1.json" > "$WORK/$1.log" 2>&1
}
run torch_fp32 "$WORK/fp32" torch ""
run ort_fp32 "$WORK/fp32" auto onnxruntime
run ov_f32 "$WORK/fp32" auto openvino:f32
run ov_bf16 "$WORK/fp32" auto openvino:bf16
run ort_int8_dynamic "$WORK/int8d" auto onnxruntime
run ort_int8_static "$WORK/int8s" auto onnxruntime
run ov_int8 "$WORK/int8s" auto openvino:int8
echo done > "$WORK/done"
