#!/usr/bin/env bash
# The one GPU verification, in one call, for one H100/H200 with torch >= 2.11 (CUDA 13), nvcc 13,
# cmake, ninja, scikit-build-core, pybind11 and pytest installed, no network and no PyAV:
#
#   bash scripts/gpu_check.sh              # device tool: run(command=..., timeout_s=540)
#   bash scripts/gpu_check.sh --dry-run    # every stage on the CPU, tiny sizes (CI runs this)
#
# Stages, each with its own time cap (`timeout`), all inside an overall budget of 470 s (8 minutes
# less a margin), each logging to $OUT/logs, each run even when an earlier one failed:
#   env          GPU, driver, torch
#   build        pip install of the CUDA extension (sm_90 only, 16 jobs, no network)
#   tests_cuda   the CUDA tests (`-m cuda`: ops, fixture exactness on CUDA, CUDA graphs, SigLIP)
#   bench        bench/gpu_bench.py: gaze / sparse ViT / streaming times, ratios and targets
#   sanitizer_*  compute-sanitizer over scripts/sanitizer_cases.py (a few small cases per op),
#                with PYTORCH_NO_CUDA_MEMORY_CACHING=1 so that overruns leave torch's pools:
#                memcheck and initcheck (all ops), synccheck (all ops), racecheck (the kernels
#                with shared memory: select, attention, decode's block flags; racecheck sees
#                shared memory only, so the decode kernel's thread-to-thread traffic, which goes
#                through global memory between __syncthreads, is covered by memcheck/initcheck)
# then $OUT/summary.json: one object, stage -> {status, seconds, figures}; bench.json (every
# row); logs.tar.gz (every stage's log). The dry run runs the same stages with device=cpu,
# tiny sizes, the installed extension (no nvcc) and no compute-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
out="${OUT:-gpu_out}"
logs="$out/logs"
python="${PYTHON:-python3}"
budget="${GPU_CHECK_BUDGET_S:-470}"
rm -rf "$logs" "$out/summary.json" "$out/bench.json" "$out/logs.tar.gz"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
start_ns=$(date +%s%N)
elapsed() { echo $(( ($(date +%s%N) - start_ns) / 1000000000 )); }

# stage NAME CAP_SECONDS COMMAND...: COMMAND under `timeout` (the smaller of the cap and the time
# left, 10 s kept for the summary), output to $logs/NAME.log, one row in $logs/stages.tsv.
# The command sees its limit as $STAGE_LIMIT_S.
stage() {
  local name=$1 cap=$2
  shift 2
  local left=$(( budget - $(elapsed) - 10 ))
  if (( left < 5 )); then
    printf '%s\tskipped\t0\t0\n' "$name" >>"$logs/stages.tsv"
    echo "== $name: skipped (no time left)"
    return
  fi
  local limit=$(( cap < left ? cap : left ))
  local t0=$(date +%s%N)
  STAGE_LIMIT_S=$limit timeout --kill-after=5 "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" >>"$logs/stages.tsv"
  echo "== $name: rc=$rc in ${secs} s (cap ${limit} s)"
}

if (( dry )); then
  device=cpu
  echo "gpu_check.sh --dry-run: device=cpu, tiny sizes, no nvcc, no compute-sanitizer, OUT=$out"
else
  device=cuda
  echo "gpu_check.sh: OUT=$out, budget ${budget} s"
fi

# ---- env -----------------------------------------------------------------------------------
env_probe='import json, sys, torch
info = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sm=f"{p.major}.{p.minor}",
                multiprocessors=p.multi_processor_count)
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
if sys.argv[2] == "cuda" and not info["cuda_available"]:
    sys.exit("torch sees no CUDA device")'
if (( dry )); then
  stage env 30 "$python" -c "$env_probe" "$logs/env.json" cpu
else
  stage env 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
    nvcc --version | tail -n 2; "$0" -c "$1" "$2" cuda' "$python" "$env_probe" "$logs/env.json"
fi

