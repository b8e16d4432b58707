"""Per-request LoRA stacking: lorastudio's patcher against diffusers' load/set_adapters/unload.

    python benchmarks/lora_stack.py [--repeats 2] [--rank 32] [--dtype float32]

Builds the full-size SD1.5 UNet and text encoder (random weights, from the shipped configs),
writes 3 (+1) random kohya LoRA files of `--rank` on every module kohya's `networks.lora`
targets (attention / feed-forward / proj Linear and 1x1 convs of the transformer blocks, text
encoder q/k/v/out/fc1/fc2, with alpha), then times, interleaved:

  (a) diffusers: `load_lora_weights(file, adapter_name=...)` x3 + `set_adapters` + `unload_lora_weights`
  (b0) lorastudio first stack: files read, and the model's first patch (no spare memory yet)
  (b) lorastudio cold: files read (parsed-file cache emptied) + applied + restored
  (c) lorastudio warm: parsed files cached, applied + restored
  (d) the same stack again on a model that still holds it (lingering patch: nothing to do)
  (e) a stack differing in one LoRA (lingering patch: only that LoRA's weights recomputed)
  (f) the floor of any merging patcher: one `addmm` per layer with the factors ready

and prints seconds, ratios against (a) and peak RSS, then checks that every weight is back
bit-exact.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/queue.py would shadow the standard library's `queue` (torch imports it).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

KOHYA_UNET_TARGETS = ("Transformer2DModel",)
KOHYA_TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def build_components(dtype) -> dict:
    """The SD1.5 UNet, text encoder, VAE and tokenizer with random weights, built in memory."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import config_folder

    configs = config_folder(get_family("sd15"), Path(tempfile.gettempdir()) / "lorastudio-bench")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(configs / "unet")))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(configs / "text_encoder")))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(configs / "vae")))
    return {
        "unet": unet.to(dtype).eval().requires_grad_(False),
        "text_encoder": text_encoder.to(dtype).eval().requires_grad_(False),
        "vae": vae.to(dtype).eval().requires_grad_(False),
        "tokenizer": CLIPTokenizer.from_pretrained(str(configs / "tokenizer")),
        "configs": configs,
    }


def kohya_targets(components: dict) -> list[tuple[str, str, object]]:
    """(component, module path, layer) for every layer kohya's `networks.lora` puts a LoRA on."""
    import torch

    found = []
    for component, classes in (("unet", KOHYA_UNET_TARGETS), ("text_encoder", KOHYA_TE_TARGETS)):
        for name, parent in components[component].named_modules():
            if type(parent).__name__ not in classes:
                continue
            for child_name, child in parent.named_modules():
                is_linear = isinstance(child, torch.nn.Linear)
                is_1x1 = isinstance(child, torch.nn.Conv2d) and child.kernel_size == (1, 1)
                if child_name and (is_linear or is_1x1):
                    found.append((component, f"{name}.{child_name}", child))
    return found


