"""Read an upscaler weight file, tell which network it is, and build that network.

Pickles (`.pth`, `.pt`, `.ckpt`) load only through torch's weights-only unpickler; `.safetensors`
as they are. Real-ESRGAN's training files keep the weights under `params_ema` (or `params`).
Files that are something else (a LoRA, a checkpoint, a ControlNet, an unknown network) are
refused in one line naming the file and what is supported. SwinIR and SCUNet are told apart and
sized by `arch_specs` (HAT and Swin2SR, which share SwinIR's key names, are told apart by their
own keys); every file is checked against the network built from its sizes (shapes only) before it
is listed; `spandrel`, when installed, is asked about networks this package does not know (HAT, DAT,
Swin2SR, ...) and about files that do not fit the network their keys suggest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, UnsafeFileError
from lorastudio.generate.upscalers.arch_specs import (
    is_scunet,
    is_swinir,
    scunet_kwargs,
    swin_relative,
    swinir_kwargs,
)
from lorastudio.models.checkpoint import weights_only_load

if TYPE_CHECKING:
    import torch

__all__ = [
    "SUPPORTED",
    "UpscalerSpec",
    "build_network",
    "names_3x",
    "read_upscaler_state_dict",
    "sniff_upscaler",
]

SUPPORTED = (
    "supported: ESRGAN/ESRGAN+/Real-ESRGAN RRDBNet files (new or old key layout, nearest or pixel-shuffle upsampler), "
    "SRVGGNetCompact (realesr-general, realesr-animevideov3), SwinIR and SCUNet; "
    "`pip install --no-deps spandrel` (needs torchvision) adds HAT/DAT/Swin2SR"
)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")
WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model", "net")

# Key prefixes of files that are not upscalers, and what to call them.
_OTHER_KINDS: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "a LoRA"),
    ("lora_te", "a LoRA"),
    ("model.diffusion_model.", "a Stable Diffusion checkpoint"),
    ("conditioner.embedders.", "a Stable Diffusion checkpoint"),
    ("first_stage_model.", "a Stable Diffusion checkpoint"),
    ("control_model.", "a ControlNet"),
    ("input_hint_block.", "a ControlNet"),
    ("controlnet_cond_embedding.", "a ControlNet"),
    ("decoder.up.", "a VAE"),
    ("encoder.down.", "a VAE"),
    ("string_to_param", "a textual-inversion embedding"),
    ("emb_params", "a textual-inversion embedding"),
)


@dataclass(frozen=True)
class UpscalerSpec:
    """What a state dict is: the network, its constructor arguments and its scale."""

    arch: str  # "RRDBNet" | "SRVGGNetCompact" | "SwinIR" | "SCUNet" | "spandrel"
    scale: float
    kwargs: dict[str, Any]
    layout: str = ""  # "real-esrgan", "esrgan-old", "esrgan-mmsr", "compact", "swinir", "scunet"

    @property
    def channels(self) -> int:
        """The image channels the network takes: 3 (RGB) or 1 (greyscale models: SwinIR/SCUNet gray)."""
        if self.arch == "spandrel":
            return int(getattr(self.kwargs["descriptor"], "input_channels", 3))
        for key in ("in_chans", "in_nc", "num_in_ch"):
            if key in self.kwargs:
                return int(self.kwargs[key])
        return 3


def _refuse(path: Path, what: str) -> LorastudioError:
    return LorastudioError(f"{path.name}: {what}, not an upscaler; {SUPPORTED}.")


def read_upscaler_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of an upscaler file (unwrapped from `params_ema`/`params`, `module.` stripped)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from lorastudio.models.checkpoint import read_safetensors_private

        data: Any = read_safetensors_private(path)[0]
    elif suffix in PICKLE_SUFFIXES:
        data = _load_pickle(path)
    else:
        raise LorastudioError(f"{path.name}: unknown file type {suffix!r}; upscalers are .pth, .pt, .ckpt or .safetensors.")
    for key in WRAPPER_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict):
        raise _refuse(path, "holds no state dict")
    tensors = {str(k): v for k, v in data.items() if hasattr(v, "shape")}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    if not tensors:
        raise _refuse(path, "holds no tensors")
    return tensors


def _load_pickle(path: Path) -> Any:
    import pickle


    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # neither torch's zip nor a raw pickle
        raise LorastudioError(f"{path.name}: cannot be read as an upscaler (not a torch file); the file may be corrupt.")
    try:
        return weights_only_load(path)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = f" ({found.group(1)})" if found else ""
        raise UnsafeFileError(
            f"{path.name}: refused, it needs unsafe unpickling{reason}; use a .safetensors copy of this upscaler."
        ) from None
    except Exception as exc:
        raise LorastudioError(
            f"{path.name}: cannot be read as an upscaler ({type(exc).__name__}); the file may be corrupt."
        ) from None


def sniff_upscaler(state: dict[str, Any], path: str | Path) -> UpscalerSpec:
    """Which network `state` holds, or a one-line refusal naming the file and what is supported."""
    path = Path(path)
    for prefix, kind in _OTHER_KINDS:
        if any(key.startswith(prefix) or f".{prefix}" in key for key in state):
            raise _refuse(path, f"looks like {kind}")
    if any(".lora_down." in key or ".lora_A." in key or key.endswith(".alpha") for key in state):
        raise _refuse(path, "looks like a LoRA")
    found = _own_spec(state, path)
    if found is not None:
        spec, weights = found
        misfit = _misfit(spec, weights)
        if misfit is None:
            return _check_channels(spec, path)
        other = _spandrel_spec(state)  # a relative under the same names (spandrel's list is longer)
        if other is not None:
            return _check_channels(other, path)
        raise LorastudioError(f"{path.name}: {spec.arch} weights do not fit ({misfit}); {SUPPORTED}.")
    spec = _spandrel_spec(state)
    if spec is not None:
        return _check_channels(spec, path)
    relative = swin_relative(state)
    if relative is not None:
        raise LorastudioError(
            f"{path.name}: is a {relative} network, which runs here only through spandrel; "
            "`pip install --no-deps spandrel` (needs torchvision)."
        )
    raise _refuse(path, "is a network this build does not know")


def _check_channels(spec: UpscalerSpec, path: Path) -> UpscalerSpec:
    """`spec`, when its network takes RGB or greyscale images (a greyscale one runs on the luminance)."""
    if spec.channels not in (1, 3):
        raise LorastudioError(
            f"{path.name}: a {spec.arch} for {spec.channels}-channel images; only RGB (3) and greyscale (1) "
            "upscalers run here."
        )
    return spec


def _own_spec(state: dict[str, Any], path: Path) -> tuple[UpscalerSpec, dict[str, Any]] | None:
    """The spec of a network this package builds and `state` under that network's names, or None."""
    if "conv_first.weight" in state and any(key.startswith("body.") for key in state):
        return _rrdbnet_spec(state, path, "real-esrgan"), state
    if "model.0.weight" in state and any(key.startswith("model.1.sub.") for key in state):
        converted = _from_old_layout(state, path)
        return _rrdbnet_spec(converted, path, "esrgan-old"), converted
    if "conv_first.weight" in state and any(key.startswith("RRDB_trunk.") for key in state):
        converted = _from_mmsr_layout(state)
        return _rrdbnet_spec(converted, path, "esrgan-mmsr"), converted
    if "body.0.weight" in state and "body.1.weight" in state and state["body.1.weight"].ndim == 1:
        return _compact_spec(state, path), state
    if is_swinir(state):
        kwargs, scale = _read_sizes(swinir_kwargs, "SwinIR", state, path)
        return UpscalerSpec("SwinIR", float(scale), kwargs, "swinir"), state
    if is_scunet(state):
        return UpscalerSpec("SCUNet", 1.0, _read_sizes(scunet_kwargs, "SCUNet", state, path), "scunet"), state
    return None


