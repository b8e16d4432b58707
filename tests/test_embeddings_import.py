"""Embeddings from civitai and A1111 (.pt, .bin, PNG) imported from every front, listed and used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from embedding_files import a1111_pt, a1111_stream, chunk_png, embedding_dict, pixel_png, plain_png

WIDTH = 32  # tiny-sd15's CLIP width


def _vectors(seed: int, count: int = 2, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(count, WIDTH, generator=torch.Generator().manual_seed(seed)) * scale


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _saved(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def test_a1111_stream_matches_its_reference_values():
    from lorastudio.adapters.embedding_png import lcg_nibbles

    # the first values A1111's own self-test pins for its stream
    assert a1111_stream(10) == [253, 242, 127, 44, 157, 27, 239, 133, 38, 79]
    expected = np.array(a1111_stream(5000), np.uint8) & 0x0F
    assert np.array_equal(lcg_nibbles(5000), expected)  # built by doubling, equal at every length
    assert np.array_equal(lcg_nibbles(77), expected[:77])


def test_cli_imports_an_a1111_pt_as_safetensors_with_its_facts(cli, workspace, tmp_path):
    vectors = _vectors(1)
    source = a1111_pt(tmp_path / "zkpt.pt", vectors)
    info = _json(cli("embeddings", "import", source, "--json"))
    assert info["name"] == "zkpt" and info["path"] == "zkpt.safetensors" and info["converted_from"] == "pt"
    assert info["vectors"] == [2] and info["width"] == [WIDTH]
    tensors, metadata = _saved(workspace.embeddings / "zkpt.safetensors")
    assert list(tensors) == ["emb_params"] and torch.equal(tensors["emb_params"], vectors)
    assert metadata["step"] == "500" and metadata["sd_checkpoint_name"] == "v1-5-pruned"
    assert not list(workspace.embeddings.glob("*.pt"))  # stored as safetensors only
    # a given name is the prompt word; a .bin (diffusers' learned_embeds) is read the same way
    torch.save({"<zk-cat>": vectors[0]}, tmp_path / "learned_embeds.bin")
    result = cli("embeddings", "import", tmp_path / "learned_embeds.bin", "--name", "zkcat")
    assert result.exit_code == 0 and "zkcat (1 vectors x 32, converted from .bin)" in result.output
    rows = {r["name"]: r for r in _json(cli("embeddings", "list", "--json"))["embeddings"]}
    assert (rows["zkpt"]["vectors"], rows["zkpt"]["shape"], rows["zkcat"]["vectors"]) == (2, WIDTH, 1)
    again = cli("embeddings", "import", source)
    assert again.exit_code == 2 and "already in the library" in again.output


@pytest.mark.parametrize("writer", [chunk_png, pixel_png], ids=["text-chunk", "in-pixels"])
def test_cli_imports_an_a1111_png_embedding(cli, workspace, tmp_path, writer):
    vectors = _vectors(2, count=3)
    source = writer(tmp_path / "zkpic.png", embedding_dict(vectors, "zkpic", step=1200))
    info = _json(cli("embeddings", "import", source, "--json"))
    assert (info["name"], info["converted_from"], info["vectors"]) == ("zkpic", "png", [3])
    tensors, metadata = _saved(workspace.embeddings / "zkpic.safetensors")
    assert torch.equal(tensors["emb_params"], vectors) and metadata["step"] == "1200"
    # A1111 names a PNG embedding by the name it holds: a renamed download keeps its word
    renamed = writer(tmp_path / "zkpic (1).png", embedding_dict(vectors, "zkother", step=1200))
    assert _json(cli("embeddings", "import", renamed, "--json"))["name"] == "zkother"
    blank = writer(tmp_path / "zkblank.png", embedding_dict(vectors, "   ", step=1200))
    assert _json(cli("embeddings", "import", blank, "--json"))["name"] == "zkblank"  # a blank name: the stem


def test_import_refuses_pictures_and_damaged_files_in_one_line(cli, workspace, tmp_path):
    striped = np.full((24, 24, 3), 200, np.uint8)
    striped[:, 5] = striped[:, 17] = 0  # two columns without data bits: the layout, not the data
    Image.fromarray(striped).save(tmp_path / "striped.png")
    (tmp_path / "broken.pt").write_bytes(b"\x80\x02" + bytes(range(200)))
    (tmp_path / "cut.pt").write_bytes(a1111_pt(tmp_path / "whole.pt", _vectors(3)).read_bytes()[:300])
    torch.save({"string_to_param": {"*": torch.full((1, WIDTH), float("nan"))}}, tmp_path / "nan.pt")
    torch.save({"string_to_param": {"*": _vectors(4), "cat": _vectors(5)}}, tmp_path / "two.pt")  # A1111 refuses it
    save_file({"string_to_param.*": _vectors(4), "string_to_param.cat": _vectors(5)}, tmp_path / "two.safetensors")
    cases = {
        plain_png(tmp_path / "holiday.png"): "a picture without embedding data",
        tmp_path / "striped.png": "a picture without embedding data",
        tmp_path / "broken.pt": "not a readable PyTorch file",
        tmp_path / "cut.pt": "not a readable PyTorch file",
        tmp_path / "nan.pt": "NaN or infinite",
        tmp_path / "two.pt": "embedding file has multiple terms in it",
        tmp_path / "two.safetensors": "embedding file has multiple terms in it",
    }
    for source, why in cases.items():
        result = cli("embeddings", "import", source)
        assert result.exit_code == 2, (source, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and source.name in lines[0] and why in lines[0], result.output
    assert not list(workspace.embeddings.iterdir())  # nothing written, no temporary file left


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_import_never_runs_a_pickled_payload(cli, workspace, tmp_path, capfd):
    torch.save({"string_to_param": {"*": _vectors(4)}, "x": _Payload()}, tmp_path / "evil.pt")
    result = cli("embeddings", "import", tmp_path / "evil.pt")
    assert result.exit_code == 2 and "evil.pt" in result.output and "could run code" in result.output
    assert "pwned" not in capfd.readouterr().out + result.output
    assert not list(workspace.embeddings.iterdir())


def test_listing_reads_pickles_and_only_embedding_pictures(cli, workspace, tmp_path):
    folder = workspace.embeddings
    a1111_pt(folder / "zkpt.pt", _vectors(5, count=4))
    torch.save({"string_to_param": {"*": _vectors(6, count=1)}}, folder / "zkbin.bin")
    (folder / "zkbad.bin").write_bytes(b"PK\x03\x04 not really a zip")
    pixel_png(folder / "zkpix.png", embedding_dict(_vectors(7), "zkpix"))
    chunk_png(folder / "zkchunk.png", embedding_dict(_vectors(8, count=5), "zkchunk"))
    plain_png(folder / "zkpix.preview.png")  # A1111's preview of zkpix
    chunk_png(folder / "zkchunk.preview.png", embedding_dict(_vectors(8), "x"))  # a preview, whatever it holds
    plain_png(folder / "holiday.png")
    rows = {r["name"]: r for r in _json(cli("embeddings", "list", "--json"))["embeddings"]}
    assert set(rows) == {"zkpt", "zkbin", "zkbad", "zkpix", "zkchunk"}
    shapes = {name: (row["vectors"], row["shape"]) for name, row in rows.items() if name != "zkbad"}
    assert shapes == {"zkpt": (4, WIDTH), "zkbin": (1, WIDTH), "zkpix": (2, WIDTH), "zkchunk": (5, WIDTH)}
    assert rows["zkpt"]["metadata"]["step"] == "500" and rows["zkpt"]["error"] is None
    assert rows["zkbad"]["vectors"] is None and "zkbad.bin: not a readable PyTorch file" in rows["zkbad"]["error"]
    # a picture is not a name to delete; an embedding picture is
    assert cli("embeddings", "delete", "holiday").exit_code == 2 and (folder / "holiday.png").exists()
    # renaming a picture would keep its word (the name stored in it): refused, saying to import it
    refused = cli("embeddings", "rename", "zkpix", "zkpix2")
    assert refused.exit_code == 2 and "--name zkpix2" in refused.output and (folder / "zkpix.png").exists()
    assert cli("embeddings", "delete", "zkpix").exit_code == 0 and not (folder / "zkpix.png").exists()
    # an import may take a name a plain picture has (it is no embedding)
    assert cli("embeddings", "import", a1111_pt(tmp_path / "holiday.pt", _vectors(9))).exit_code == 0


def _gen(cli, prompt: str) -> np.ndarray:
    out = _json(cli("generate", "--model", "tiny-sd15", "--steps", "6", "--seed", "2", "--json", "--prompt", prompt))
    return np.asarray(Image.open(out["images"][0]).convert("RGB"), dtype=np.float32)


def test_imported_and_picture_embeddings_change_the_image(cli, tiny_workspace, tmp_path, one_torch_thread):
    plain = _gen(cli, "zkpq zkpiw picture")
    words = _gen(cli, "zkpq zkpic picture")
    assert cli("embeddings", "import", a1111_pt(tmp_path / "zkpt.pt", _vectors(10))).exit_code == 0
    pixel_png(tiny_workspace.embeddings / "zkpix.png", embedding_dict(_vectors(11), "zkpix"))
    plain_png(tiny_workspace.embeddings / "zkpix.preview.png")
    plain_png(tiny_workspace.embeddings / "zkpic.png")  # a plain picture: its word stays a word
    assert np.abs(_gen(cli, "zkpt zkpiw picture") - plain).mean() > 0.1  # the imported .pt's word
    assert np.abs(_gen(cli, "zkpq zkpix picture") - plain).mean() > 0.1  # a PNG embedding in the folder
    assert np.array_equal(_gen(cli, "zkpq zkpic picture"), words)  # the plain picture changed nothing


def test_rest_upload_takes_a_pt_and_refuses_a_plain_picture(client, studio, tmp_path):
    vectors = _vectors(12)
    pt = a1111_pt(tmp_path / "zkrest.pt", vectors).read_bytes()
    answer = client.post("/api/v1/embeddings", files={"file": ("zkrest.pt", pt)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "zkrest" and answer.json()["path"] == "zkrest.safetensors"
    tensors, _ = _saved(studio.workspace.embeddings / "zkrest.safetensors")
    assert torch.equal(tensors["emb_params"], vectors)
    listed = {r["name"]: r for r in client.get("/api/v1/embeddings").json()["embeddings"]}
    assert (listed["zkrest"]["vectors"], listed["zkrest"]["shape"]) == (2, WIDTH)
    a1111 = client.get("/sdapi/v1/embeddings").json()["loaded"]["zkrest"]
    assert (a1111["step"], a1111["sd_checkpoint_name"], a1111["vectors"]) == (500, "v1-5-pruned", 2)
    picture = plain_png(tmp_path / "holiday.png").read_bytes()
    refused = client.post("/api/v1/embeddings", files={"file": ("holiday.png", picture)})
    assert refused.status_code == 400 and "holiday.png" in refused.text, refused.text
    script = client.post("/api/v1/embeddings", files={"file": ("x.pt", b"#!/bin/sh\necho hi\n")})
    assert script.status_code == 400 and "not a PyTorch .pt file" in script.text
    assert sorted(p.name for p in studio.workspace.embeddings.iterdir()) == ["zkrest.safetensors"]


def test_web_ui_import_takes_the_same_files(workspace, tmp_path):
    from lorastudio.ui.tabs.library import _sections

    section = next(s for s in _sections() if s.key == "embeddings")
    assert set(section.file_types) == {".safetensors", ".pt", ".bin", ".png", ".webp", ".jxl", ".avif"}
    info = section.import_file(workspace, chunk_png(tmp_path / "zkui.png", embedding_dict(_vectors(13), "zkui")), "")
    assert info["name"] == "zkui" and (workspace.embeddings / "zkui.safetensors").is_file()


def test_a_file_far_too_large_for_an_embedding_is_refused_before_it_is_read(workspace, tmp_path, monkeypatch):
    """A model renamed .pt would be unpickled whole (hundreds of MB) only to be refused afterwards."""
    from lorastudio.adapters import embeddings as adapter
    from lorastudio.errors import LorastudioError
    from lorastudio.service import embeddings

    monkeypatch.setattr(embeddings, "MAX_LISTED_READ_BYTES", 1000)
    monkeypatch.setattr(adapter, "_load_pickle_safely", lambda path: pytest.fail("read before the size check"))
    big = tmp_path / "model.pt"
    big.write_bytes(b"PK" + b"\0" * 2000)
    with pytest.raises(LorastudioError, match=r"^model.pt: 0 MB is far too large for an embedding"):
        embeddings.import_embedding(workspace, big)


def test_an_import_job_takes_a_pt_sent_to_the_upload_route_and_nothing_else_does(client, studio, tmp_path):
    """POST /api/v1/uploads keeps a .pt/.bin (torch's zip or legacy header checked); only an embedding
    import job reads it (weights-only), any other use of the upload is refused in one line."""
    vectors = _vectors(14)
    torch.save(embedding_dict(vectors, "zkjob"), tmp_path / "zkjob.bin", _use_new_zipfile_serialization=False)
    for filename, data in (("zkjob.pt", a1111_pt(tmp_path / "zkjob.pt", vectors).read_bytes()),
                           ("zkjob.bin", (tmp_path / "zkjob.bin").read_bytes())):  # fmt: skip
        upload = client.post("/api/v1/uploads", files={"file": (filename, data)})
        assert upload.status_code == 200, upload.text
        name = upload.json()["upload"]
        lora = client.post("/api/v1/jobs/import", json={"what": "lora", "name": "zkjob", "uploads": [name]})
        assert lora.status_code == 400 and "only read by an embedding import" in lora.text, lora.text
        init = client.post("/api/v1/jobs/generate", json={"prompt": "red", "init_image": name})
        assert init.status_code == 400 and "only read by an embedding import" in init.text, init.text
        stem = f"zkjob{Path(filename).suffix[1:]}"
        job = client.post("/api/v1/jobs/import", json={"what": "embedding", "name": stem, "uploads": [name]})
        assert job.status_code == 200, job.text
        done = studio.wait_job(job.json()["id"], timeout=60)
        assert done.state == "succeeded", done.error
        tensors, _ = _saved(studio.workspace.embeddings / f"{stem}.safetensors")
        assert torch.equal(tensors["emb_params"], vectors)
    script = client.post("/api/v1/uploads", files={"file": ("x.bin", b"#!/bin/sh\necho hi\n")})
    assert script.status_code == 400 and "not a PyTorch .bin file" in script.text
    assert not list(studio.uploads_dir.iterdir())  # the imports removed their uploads


def test_a_deflated_pt_that_unpacks_past_the_limit_or_too_many_vectors_is_refused(workspace, tmp_path):
    """torch's zip reader inflates a deflated entry: a 200 KB file could ask for 200 MB (a 64 MB upload,
    for gigabytes). The unpacked size is checked before torch reads it, and the vector count after."""
    import zipfile

    from lorastudio.adapters import embeddings as adapter
    from lorastudio.errors import LorastudioError
    from lorastudio.service.embeddings import import_embedding

    plain = a1111_pt(tmp_path / "many.pt", torch.zeros(adapter.MAX_EMBEDDING_VECTORS + 1, 32), name="many")
    with pytest.raises(LorastudioError, match=r"^many.pt: 1001 vectors, more than any prompt holds"):
        import_embedding(workspace, plain)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info.filename))
        out.writestr("bomb/data/9", b"\0" * (adapter.MAX_EMBEDDING_UNPACKED_BYTES + 1))
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(LorastudioError, match=r"^bomb.pt: unpacks to 64 MB, far too large for an embedding"):
        import_embedding(workspace, bomb)
