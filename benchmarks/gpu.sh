#!/usr/bin/env bash
# Every GPU benchmark in one go (about 10 minutes on an H100), for a machine lent for a short while.
#
#     bash benchmarks/gpu.sh [OUT_DIR]
#
# Each step has its own time limit and a failed step does not stop the others; everything printed
# goes to OUT_DIR/gpu-<step>.txt (default ./gpu-results) as well as the terminal. Copy the figures
# into benchmarks/RESULTS.md with the date, the card and the versions printed first.
set -u
OUT=${1:-gpu-results}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)" | tee "$OUT/gpu-$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/gpu-$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-$name.txt"
}

step versions 60 "$PY" -c "import torch, diffusers, transformers, peft; print(torch.cuda.get_device_name(0), \
torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__)"
step files 240 "$PY" benchmarks/full_size.py sd15 sdxl
step load 240 "$PY" benchmarks/load.py --families sd15,sdxl --repeats 1 --device cuda
step generate 240 "$PY" benchmarks/generate.py --shape sd15-full --sizes 512 --steps 30 --repeats 3 --device cuda
step compile 420 "$PY" benchmarks/compile.py --model "$HOME/.cache/lorastudio-bench/random-sd15-fp16.safetensors" \
    --size 512 --steps 30 --repeats 3 --device cuda
step train 420 "$PY" benchmarks/train.py --shapes sd15,sdxl --resolutions 512 --batch 1 --steps 20 --warmup 5
# The CUDA-only tests: pinned async copies, losses read a step late, no host sync inside a
# training step (torch's sync debug mode), compiled models with LoRAs patched in place, and the
# half-precision paths only a GPU runs (fp16/bf16 training, 8-bit AdamW, the fp32-UNet sampling
# bridge, the fp16 VAE's fp32 retry on a real overflow).
step cuda-tests 300 "$PY" -m pytest -p no:cacheprovider -q tests/test_train_async_steps.py tests/test_compile.py \
    tests/test_gpu_paths.py
