"""Full-size SD1.5- and SDXL-shaped single files with random weights, for the load benchmarks.

Real checkpoints are 2–7 GB; what users feel first is how long one takes to load and how much
memory that needs. These files have the real tensor names (original LDM / A1111 layout), shapes
and dtype (fp16) of `v1-5-pruned-emaonly.safetensors` and `sd_xl_base_1.0.safetensors`, with random
values, built from the shipped configs. They are written once and kept in
`~/.cache/lorastudio-bench/` (2 GB and 7 GB).

Each component is built on the meta device and filled tensor by tensor in fp16, so building the
SDXL file needs about its own size in memory, not four times it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# benchmarks/queue.py would shadow the standard library's `queue` (torch imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CACHE = Path(os.environ.get("LORASTUDIO_BENCH_CACHE", Path.home() / ".cache" / "lorastudio-bench"))


def _random_fp16(module, seed: int) -> None:
    """Give every meta parameter of `module` fp16 values ~ N(0, 0.02) (norm weights ~ 1)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for name, param in list(module.named_parameters()):
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        value = torch.empty(param.shape, dtype=torch.float32)
        if "norm" in name and attr == "weight":
            value.fill_(1.0)
        else:
            value.normal_(0.0, 0.02, generator=generator)
        owner._parameters[attr] = torch.nn.Parameter(value.half(), requires_grad=False)


def _components(family_name: str) -> dict:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import config_folder

    family = get_family(family_name)
    configs = config_folder(family, CACHE / "configs")
    with init_empty_weights(include_buffers=False):
        components = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(configs / "unet"))),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(str(configs / "vae"))),
        }
        for name in family.text_encoders:
            config = CLIPTextConfig.from_pretrained(str(configs / name))
            cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
            components[name] = cls(config)
    for seed, module in enumerate(components.values()):
        _random_fp16(module, seed)
    return components


def full_size_single_file(family_name: str) -> Path:
    """The cached random-weight fp16 single file of `family_name` ("sd15" or "sdxl"), built once."""
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.families import get_family

    path = CACHE / f"random-{family_name}-fp16.safetensors"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    components = _components(family_name)
    temporary = path.with_suffix(".partial")
    save_single_file(components, get_family(family_name), temporary, {"lorastudio.benchmark": "random weights"})
    temporary.replace(path)
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or ["sd15"]:
        print(full_size_single_file(name))
