#!/usr/bin/env bash
# Accuracy of each CPU precision on the demo's trained engine (issue 19): export the demo's
# checkpoint as fp32, int8 dynamic and int8 static (calibrated on the demo's own images), then
# ZS / GZS mAP@all with every CPU variant (SPLIP_CPU_ENGINE picks the variant under --backend auto).
# Usage: benchmarks/cpu_precisions_demo.sh DEMO_OUT WORK_DIR   (DEMO_OUT from `splip-engine demo`)
set -euo pipefail
DEMO=$1; WORK=$2; SPLIP=${SPLIP:-splip-engine}  # PYTHON: the interpreter with splip_engine (default python)
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
${PYTHON:-python} - "$WORK" "$*" <<'PY'  # the rows with the commit and this CPU: $WORK/cpu_precisions_demo.json
import json, subprocess, sys
from pathlib import Path
from splip_engine.runtime.cpu_features import read_cpu_features
work, args = Path(sys.argv[1]), sys.argv[2]
names = ["torch_fp32", "ort_fp32", "ov_f32", "ov_bf16", "ort_int8_dynamic", "ort_int8_static", "ov_int8"]
rows = {n: {f"{m}_map_all": json.loads((work / f"{n}.json").read_text())[m]["map_all"] for m in ("zs", "gzs")}
        for n in names}
features = read_cpu_features()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
(work / "cpu_precisions_demo.json").write_text(json.dumps({
    "issue": 19, "commit": commit, "cpu_model": features.model, "cpu_flags": features.names(),
    "command": f"benchmarks/cpu_precisions_demo.sh {args}", "rows": rows}, indent=2) + "\n")
PY
echo done > "$WORK/done"
