#!/usr/bin/env bash
# The GPU checks of docs/scale.md "Device", for a machine with an NVIDIA GPU
# and a pip-installed CUDA torch (the `device` tool lends one to some
# sessions). Never run by CI: Debian's libtorch is CPU-only, and nothing in the
# build or the tests needs a GPU.
#
#   scripts/gpu-check.sh [OUT_DIR]      (default OUT_DIR: build-cuda/gpu-check)
#
# Needs what scripts/setup.sh installs (the build's Debian packages: METIS,
# Oniguruma, Cairo, Graphviz, nlohmann-json, Eigen, Qt 6 Core/Test) plus a pip
# torch with CUDA (PYTHON names its interpreter; default python3). The GPU
# machine the device tool lends has the torch but none of those packages and
# no package registry: docs/scale.md "Device" says how to carry them.
#
# 1. Configures build-cuda/ against the libtorch inside the pip torch
#    (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') and
#    builds moefy, the device test and bench_forward.
# 2. core_test_device: --device parsing, the forward of each model family and
#    of a MoEfied model on the meta device, the masked MoE path against the
#    CPU kernel; with a GPU its cuda rows run too.
# 3. Parity, CPU against cuda, on the bundled models, with the differences
#    printed by scripts/gpu_parity.py: `forward --dump` (logits and every hook,
#    GPT-2 and T5), `record` (statistics and co-activation counts), `eval`
#    (perplexity and agreement of a MoEfied model).
# 4. route, calibrate and train on cuda (they must run; no parity check).
# 5. bench_forward --case gpt2 on cuda and on the CPU, each against the GEMM
#    bound measured on its own device.
# Everything it prints is kept in OUT_DIR/gpu-check.log (with the dumps,
# recordings and evaluations it compares: give the device tool's $OUT/.. a
# subfolder and fetch only the log); every failed check is named there, the
# script goes on to the next and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build-cuda/gpu-check}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu-check: no CUDA torch with a visible GPU ($PY: import torch; torch.cuda.is_available()); nothing to check"
  exit 1
fi
PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name(0))'

# The torch target sets the C++ ABI of everything that links it; Debian's C++
# libraries (Qt Test) use the C++11 one, which pip wheels have used since torch 2.7.
if [ "$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')" != 1 ]; then
  echo "gpu-check: this torch's libtorch uses the pre-C++11 ABI; Debian's C++ libraries need the C++11 one" \
    "(pip install 'torch>=2.7')"
  exit 1
fi
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DMOEFY_BUILD_GUI=OFF -DMOEFY_BUILD_TESTS=ON -DMOEFY_BUILD_BENCH=ON >/dev/null
cmake --build build-cuda -j "$(nproc)" --target moefy core_test_device bench_forward

# From here each check records its failure and the script goes on, so that
# one failing command does not hide the others.
set +e
fail=0
check() { "$@" || { echo "gpu-check: FAILED: $*"; fail=1; }; }
echo "== core_test_device"
check build-cuda/tests/core_test_device

M=build-cuda/app/moefy
echo "== forward parity (cpu vs cuda)"
for dev in cpu cuda; do
  check "$M" forward data/models/brown-relu --ids 5,17,3,99,42,7 --ids 8,9,10 \
    --dump "$OUT/fwd-gpt2-$dev.safetensors" --device "$dev" --json
  check "$M" forward data/models/bible-t5 --ids 5,17,3,1 --decoder-ids 0,4,5 \
    --dump "$OUT/fwd-t5-$dev.safetensors" --device "$dev" --json
done
check "$PY" scripts/gpu_parity.py dumps "$OUT/fwd-gpt2-cpu.safetensors" "$OUT/fwd-gpt2-cuda.safetensors"
check "$PY" scripts/gpu_parity.py dumps "$OUT/fwd-t5-cpu.safetensors" "$OUT/fwd-t5-cuda.safetensors"

echo "== record parity (cpu vs cuda)"
for dev in cpu cuda; do
  check "$M" record data/models/brown-relu data/corpus/brown/train --out "$OUT/rec-$dev" --tokens 16384 \
    --device "$dev" --force --quiet
done
check "$PY" scripts/gpu_parity.py recordings "$OUT/rec-cpu" "$OUT/rec-cuda"

echo "== eval parity (cpu vs cuda)"
check "$M" split "$OUT/rec-cpu" --out "$OUT/part" --experts 16 --force --quiet
check "$M" route data/models/brown-relu "$OUT/rec-cpu" "$OUT/part" --out "$OUT/router" --router mlp --force --quiet
for dev in cpu cuda; do
  check "$M" eval data/models/brown-relu data/corpus/brown/heldout --partition "$OUT/part" --router "$OUT/router" \
    --tokens 4096 --out "$OUT/eval-$dev" --device "$dev" --force --quiet
done
check "$PY" scripts/gpu_parity.py evals "$OUT/eval-cpu" "$OUT/eval-cuda"

echo "== route, calibrate and train on cuda (they must run; their results are not compared)"
check "$M" route data/models/brown-relu "$OUT/rec-cpu" "$OUT/part" --out "$OUT/router-cuda" --router mlp \
  --device cuda --force --quiet
check "$M" export data/models/brown-relu "$OUT/part" "$OUT/router" --top-k 4 --out "$OUT/moe" --force --quiet
check "$M" calibrate "$OUT/moe" data/corpus/brown/train --out "$OUT/moe-cal" --steps 20 --device cuda --force --quiet
check "$M" train data/corpus/brown/train --config data/models/brown-relu/config.json \
  --tokenizer data/models/brown-relu/tokenizer.json --out "$OUT/train" --steps 20 --device cuda --force --quiet

echo "== bench_forward --case gpt2: cuda, then cpu"
check build-cuda/bench/bench_forward --case gpt2 --device cuda --reps 5
check build-cuda/bench/bench_forward --case gpt2 --reps 2

echo "gpu-check: $([ $fail = 0 ] && echo passed || echo FAILED); log $OUT/gpu-check.log"
exit $fail
