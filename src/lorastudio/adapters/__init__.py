"""LoRA and embedding formats, per-request patching, merging and single-file export.

Public API (import from `lorastudio.adapters`):

LoRAs in memory
- `LoraFile(modules, metadata, embeddings)`: modules keyed by (component, module_path),
  component in "unet" / "text_encoder" / "text_encoder_2"; module_path is the dotted path
  inside the diffusers/transformers component (text-encoder paths stored without
  `text_model.`; `find_module(component, path)` resolves either). `lora.add(component, path, module)`.
- `LoraModule(down, up, alpha, kind)`: effect `alpha / rank * up @ down` ("linear" | "conv").
  LyCORIS files also give `LohaModule`, `LokrModule`, `Ia3Module`, `FullModule`, `DoraModule`,
  `BiasDiffModule` (adapters.lycoris) and `OftModule` (adapters.oft); `network_types(lora)` names
  what a file holds.

Reading and writing
- `load_lora_file(path) -> LoraFile`: kohya/webui, LyCORIS (LoCon, LoHa, LoKr, (IA)^3, OFT, full,
  DoRA), ComfyUI (`diffusion_model.*`, `text_encoders.*`), diffusers, peft folder, old diffusers,
  HCP (`unet-N` + `text_encoder-N`); format detected.
- `save_kohya(lora, path, metadata=None, *, family=None, unet_config=None)`: A1111/ComfyUI file
  (alpha kept, `text_model_` prefix, SDXL UNet in LDM names, `sshs_*` hashes; LyCORIS modules
  under LyCORIS' own tensor names).
- `save_diffusers(lora, path, unet_config=None)`, `save_peft(lora, folder, unet_config=None)`,
  `save_hcp(lora, folder, name)`.
- `build_metadata(facts, family, kind="lora")`: `ss_*` / `modelspec.*` metadata.
- hashes: `safetensors_model_hash`, `legacy_hash`, `model_short_hash` (10 hex),
  `lora_short_hash` (12 hex), `file_sha256`.

Families
- `detect_lora_family(lora) -> Family | None`, `check_lora_family(lora, family, name="LoRA",
  components=None)` raises a one-line `LorastudioError` for e.g. an SDXL LoRA on SD 1.5.

Applying
- `applied_loras(components, [(lora, te_weight, unet_weight), ...])`: context manager that
  patches weights for one block and restores them bit-exact on exit. A fourth item, `dyn`
  (A1111's `<lora:name:te:unet:dyn>`), keeps only each pair's first `dyn` ranks.
- `lingering_loras(components, loras)`: the same, but the stack stays on the model for the
  next request (same stack: nothing to do; another: only the layers that differ; `[]`: the
  originals back). One lock per model serialises its users (`adapters.lora_stack`).
- `merge_loras(components, [(lora, te_weight, unet_weight), ...])`: bake them in for good.

Embeddings
- `Embedding(name, vectors, info)`, `load_embedding(path, name=None)` (.pt/.bin only via
  `torch.load(weights_only=True)`, else `UnsafeFileError`; an A1111 .png from its
  `sd-ti-embedding` chunk or its pixels, as JSON: `embedding_png`; the vectors checked,
  `check_vectors`; `info` the A1111 facts), `save_embedding(emb, path, family)`.
  Embeddings bundled in a LoRA are in `LoraFile.embeddings` ({token: [tensor per encoder]});
  `embeddings_from_lora(lora)` gives them as `Embedding`s.

Single-file checkpoints
- `save_single_file(components, family, path, metadata=None)`: A1111/ComfyUI LDM layout that
  diffusers' `from_single_file(path, config=folder)` loads back bit-exact.
"""

from lorastudio.adapters.detect import (
    check_lora_family,
    detect_format,
    detect_lora_family,
    load_lora_file,
    lora_from_state_dict,
)
from lorastudio.adapters.embeddings import Embedding, embeddings_from_lora, load_embedding, save_embedding
from lorastudio.adapters.hashing import (
    file_sha256,
    legacy_hash,
    lora_short_hash,
    model_short_hash,
    safetensors_model_hash,
)
from lorastudio.adapters.hcp import load_hcp, save_hcp
from lorastudio.adapters.kohya import save_kohya
from lorastudio.adapters.ldm import save_single_file
from lorastudio.adapters.lora_file import LoraFile, LoraModule, find_module
from lorastudio.adapters.lycoris import (
    DoraModule,
    FullModule,
    Ia3Module,
    LohaModule,
    LokrModule,
    network_types,
)
from lorastudio.adapters.merge import merge_loras
from lorastudio.adapters.metadata import build_metadata
from lorastudio.adapters.patch import applied_loras, lingering_loras
from lorastudio.adapters.peft_format import save_diffusers, save_peft

__all__ = [
    "DoraModule",
    "Embedding",
    "FullModule",
    "Ia3Module",
    "LohaModule",
    "LokrModule",
    "LoraFile",
    "LoraModule",
    "applied_loras",
    "build_metadata",
    "check_lora_family",
    "detect_format",
    "detect_lora_family",
    "embeddings_from_lora",
    "file_sha256",
    "find_module",
    "legacy_hash",
    "lingering_loras",
    "load_embedding",
    "load_hcp",
    "load_lora_file",
    "lora_from_state_dict",
    "lora_short_hash",
    "merge_loras",
    "model_short_hash",
    "network_types",
    "safetensors_model_hash",
    "save_diffusers",
    "save_embedding",
    "save_hcp",
    "save_kohya",
    "save_peft",
    "save_single_file",
]
