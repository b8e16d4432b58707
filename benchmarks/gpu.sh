#!/usr/bin/env bash
# Every GPU check and benchmark, most valuable first, within one deadline (a lent machine runs one
# command for at most 10 minutes, and a session has 15 minutes of device time in all).
#
#     bash benchmarks/gpu.sh [OUT_DIR] [STEP ...]   # STEP: versions cuda-tests generate train train-xl files load compile
#
# DEADLINE (seconds, default 540) bounds the whole run: a step gets what is left of it, and a step
# that would start with under 30 s left is skipped (and named as skipped). A failed step does not
# stop the others; everything printed goes to OUT_DIR/gpu-<step>.txt (default ./gpu-results) as
# well as the terminal. Copy the figures into benchmarks/RESULTS.md with the date, the card and the
# versions printed first. Not all fit one run: a second call can name the steps left, e.g.
# `bash benchmarks/gpu.sh $OUT files load compile`.
#
# On the lent machine (no package index there): first run `bash benchmarks/gpu_wheels.sh` here and
# carry `.whl`; this script installs those wheels beside the image's torch and runs from `src/`:
#
#     device run, carry [".whl"]:  bash benchmarks/gpu.sh $OUT
set -u
OUT=${1:-gpu-results}
shift || true
STEPS=${*:-versions cuda-tests generate train train-xl files load compile}
END=$((SECONDS + ${DEADLINE:-540}))
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -x .venv/bin/python ]; then
    PY=${PY:-.venv/bin/python}
else
    PY=${PY:-python3}
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { echo "gpu.sh: the wheels in .whl did not install; run benchmarks/gpu_wheels.sh again"; exit 1; }
        export PYTHONPATH=/tmp/site:$PWD/src
    else
        export PYTHONPATH=$PWD/src
    fi
fi

step() {  # step NAME SECONDS COMMAND...: runs when named in STEPS and time is left
    local name=$1 limit=$2 left=$((END - SECONDS))
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    if [ "$left" -lt 30 ]; then
        echo "== $name: skipped (${left}s of the deadline left)" | tee "$OUT/gpu-$name.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s)" | tee "$OUT/gpu-$name.txt"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/gpu-$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-$name.txt"
}

step versions 60 "$PY" -c "import torch, diffusers, transformers, peft; print(torch.cuda.get_device_name(0), \
torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__)"
# The CUDA-only tests: pinned async copies, losses read a step late, no host sync inside a
# training step (torch's sync debug mode), compiled models with LoRAs patched in place, text
# encoders parked in CPU memory, and the half-precision paths only a GPU runs (fp16/bf16 training,
# 8-bit AdamW, the fp32-UNet sampling bridge, the fp16 VAE's fp32 retry on a real overflow).
# The first run builds the tiny models (~1 min).
step cuda-tests 300 "$PY" -m pytest -p no:cacheprovider -q -rs tests/test_train_async_steps.py tests/test_compile.py \
    tests/test_gpu_paths.py
step generate 150 "$PY" benchmarks/generate.py --shape sd15-full --sizes 512 --steps 30 --repeats 3 --device cuda
step train 240 "$PY" benchmarks/train.py --model "" --shapes sd15,sdxl --resolutions 512 --batch 1 --steps 20 --warmup 5 \
    --models-dir /tmp/lorastudio-bench-models
# SDXL at 1024 px: it/s against plain, and each process's peak CUDA memory (the <= 8 GiB question),
# lorastudio as it runs by default and with gradient checkpointing (the low-memory setting), both
# against the same plain run (three processes, three SDXL loads).
step train-xl 240 "$PY" benchmarks/train.py --model "" --shapes sdxl --resolutions 1024 --batch 1 --steps 10 --warmup 3 \
    --models-dir /tmp/lorastudio-bench-models --variant train.gradient_checkpointing=true
step files 240 "$PY" benchmarks/full_size.py sd15 sdxl
step load 240 "$PY" benchmarks/load.py --families sd15,sdxl --repeats 1 --device cuda
step compile 420 "$PY" benchmarks/compile.py --model "$HOME/.cache/lorastudio-bench/random-sd15-fp16.safetensors" \
    --size 512 --steps 30 --repeats 3 --device cuda