def _misfit(spec: UpscalerSpec, state: dict[str, Any]) -> str | None:
    """Why `state` would not load strictly into `spec`'s network (built shapes-only on the meta device), or None.

    Read when the file is listed, so a file that only looks like a known network is refused (or
    handed to spandrel) then, not when it is first used.
    """
    import torch

    try:
        with torch.device("meta"):
            network = _network_class(spec.arch)(**spec.kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:  # sizes the network cannot take
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    expected = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [key for key in expected if key in state and tuple(state[key].shape) != expected[key]]
    reasons = [f"missing {missing[0]!r}"] if missing else []
    reasons += [f"unexpected {unexpected[0]!r}"] if unexpected else []
    reasons += [f"{wrong[0]!r} is {tuple(state[wrong[0]].shape)}, not {expected[wrong[0]]}"] if wrong else []
    if not reasons:
        return None
    counts = len(missing) + len(unexpected) + len(wrong)
    return ", ".join(reasons) + (f"; {counts} keys in all" if counts > len(reasons) else "")


def _read_sizes(read, arch: str, state: dict[str, Any], path: Path):
    """`read(state, path, _refuse)`, with a key the layout needs and the file lacks refused by name."""
    try:
        return read(state, path, _refuse)
    except KeyError as exc:
        raise _refuse(path, f"is a {arch}-like network without {exc.args[0]!r}") from None


# -- RRDBNet --------------------------------------------------------------------------------------


def _rrdbnet_spec(state: dict[str, Any], path: Path, layout: str) -> UpscalerSpec:
    first, last = state["conv_first.weight"], state.get("conv_last.weight")
    if last is None or first.ndim != 4:
        raise _refuse(path, "is an RRDBNet without conv_last")
    out_ch, in_folded = int(last.shape[0]), int(first.shape[1])
    unshuffle = round((in_folded / out_ch) ** 0.5)
    if unshuffle < 1 or out_ch * unshuffle * unshuffle != in_folded:
        raise _refuse(path, f"is an RRDBNet with {in_folded} input channels for {out_ch} output ones")
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"body\.(\d+)\.", key))}
    upsamples = sum(1 for key in state if re.fullmatch(r"conv_up\d+\.weight", key))
    num_feat = int(first.shape[0])
    upsampler, up_factor = _rrdbnet_upsampler(state, upsamples, num_feat, path)
    if upsampler == "nearest" and upsamples == 1 and names_3x(path.stem):
        up_factor = 3  # a nearest 3x step has a 2x step's keys and shapes: only the name tells
    kwargs = {
        "num_in_ch": out_ch,
        "num_out_ch": out_ch,
        "num_feat": num_feat,
        "num_block": max(blocks) + 1 if blocks else 0,
        "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]) if blocks else 32,
        "num_upsamples": upsamples,
        "unshuffle": unshuffle,
        "upsampler": upsampler,
        "up_factor": up_factor,
        "plus": any(".conv1x1." in key for key in state),  # ESRGAN+
    }
    return UpscalerSpec("RRDBNet", up_factor**upsamples / unshuffle, kwargs, layout)


