"""Loading the preprocessor networks: the user's weight file, strict key matching, a small cache.

Every weight-based preprocessor (hed.py, pidinet.py, lineart.py, lineart_anime.py, mlsd.py)
builds its network here from a file in studio/models/annotators. Pickled files load with
`weights_only=True`; a file whose keys do not match the network is refused with one line
naming the file (a wrong file must not give a silently random map).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lorastudio.errors import LorastudioError
from lorastudio.models.checkpoint import weights_only_load

if TYPE_CHECKING:
    import numpy as np

__all__ = ["cached_network", "image_to_tensor", "load_strict", "read_state_dict"]

_CACHE_SIZE = 4
_NETWORKS: OrderedDict[tuple[str, int, str, str], nn.Module] = OrderedDict()
_LOCK = threading.Lock()  # API requests may run preprocessors on several threads


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth`/`.pt` (never unpickling code) or `.safetensors` file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = weights_only_load(path)
    except Exception as error:  # pickle errors come in many types; the message says which file
        raise LorastudioError(
            f"{path.name} in {path.parent}/ does not load as a weights-only PyTorch file ({type(error).__name__}): "
            "download it again from the original source."
        ) from error
    if not isinstance(data, dict):
        raise LorastudioError(f"{path.name} in {path.parent}/ holds no state dict: download it again.")
    return data


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Load every tensor the network has from `state_dict`, refusing missing, extra or reshaped keys.

    BatchNorm's `num_batches_tracked` counters are optional (older files lack them).
    """
    own = model.state_dict()
    counters = {key for key in own if key.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state_dict) - counters)
    unexpected = sorted(set(state_dict) - set(own))
    reshaped = sorted(
        key for key in set(own) & set(state_dict) if tuple(own[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or reshaped:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            problems.append(f"{len(reshaped)} with another shape (e.g. {reshaped[0]})")
        raise LorastudioError(
            f"{path.name} in {path.parent}/ is not the expected network: keys "
            + ", ".join(problems)
            + "; use the original file of that name."
        )
    model.load_state_dict({key: value.float() for key, value in state_dict.items()}, strict=False)


def cached_network(
    path: Path, device: str, build: Callable[[Path], nn.Module], variant: str = ""
) -> nn.Module:
    """The network built by `build(path)`, in eval mode on `device`, cached by file path and mtime.

    A replaced file (new mtime) is loaded again; only the last few networks are kept.
    """
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(device), variant)
    with _LOCK:
        network = _NETWORKS.get(key)
        if network is None:
            network = build(path).float().eval().to(device)
            for parameter in network.parameters():
                parameter.requires_grad_(False)
            _NETWORKS[key] = network
            while len(_NETWORKS) > _CACHE_SIZE:
                _NETWORKS.popitem(last=False)
        _NETWORKS.move_to_end(key)
        return network


def image_to_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    """HxWx3 uint8 numpy array -> 1x3xHxW float tensor (0..255) on `device`."""
    tensor = torch.from_numpy(image.copy()).to(device=device, dtype=torch.float32)
    return tensor.permute(2, 0, 1).unsqueeze(0)