# ---- build ---------------------------------------------------------------------------------
build_info='import json, sys, autogaze_ext
info = autogaze_ext.build_info()
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
if sys.argv[2] == "cuda" and not (info["cuda"] and "9.0" in info["cuda_archs"]):
    sys.exit("the installed extension has no sm_90 CUDA kernels")'
if (( dry )); then
  # no nvcc: the installed extension stands in for the build (CI builds it before this)
  stage build 60 "$python" -c "$build_info" "$logs/build_info.json" cpu
else
  stage build 150 bash -c 'TORCH_CUDA_ARCH_LIST=9.0 AUTOGAZE_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16 \
    "$0" -m pip install -v --no-build-isolation --no-deps --no-index \
    --config-settings=build-dir=/tmp/autogaze-build . && "$0" -c "$1" "$2" cuda' \
    "$python" "$build_info" "$logs/build_info.json"
fi

# ---- CUDA tests ----------------------------------------------------------------------------
# -m cuda on the files that have CUDA tests (none of them needs PyAV); skipped on the CPU.
# On the GPU a run without a visible device fails instead of skipping everything.
mapfile -t cuda_tests < <(grep -l "mark.cuda" tests/test_*.py)
need_cuda='import sys, torch; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device")'
if (( dry )); then need_cuda='pass'; fi
stage tests_cuda 80 bash -c '"$0" -c "$1" && "$0" -m pytest -q -p no:cacheprovider -m cuda -rfEs \
  --junitxml="$2" "${@:3}"' "$python" "$need_cuda" "$logs/tests_cuda.xml" "${cuda_tests[@]}"

# ---- benchmark -----------------------------------------------------------------------------
if (( dry )); then
  stage bench 120 bash -c '"$0" bench/gpu_bench.py --device cpu --tiny --out "$1" --budget-s $((STAGE_LIMIT_S - 20))' \
    "$python" "$out/bench.json"
else
  stage bench 110 bash -c '"$0" bench/gpu_bench.py --device cuda --out "$1" --budget-s $((STAGE_LIMIT_S - 25))' \
    "$python" "$out/bench.json"
fi

# ---- compute-sanitizer ---------------------------------------------------------------------
sanitizer_filter=()
if (( ! dry )) && command -v compute-sanitizer >/dev/null; then
  # check only this package's kernels (torch's are not ours, and unchecked they run at full speed)
  help=$(compute-sanitizer --help 2>&1)
  if grep -q -- "--kernel-name" <<<"$help"; then
    sanitizer_filter=(--kernel-name kns=autogaze)
  elif grep -q -- "--kernel-regex" <<<"$help"; then
    sanitizer_filter=(--kernel-regex kns=autogaze)
  fi
fi
all_ops=multiscale_patches,gather_patches,select_step,decode_step,varlen_attention
for spec in memcheck:45:$all_ops initcheck:30:$all_ops synccheck:25:$all_ops \
            racecheck:30:select_step,varlen_attention,decode_step; do
  IFS=: read -r tool cap ops <<<"$spec"
  printf '{"tool": "%s", "ops_checked": "%s", "kernel_filter": "%s", "dry_run": %s}\n' "$tool" "$ops" \
    "${sanitizer_filter[*]:-none}" "$( ((dry)) && echo true || echo false)" >"$logs/sanitizer_$tool.meta.json"
  cases=(scripts/sanitizer_cases.py --device "$device" --ops "$ops" --out "$logs/sanitizer_$tool.json")
  if (( dry )); then
    stage "sanitizer_$tool" "$cap" "$python" "${cases[@]}"
  else
    stage "sanitizer_$tool" "$cap" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" \
      --error-exitcode 9 --print-limit 20 "${sanitizer_filter[@]}" "$python" "${cases[@]}"
  fi
done

# ---- summary -------------------------------------------------------------------------------
"$python" scripts/gpu_summary.py "$out"
summary_rc=$?
tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$logs"
echo "gpu_check.sh: $(elapsed) s; $out/summary.json, $out/bench.json, $out/logs.tar.gz"
exit $summary_rc
