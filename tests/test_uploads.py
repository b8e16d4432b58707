"""Uploads are stored whole or not at all: a full disk or a refused file leaves no `.part`."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.service import uploads
from lorastudio.service.quota import StorageFull

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _files(workspace) -> list[str]:
    return sorted(p.name for p in uploads.uploads_dir(workspace).iterdir())


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_neither_the_upload_nor_its_part_file(workspace, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: self.open("wb").write(data[:4]) and _disk_full())
    with pytest.raises(StorageFull, match="disk is full; try again"):
        uploads.save_upload(workspace, PNG)
    monkeypatch.setattr(uploads.shutil, "copyfileobj", _disk_full)
    with pytest.raises(StorageFull, match="the upload was not kept"):
        uploads.store_stream(workspace, io.BytesIO(PNG), "x.zip")
    assert _files(workspace) == []


def test_a_refused_upload_leaves_nothing_and_a_good_one_is_renamed_into_place(workspace):
    with pytest.raises(LorastudioError, match="not a zip file"):
        uploads.store_stream(workspace, io.BytesIO(b"not a zip"), "data.zip")
    assert _files(workspace) == []
    name, path = uploads.store_stream(workspace, io.BytesIO(b"PK\x03\x04rest"), "data.zip")
    assert _files(workspace) == [name] and name.endswith(".zip") and path.read_bytes() == b"PK\x03\x04rest"


def test_an_undecodable_request_image_is_worded_without_pillows_stream_repr():
    """Pillow's "cannot identify image file <_io.BytesIO object at 0x…>" reached API clients (EasyPhoto's
    instance_images, every base64 image): the line says what the data is, not which object held it."""
    import base64

    from lorastudio.service.uploads import decode_image

    text = "data:image/png;base64," + base64.b64encode(b"just some notes, not a picture\n" * 4).decode()
    with pytest.raises(LorastudioError) as info:
        decode_image(text, "instance_images[0]")
    message = str(info.value)
    assert message.startswith("instance_images[0]: not a readable image (no format") and "object at" not in message
    assert "BytesIO" not in message and len(message.splitlines()) == 1