def write_kohya_lora(path: Path, targets, rank: int, seed: int) -> Path:
    """A random kohya LoRA file (fp16, alpha = rank / 2) on every target, as kohya writes it."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for component, module_path, layer in targets:
        prefix = "lora_unet_" if component == "unet" else "lora_te_text_model_"
        base = prefix + module_path.removeprefix("text_model.").replace(".", "_")
        if isinstance(layer, torch.nn.Conv2d):
            down_shape, up_shape = (rank, layer.in_channels, 1, 1), (layer.out_channels, rank, 1, 1)
        else:
            down_shape, up_shape = (rank, layer.in_features), (layer.out_features, rank)
        tensors[f"{base}.lora_down.weight"] = (torch.randn(down_shape, generator=g) * 0.05).half()
        tensors[f"{base}.lora_up.weight"] = (torch.randn(up_shape, generator=g) * 0.05).half()
        tensors[f"{base}.alpha"] = torch.tensor(rank / 2).half()
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})
    return path


def gemm_floor(components: dict, loras):
    """The arithmetic no merging patcher avoids: `W + U @ D` per layer, factors ready, buffers kept.

    Timed beside the others to show how much of a patch is Python and small ops.
    """
    import torch

    from lorastudio.adapters import find_module

    work = []
    for layer_key in {(c, p) for lora, _, _ in loras for c, p in lora.modules}:
        layer = find_module(components[layer_key[0]], layer_key[1])
        weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        modules = [(lora.modules[layer_key], w) for lora, w, _ in loras if layer_key in lora.modules]
        up = torch.cat([m.up.reshape(m.up.shape[0], -1).float() * (w * m.scale) for m, w in modules], dim=1)
        down = torch.cat([m.down.reshape(m.down.shape[0], -1).float() for m, _ in modules], dim=0)
        work.append((weight, up, down, torch.empty_like(weight)))

    def floor() -> None:
        for weight, up, down, out in work:
            torch.addmm(weight, up, down, out=out)

    return floor


def weights_fingerprint(modules) -> str:
    """SHA-1 over every parameter's bytes: equal fingerprints = bit-exact weights."""
    import torch

    digest = hashlib.sha1()
    for module in modules:
        for name, param in module.named_parameters():
            digest.update(name.encode())
            digest.update(param.detach().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--skip-diffusers", action="store_true", help="time lorastudio's paths only")
    args = parser.parse_args()

    import diffusers
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from lorastudio.adapters import applied_loras
    from lorastudio.adapters.lora_stack import patcher_for
    from lorastudio.adapters.patch import lingering_loras
    from lorastudio.service.lora_cache import LoraFileCache

    diffusers.utils.logging.set_verbosity_error()  # peft's per-adapter "missing keys" lists
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    parts = build_components(dtype)
    components = {"unet": parts["unet"], "text_encoder": parts["text_encoder"]}
    targets = kohya_targets(parts)
    folder = Path(tempfile.mkdtemp(prefix="lorastudio-lora-stack-"))
    files = [write_kohya_lora(folder / f"lora{i}.safetensors", targets, args.rank, seed=i) for i in range(4)]
    print(
        f"SD1.5 {args.dtype}, {len(targets)} LoRA modules per file, rank {args.rank}, "
        f"{files[0].stat().st_size / 2**20:.0f} MiB each; built in {time.perf_counter() - start:.0f} s"
    )
    before = weights_fingerprint(components.values())
    weights = [0.8, 0.6, 0.4]
    names = ["a", "b", "c"]
    stack_a, stack_b = files[:3], [files[0], files[1], files[3]]
    cache = LoraFileCache()

    def request(paths) -> list:
        return [(parsed.lora, w, w) for parsed, w in zip(cache.load_many(paths), weights, strict=True)]

    def diffusers_stack() -> None:
        for path, name in zip(stack_a, names, strict=True):
            pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters(names, weights)
        pipe.unload_lora_weights()

    def ours_first() -> None:
        cache.clear()
        patcher_for(components).release_spares()  # fresh memory for every patched weight
        with applied_loras(components, request(stack_a)):
            pass

    def ours_cold() -> None:
        cache.clear()
        with applied_loras(components, request(stack_a)):
            pass

    def ours_warm() -> None:
        with applied_loras(components, request(stack_a)):
            pass

    touched = {}

    def ours_same_again() -> None:
        with lingering_loras(components, request(stack_a)) as patch:
            touched["same"] = patch.touched

    def ours_switch() -> None:
        for stack in (stack_b, stack_a):  # each switch differs in one LoRA; timed per switch below
            with lingering_loras(components, request(stack)) as patch:
                touched.setdefault("switch", patch.touched)

    pipe = None
    if not args.skip_diffusers:
        pipe = StableDiffusionPipeline(
            vae=parts["vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=parts["tokenizer"],
            unet=parts["unet"],
            scheduler=DDIMScheduler.from_pretrained(str(parts["configs"]), subfolder="scheduler"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)

    rows = {"(a) diffusers load x3 + set_adapters + unload": diffusers_stack} if pipe is not None else {}
    rows["(f) floor: the merge's GEMMs alone (addmm per layer)"] = gemm_floor(components, request(stack_a))
    rows["(b0) lorastudio first stack: read + apply + restore"] = ours_first
    rows["(b) lorastudio cold: read + apply + restore"] = ours_cold
    rows["(c) lorastudio warm parsed cache: apply + restore"] = ours_warm
    timings = {label: [] for label in rows}
    for fn in rows.values():  # warm-up: lazy imports, allocator
        fn()
    for _ in range(args.repeats):
        for label, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            timings[label].append(time.perf_counter() - t0)
    with lingering_loras(components, request(stack_a)):
        pass
    lingering = {"(d) same stack again (lingering patch)": ours_same_again, "(e) stack differing in one LoRA": ours_switch}
    for label, fn in lingering.items():
        samples = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        timings[label] = [s / (2 if fn is ours_switch else 1) for s in samples]
    with lingering_loras(components, []):
        pass
    after = weights_fingerprint(components.values())

    base = min(timings[next(iter(rows))]) if pipe is not None else None
    print(f"{'path':58s} {'best s':>8s} {'median s':>9s} {'vs (a)':>8s}")
    for label, samples in timings.items():
        best, median = min(samples), sorted(samples)[len(samples) // 2]
        ratio = f"{base / best:7.2f}x" if base else "       -"
        print(f"{label:58s} {best:8.3f} {median:9.3f} {ratio}")
    print(f"weights touched: same stack again {touched['same']}, switch one LoRA {touched['switch']}")
    print(f"peak RSS {peak_rss_mb():.0f} MiB; torch {torch.__version__}")
    if before != after:
        raise SystemExit("FAILED: weights differ from the originals after restoring")
    print("restore: bit-exact")


if __name__ == "__main__":
    main()
