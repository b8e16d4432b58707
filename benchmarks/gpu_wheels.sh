#!/usr/bin/env bash
# The wheels the lent GPU machine lacks, for Python 3.12 on x86-64 Linux, into .whl/ (git-ignored).
#
#     bash benchmarks/gpu_wheels.sh        # here, where PyPI answers; then carry .whl to the device
#
# The device image holds torch (CUDA), transformers, accelerate, peft, safetensors, typer, scipy,
# opencv and the rest (see /work/.library/device/KINDS.md), not diffusers, pydantic, fastapi or the
# samplers' extras. Versions are those constraints.txt pins. gpu.sh installs .whl/ when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
NEEDED="diffusers pydantic pydantic_core annotated-types typing-inspection fastapi starlette uvicorn
python-multipart torchsde trampoline pytorch_optimizer importlib_metadata opentelemetry-api typing_extensions
annotated-doc lazy-importer"
mkdir -p .whl
rm -f .whl/*.whl  # two versions of one package would stop the whole install there
for name in $NEEDED; do
    pin=$(grep -i -m1 "^${name}==" constraints.txt)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$pin"
done
du -sh .whl
