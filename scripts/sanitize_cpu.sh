#!/usr/bin/env bash
# The native C++ code (kernels and bindings) under AddressSanitizer + UndefinedBehaviorSanitizer:
# builds the extension with AUTOGAZE_SANITIZE=ON (CPU only) in a build folder of its own, installs
# it into a separate target folder (the regular install stays untouched), and runs the native op
# tests and the fuzzing of every op (150 cases each; AUTOGAZE_FUZZ_CASES) with it. Any finding
# fails (non-zero exit).
#
#   bash scripts/sanitize_cpu.sh            # uses python3 on PATH (its torch, pytest, pip)
#   PYTHON=/path/to/python SANITIZE_DIR=/tmp/san bash scripts/sanitize_cpu.sh
#
# A Python host needs the ASan runtime loaded first: LD_PRELOAD of the compiler's libasan (and
# libstdc++). Leak checking is off (the interpreter keeps its allocations until exit).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
work="${SANITIZE_DIR:-$(mktemp -d)}"
mkdir -p "$work"

echo "== sanitizer build (AUTOGAZE_SANITIZE=ON, AUTOGAZE_CUDA=OFF) in $work"
rm -rf "$work/wheel" "$work/site"
AUTOGAZE_SANITIZE=ON AUTOGAZE_CUDA=OFF "$python" -m pip wheel -q --no-build-isolation --no-deps \
  -w "$work/wheel" --config-settings=build-dir="$work/build" .
"$python" -m pip install -q --no-deps --no-compile --target "$work/site" "$work"/wheel/autogaze_ext-*.whl

# The ASan runtime first, then libstdc++ (python itself does not load it, and ASan must find the
# real __cxa_throw when it starts, or the first C++ exception aborts).
cxx="${CXX:-c++}"
preload=""
for lib in libasan.so libstdc++.so.6; do
  path="$("$cxx" -print-file-name="$lib")"
  if [[ ! -e "$path" ]]; then
    echo "sanitize_cpu.sh: $lib not found by '$cxx -print-file-name=$lib'" >&2
    exit 2
  fi
  preload="${preload:+$preload:}$path"
done

export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
# short allocation stacks and a smaller quarantine: ~1.5x faster with torch's many allocations
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=23:malloc_context_size=8:quarantine_size_mb=64"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=24"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export AUTOGAZE_FUZZ_CASES="${AUTOGAZE_FUZZ_CASES:-150}"  # per op under ASan (1,000 in the plain slow run)
run() { LD_PRELOAD="$preload" "$python" "$@"; }

# The sanitized extension must be the one imported.
run -c "import autogaze_ext, autogaze_ext.ops as o, sys
info = o.build_info()
assert info['sanitizers'] == 'address,undefined', info
assert autogaze_ext.__file__.startswith('$work/site'), autogaze_ext.__file__
print('sanitized extension:', autogaze_ext.__file__)"

echo "== native op tests and fuzzing under ASan + UBSan"
# --capture=sys: a sanitizer report is written to fd 2 just before the process exits, which
# pytest's default fd capture would swallow
run -m pytest -q -p no:cacheprovider --capture=sys --run-slow tests/test_ops_patches.py tests/test_ops_select.py \
  tests/test_ops_attention.py tests/test_ops_decode.py tests/test_fuzz_ops.py