def _rrdbnet_upsampler(state: dict[str, Any], upsamples: int, num_feat: int, path: Path) -> tuple[str, int]:
    """(upsampler, factor per step) from the upsampling convs' widths: num_feat is ESRGAN's nearest 2x + conv;
    4 and 9 times num_feat are BasicSR's pixel-shuffle steps of 2x and 3x (its 3x files take one)."""
    ratios = {int(state[f"conv_up{i}.weight"].shape[0]) / num_feat for i in range(1, upsamples + 1)}
    if not ratios or ratios == {1}:
        return "nearest", 2
    if ratios == {4}:
        return "pixelshuffle", 2
    if ratios == {9}:
        return "pixelshuffle", 3
    widths = ", ".join(f"{ratio:g}" for ratio in sorted(ratios))
    raise _refuse(path, f"is an RRDBNet whose upsampling convs give {widths} times its {num_feat} features")


_NAME_SAYS_3X = re.compile(r"(?:^|[^a-z0-9])(?:3x|x3)(?![0-9])", re.IGNORECASE)


def names_3x(stem: str) -> bool:
    """A file name that gives the scale as 3x (`3x_Foo`, `3xFoo`, `Foo_x3`, `foo-3x`).

    Old-layout ESRGAN files keep no scale: a nearest 3x step (nearest upsample by 3, then a conv) has
    the same keys and shapes as a 2x step, so A1111 (its `infer_params`) and spandrel read every such
    file as 2x. The community names its 3x files so; the name is the one thing that tells them.
    """
    return bool(_NAME_SAYS_3X.search(stem))


