"""`read_safetensors_private`: one read of the file into private memory, tensors viewing it.

What safetensors' own reader gives (names, dtypes, shapes, values, metadata), no tie to the
file afterwards, and a one-line error for every way a file can be broken.
"""

from __future__ import annotations

import json
import struct
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorastudio.errors import LorastudioError
from lorastudio.models.checkpoint import read_private_bytes, read_safetensors_private

MIXED = {
    "a16": torch.arange(3, dtype=torch.float16),  # 6 bytes: what follows sits at an odd offset
    "b32": torch.arange(5, dtype=torch.float32),
    "c_bool": torch.tensor([True, False, True]),
    "d_empty": torch.zeros(0, 4),
    "e_bf16": torch.randn(2, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16),
    "f64": torch.arange(3, dtype=torch.int64),
    "g_scalar": torch.tensor(2.5),
    "h8": torch.arange(7, dtype=torch.uint8),
}


def _raw_file(path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def test_same_tensors_and_metadata_as_safetensors_for_every_dtype_and_offset(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file(MIXED, str(path), metadata={"ss_network_dim": "4"})
    expected = load_file(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it views a read-only buffer
        tensors, metadata = read_safetensors_private(path)
    assert list(tensors) == sorted(MIXED) and metadata == {"ss_network_dim": "4"}
    for name, tensor in expected.items():
        assert tensors[name].dtype == tensor.dtype and tensors[name].shape == tensor.shape
        assert torch.equal(tensors[name], tensor), name
        assert tensors[name].data_ptr() % tensor.element_size() == 0  # aligned for its dtype


def test_the_tensors_share_one_read_and_outlive_the_file(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"up": torch.ones(4, 4), "down": torch.full((4, 4), 2.0)}, str(path))
    data = read_private_bytes(path)
    tensors, _ = read_safetensors_private(path, data)
    start = torch.frombuffer(data, dtype=torch.uint8).data_ptr()
    assert all(start <= t.data_ptr() < start + len(data) for t in tensors.values())  # views, not copies
    save_file({"up": torch.zeros(4, 4), "down": torch.zeros(4, 4)}, str(path))  # the file replaced in place
    path.write_bytes(b"")  # and truncated: a memory-mapped reader would now die of SIGBUS
    assert float(tensors["up"].sum()) == 16 and float(tensors["down"].sum()) == 32
    tensors["up"].add_(1)  # private and writable
    assert float(tensors["up"].sum()) == 32


def test_a_file_of_megabytes_reads_into_private_memory_that_outlives_it(tmp_path):
    """Over 2 MiB the buffer is anonymous memory advised for huge pages (not a bytearray): the same
    values, views of it, an aligned copy for an odd offset, and no tie to the file."""
    import mmap

    big = torch.arange(3 << 20, dtype=torch.uint8)  # 3 MiB
    half, single = torch.arange(3, dtype=torch.float16), torch.arange(2, dtype=torch.float32)
    header = {
        "big": {"dtype": "U8", "shape": [3 << 20], "data_offsets": [0, 3 << 20]},
        "half": {"dtype": "F16", "shape": [3], "data_offsets": [3 << 20, (3 << 20) + 6]},
        "single": {"dtype": "F32", "shape": [2], "data_offsets": [(3 << 20) + 6, (3 << 20) + 14]},
    }
    path = tmp_path / "big.safetensors"
    _raw_file(path, header, big.numpy().tobytes() + half.numpy().tobytes() + single.numpy().tobytes())
    data = read_private_bytes(path)
    assert isinstance(data, mmap.mmap) and len(data) == path.stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no read-only buffer viewed
        tensors, _ = read_safetensors_private(path, data)
    start = torch.frombuffer(data, dtype=torch.uint8).data_ptr()
    assert start <= tensors["big"].data_ptr() < start + len(data)  # a view, not a copy
    assert tensors["single"].data_ptr() % 4 == 0
    path.write_bytes(b"")  # truncated: a reader that mapped the file would die of SIGBUS here
    del data
    assert torch.equal(tensors["big"], big) and torch.equal(tensors["half"], half)
    assert torch.equal(tensors["single"], single)


@pytest.mark.parametrize(
    ("header", "body", "reason"),
    [
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "past the end"),
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "do not fill"),
        ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "shape and dtype"),
        ({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
        (
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlaps",
        ),
        ({"x": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "no data_offsets"),
        ({"x": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [False, 8]}}, b"\0" * 8, "no data_offsets"),
        ({"x": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}, b"", "bad shape"),
        ({"x": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}, b"", "bad shape"),
        ({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
        ({"x": 7}, b"", "no data_offsets"),
        ({"__metadata__": {"a": 1}}, b"", "mapping of strings"),
    ],
)
def test_a_broken_file_is_one_line_naming_it(tmp_path, header, body, reason):
    path = tmp_path / "坏的.safetensors"
    _raw_file(path, header, body)
    with pytest.raises(LorastudioError, match=reason) as caught:
        read_safetensors_private(path)
    assert str(caught.value).startswith("坏的.safetensors: not a complete .safetensors file")
    assert "\n" not in str(caught.value)


def _with_header(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize(
    "content",
    [
        b"", b"\x01\x02", struct.pack("<Q", 1 << 40) + b"{}", _with_header(b"[1]  "),
        _with_header(b'{"a": ' + b"9" * 5000 + b"}"),  # past Python's integer-string limit
        _with_header(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),  # nesting past the recursion limit
        _with_header("{}".encode("utf-16")),  # the format is UTF-8 only
        _with_header(b"\xef\xbb\xbf{}"),  # nor a BOM
        _with_header(b'{"x\\ud800": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}'),  # lone surrogate
        _with_header(b'{"__metadata__": {}, "__metadata__": {}}'),  # a repeated key
    ],
)  # fmt: skip
def test_a_file_that_is_no_safetensors_at_all_is_refused(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(LorastudioError, match="x.safetensors: not a complete"):
        read_safetensors_private(path)


def test_a_tensor_at_an_offset_its_dtype_cannot_view_gets_an_aligned_copy(tmp_path):
    path = tmp_path / "odd.safetensors"
    half, single = torch.arange(3, dtype=torch.float16), torch.arange(2, dtype=torch.float32)
    header = {
        "half": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
        "single": {"dtype": "F32", "shape": [2], "data_offsets": [6, 14]},  # 4-byte values at byte 6
    }
    _raw_file(path, header, half.numpy().tobytes() + single.numpy().tobytes())
    tensors, _ = read_safetensors_private(path)
    assert torch.equal(tensors["half"], half) and torch.equal(tensors["single"], single)
    assert tensors["single"].data_ptr() % 4 == 0


def test_a_dtype_torch_reads_that_lorastudio_does_not_know_says_so_not_corrupt(tmp_path):
    path = tmp_path / "odd.safetensors"
    _raw_file(path, {"x": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0")
    with pytest.raises(LorastudioError, match="dtype 'F4', which lorastudio cannot read") as caught:
        read_safetensors_private(path)
    assert "not a complete" not in str(caught.value)
    complex_file = tmp_path / "complex.safetensors"
    save_file({"z": torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)}, str(complex_file))
    assert torch.equal(read_safetensors_private(complex_file)[0]["z"], load_file(str(complex_file))["z"])


def test_header_only_readers_check_the_same_rules(tmp_path):
    from lorastudio.models.checkpoint import read_safetensors_header, read_safetensors_keys

    path = tmp_path / "gap.safetensors"
    _raw_file(path, {"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8)
    for reader in (read_safetensors_header, read_safetensors_keys):
        with pytest.raises(LorastudioError, match="gap.safetensors: not a readable .safetensors file"):
            reader(path)
    deep = tmp_path / "deep.safetensors"
    deep.write_bytes(_with_header(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
    with pytest.raises(LorastudioError, match="not UTF-8 JSON"):
        read_safetensors_header(deep)
