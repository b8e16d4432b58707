"""`ParkedModules` and `prepare_caches`: the order of moves a GPU run makes (recorded here with
stand-in modules).

The real moves run in `tests/test_gpu_paths.py` on a GPU; on a CPU run nothing moves at all.
"""

from __future__ import annotations

import contextlib

import torch

from lorastudio.train.offload import ParkedModules


class _Encoder(torch.nn.Module):
    """A stand-in that records where it is sent instead of going (no CUDA here)."""

    def __init__(self, moves: list[str], name: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(256, 256, dtype=torch.float16), requires_grad=False)
        self.moves, self.name = moves, name

    def to(self, device):  # noqa: D102 — records the move
        self.moves.append(f"{self.name}->{device}")
        return self


def test_a_gpu_run_parks_clip_encoders_and_brings_them_back_for_each_sample_step():
    moves: list[str] = []
    encoders = [_Encoder(moves, "clip"), _Encoder(moves, "bigG")]
    parked = ParkedModules("cuda:0")
    assert parked.park(encoders) == 2 * 256 * 256 * 2  # fp16 bytes freed on the GPU
    assert moves == ["clip->cpu", "bigG->cpu"]
    for _ in range(2):
        moves.clear()
        with parked.back_for_samples():
            assert moves == ["clip->cuda:0", "bigG->cuda:0"]
        assert moves[2:] == ["clip->cpu", "bigG->cpu"]


def test_chatglm_stays_in_cpu_memory_for_samples_too():
    moves: list[str] = []
    parked = ParkedModules("cuda")
    parked.park([_Encoder(moves, "chatglm")], back_for_samples=False)
    moves.clear()
    with parked.back_for_samples():
        pass
    assert moves == []  # its encode path runs where it is


def test_a_cpu_run_moves_nothing():
    moves: list[str] = []
    parked = ParkedModules("cpu")
    assert parked.park([_Encoder(moves, "clip")]) == 0
    with parked.back_for_samples():
        pass
    assert moves == []


def test_the_unet_waits_in_cpu_memory_while_the_caches_fill_on_a_gpu_run():
    from lorastudio.train.offload import unet_in_cpu_memory

    moves: list[str] = []
    unet = _Encoder(moves, "unet")
    with unet_in_cpu_memory(unet, "cuda") as waiting:
        assert waiting and moves == ["unet->cpu"]
    assert moves == ["unet->cpu", "unet->cuda"]
    moves.clear()
    try:
        with unet_in_cpu_memory(unet, "cuda:1"):
            raise RuntimeError("a cache failed")
    except RuntimeError:
        pass
    assert moves == ["unet->cpu", "unet->cuda:1"]  # back on its device all the same
    moves.clear()
    with unet_in_cpu_memory(unet, "cpu") as waiting:
        assert not waiting
    with unet_in_cpu_memory(unet, "cuda", encoding=False) as waiting:  # every cache warm: no trip
        assert not waiting
    assert moves == []


class _Latents:
    """A latent cache whose `missing` count falls to 0 once `prepare` ran (what the disk does)."""

    def __init__(self, folder, missing: int, moves: list[str]) -> None:
        self.folder, self.left, self.moves = folder / "vae", missing, moves

    def missing(self, images, flip) -> int:
        return self.left

    def prepare(self, images, flip) -> int:
        encoded, self.left = self.left, 0
        self.moves.append(f"latents ({encoded} encoded)")
        return encoded


class _Captions:
    """A caption encoder that stores each caption in its disk cache, as the real one does."""

    def __init__(self, moves: list[str]) -> None:
        self.disk, self.moves = None, moves

    def fill(self, captions) -> None:
        encoded = [caption for caption in captions if self.disk.load(caption) is None]
        for caption in encoded:
            self.disk.save(caption, torch.zeros(2, 2), None)
        self.moves.append(f"captions ({len(encoded)} encoded)")


CAPTIONS = ["zqx, a cat"]