def _from_old_layout(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """Old ESRGAN keys (`model.0`, `model.1.sub.N.RDB1.conv1.0`, ESRGAN+'s `RDB1.conv1x1`,
    `model.3/6/8/10`) -> RRDBNet's."""
    converted: dict[str, Any] = {}
    tail: dict[int, dict[str, Any]] = {}
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", key))}
    trunk = max(blocks) + 1 if blocks else 0
    for key, value in state.items():
        if m := re.fullmatch(r"model\.0\.(weight|bias)", key):
            converted[f"conv_first.{m.group(1)}"] = value
        elif m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key):
            converted[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv1x1\.weight", key):
            converted[f"body.{m.group(1)}.rdb{m.group(2)}.conv1x1.weight"] = value
        elif m := re.fullmatch(rf"model\.1\.sub\.{trunk}\.(weight|bias)", key):
            converted[f"conv_body.{m.group(1)}"] = value
        elif m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", key):
            tail.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            raise _refuse(path, f"is an ESRGAN variant with key {key!r}")
    if len(tail) < 2:
        raise _refuse(path, "is an old-layout ESRGAN without its output convs")
    *ups, hr, last = sorted(tail)
    names = [f"conv_up{i}" for i in range(1, len(ups) + 1)] + ["conv_hr", "conv_last"]
    for name, index in zip(names, [*ups, hr, last], strict=True):
        for kind, value in tail[index].items():
            converted[f"{name}.{kind}"] = value
    return converted


_MMSR_NAMES = {"trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2", "upconv3": "conv_up3", "HRconv": "conv_hr"}


def _from_mmsr_layout(state: dict[str, Any]) -> dict[str, Any]:
    """ESRGAN's second layout (`RRDB_trunk.N.RDB1.conv1`, `trunk_conv`, `upconv1`, `HRconv`) -> RRDBNet's."""
    converted = {}
    for key, value in state.items():
        if m := re.fullmatch(r"RRDB_trunk\.(\d+)\.RDB(\d)\.(conv(?:\d|1x1)\.(?:weight|bias))", key):
            key = f"body.{m.group(1)}.rdb{m.group(2)}.{m.group(3)}"
        else:
            head, _, kind = key.partition(".")
            key = f"{_MMSR_NAMES.get(head, head)}.{kind}"
        converted[key] = value
    return converted


# -- SRVGGNetCompact ------------------------------------------------------------------------------


def _compact_spec(state: dict[str, Any], path: Path) -> UpscalerSpec:
    convs = sorted(int(m.group(1)) for key in state if (m := re.fullmatch(r"body\.(\d+)\.weight", key)) and state[key].ndim == 4)
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    in_ch = int(first.shape[1])
    scale = round((int(last.shape[0]) / in_ch) ** 0.5)
    if scale < 1 or in_ch * scale * scale != int(last.shape[0]):
        raise _refuse(path, f"is a compact network with {int(last.shape[0])} output channels")
    kwargs = {"num_in_ch": in_ch, "num_out_ch": in_ch, "num_feat": int(first.shape[0]), "num_conv": len(convs) - 2, "upscale": scale}
    return UpscalerSpec("SRVGGNetCompact", float(scale), kwargs, "compact")


# -- spandrel (optional) --------------------------------------------------------------------------


def _spandrel_spec(state: dict[str, Any]) -> UpscalerSpec | None:
    """Ask `spandrel` (installed with `--no-deps`; it imports only beside torchvision)."""
    try:
        import spandrel
    except Exception:  # not installed, or torchvision missing: the refusal names the extra
        return None
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception:
        return None
    return UpscalerSpec("spandrel", float(descriptor.scale), {"descriptor": descriptor}, type(descriptor.architecture).__name__)


def build_network(spec: UpscalerSpec, state: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The network of `spec` with the weights of `state` (converted keys), in eval mode."""
    if spec.arch == "spandrel":
        return spec.kwargs["descriptor"].model.eval()
    if spec.layout == "esrgan-old":
        state = _from_old_layout(state, Path(path))
    elif spec.layout == "esrgan-mmsr":
        state = _from_mmsr_layout(state)
    network = _network_class(spec.arch)(**spec.kwargs)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch's first line only says "Error(s) in loading state_dict"
        reason = " ".join(str(exc).split("\n", 1)[-1].split())[:200]
        raise LorastudioError(f"{Path(path).name}: {spec.arch} weights do not fit ({reason}); {SUPPORTED}.") from None
    return network.eval()


def _network_class(arch: str):
    """The module of `arch`, imported only when one is built (each pulls in torch)."""
    if arch == "SwinIR":
        from lorastudio.generate.upscalers.swinir import SwinIR

        return SwinIR
    if arch == "SCUNet":
        from lorastudio.generate.upscalers.scunet import SCUNet

        return SCUNet
    from lorastudio.generate.upscalers.networks import RRDBNet, SRVGGNetCompact

    return RRDBNet if arch == "RRDBNet" else SRVGGNetCompact
