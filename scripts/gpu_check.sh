#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one call (device tool):
#   run(command="bash scripts/gpu_check.sh", timeout_s=600)
# Builds the CUDA extension against the machine's torch, runs the whole suite (CUDA tests
# included), compute-sanitizer memcheck/racecheck on the CUDA op tests, and the GPU benchmarks.
# Logs go to $OUT (or ./gpu_out), a summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=16
status() { printf '%-28s %s\n' "$1" "$2" | tee -a "$out/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
TORCH_CUDA_ARCH_LIST=9.0 AUTOGAZE_CUDA=ON python3 -m pip install -q --no-build-isolation \
  --config-settings=build-dir=/tmp/autogaze-build . >"$out/build.log" 2>&1
status build "rc=$?"
python3 -c "import autogaze_ext as ag, json; print(json.dumps(ag.build_info()))" | tee "$out/build_info.json"

python3 -m pytest tests -q -x -p no:cacheprovider >"$out/tests.log" 2>&1
status "tests (all)" "rc=$? $(tail -n 1 "$out/tests.log")"

for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
    -m cuda tests/test_ops_patches.py tests/test_ops_select.py tests/test_ops_attention.py \
    tests/test_ops_decode.py \
    >"$out/sanitizer_$tool.log" 2>&1
  status "compute-sanitizer $tool" "rc=$? $(grep -E 'ERROR SUMMARY' "$out/sanitizer_$tool.log" | tail -n 1)"
done

python3 bench/gaze_stages.py --device cuda --batch 1 >"$out/stages_b1.txt" 2>&1
status "gaze stages B=1" "rc=$?"
python3 bench/gaze_stages.py --device cuda --batch 64 --ratios 0.1 >"$out/stages_b64.txt" 2>&1
status "gaze stages B=64" "rc=$?"
python3 bench/bench_graphs.py >"$out/graphs.txt" 2>&1
status "cuda graphs bench" "rc=$?"
cat "$out"/stages_b*.txt "$out/graphs.txt"
cat "$out/summary.txt"