def _prepare(tmp_path, moves, latents_missing: int, *, device="cuda", captions=CAPTIONS, **data):
    from types import SimpleNamespace

    from lorastudio.train.caches import prepare_caches
    from lorastudio.train.config import TrainConfig

    model = SimpleNamespace(
        unet=_Encoder(moves, "unet"),
        vae=_Encoder(moves, "vae"),
        text_encoders=[_Encoder(moves, "clip"), _Encoder(moves, "bigG")],
        device=device,
        sha256="0" * 64,
        family=SimpleNamespace(name="sdxl", text_encoder_kind="clip"),
        dtype=torch.float16,
    )
    accelerator = SimpleNamespace(main_process_first=contextlib.nullcontext)
    parked = ParkedModules(device)
    cfg = TrainConfig.model_validate({"data": data})
    said: list[str] = []
    latents = _Latents(tmp_path, latents_missing, moves)
    args = (cfg, model, [], latents, _Captions(moves), captions, tmp_path / "text", accelerator, parked, said.append)
    prepare_caches(*args)
    return parked, said


PARKING = ["clip->cpu", "bigG->cpu", "vae->cpu"]


def test_the_unet_steps_aside_while_the_caches_fill_and_the_rest_parks_before_it_is_back(tmp_path):
    moves: list[str] = []
    parked, said = _prepare(tmp_path, moves, latents_missing=3)
    assert moves == ["unet->cpu", "latents (3 encoded)", "captions (1 encoded)", *PARKING, "unet->cuda"]
    assert [m.name for m in parked.return_for_samples] == ["clip", "bigG", "vae"]
    assert any("VAE" in line for line in said) and any("the text encoders" in line for line in said)


def test_a_run_whose_caches_are_warm_moves_no_unet(tmp_path):
    moves: list[str] = []
    _prepare(tmp_path, moves, latents_missing=0, captions=CAPTIONS)  # fills the caption cache on disk
    moves.clear()
    _prepare(tmp_path, moves, latents_missing=0)  # a second run on the same images
    assert moves == ["latents (0 encoded)", "captions (0 encoded)", *PARKING]


def test_missing_latents_alone_or_missing_captions_alone_move_the_unet(tmp_path):
    moves: list[str] = []
    _prepare(tmp_path, moves, latents_missing=2)  # latents and captions missing (captions now on disk)
    moves.clear()
    _prepare(tmp_path, moves, latents_missing=2)  # latents alone
    assert moves == ["unet->cpu", "latents (2 encoded)", "captions (0 encoded)", *PARKING, "unet->cuda"]
    moves.clear()
    _prepare(tmp_path, moves, latents_missing=0, captions=["a caption not seen yet"])  # captions alone
    assert moves == ["unet->cpu", "latents (0 encoded)", "captions (1 encoded)", *PARKING, "unet->cuda"]


def test_a_trained_text_side_keeps_its_encoders_and_parks_the_vae(tmp_path):
    moves: list[str] = []
    parked, _ = _prepare(tmp_path, moves, latents_missing=0, captions=None)  # no caption cache at all
    assert moves == ["latents (0 encoded)", "vae->cpu"]
    assert [m.name for m in parked.return_for_samples] == ["vae"]


def test_colour_augmentation_keeps_the_vae_on_the_gpu(tmp_path):
    moves: list[str] = []
    parked, said = _prepare(tmp_path, moves, latents_missing=3, color_aug=True)
    assert moves == ["unet->cpu", "captions (1 encoded)", "clip->cpu", "bigG->cpu", "unet->cuda"]
    assert [m.name for m in parked.return_for_samples] == ["clip", "bigG"]
    assert any("latent cache off" in line for line in said)


def test_a_cpu_run_fills_the_caches_without_moving_anything(tmp_path):
    moves: list[str] = []
    parked, _ = _prepare(tmp_path, moves, latents_missing=3, device="cpu")
    assert moves == ["latents (3 encoded)", "captions (1 encoded)"] and parked.return_for_samples == []
