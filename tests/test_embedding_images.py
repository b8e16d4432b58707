"""Embeddings in .webp/.jxl/.avif pictures, a picture's stored name as its word, and diffusers concept
files with several tokens: as A1111's `textual_inversion.load_from_file` reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from embedding_files import a1111_pt, chunk_png, embedding_dict, pixel_png, pixel_webp, plain_png

WIDTH = 32  # tiny-sd15's CLIP width
JXL_CODESTREAM = b"\xff\x0a" + bytes(range(64))  # a JPEG XL file's first bytes: what Pillow is shown


def _vectors(seed: int, count: int = 2) -> torch.Tensor:
    return torch.randn(count, WIDTH, generator=torch.Generator().manual_seed(seed)) * 3.0


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _listed(cli) -> dict[str, dict]:
    return {row["file"]: row for row in _json(cli("embeddings", "list", "--json"))["embeddings"]}


def _one_line_refusal(result, source, why: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and source.name in lines[0] and why in lines[0], result.output
    return lines[0]


def _gen(cli, prompt: str) -> np.ndarray:
    out = _json(cli("generate", "--model", "tiny-sd15", "--steps", "6", "--seed", "2", "--json", "--prompt", prompt))
    return np.asarray(Image.open(out["images"][0]).convert("RGB"), dtype=np.float32)


def _jxl_readable() -> bool:
    """Whether this Pillow opens JPEG XL (a plugin registers it on import)."""
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        pass
    Image.init()
    return ".jxl" in Image.registered_extensions()


# -- 1. .webp (and .avif, .jxl) pictures ---------------------------------------------------------------


def test_a_lossless_webp_embedding_is_listed_and_imported_and_a_lossy_or_plain_one_is_not(cli, workspace, tmp_path):
    vectors = _vectors(1)
    folder = workspace.embeddings
    pixel_webp(folder / "zkweb.webp", embedding_dict(vectors, "zkweb", step=700))
    plain_png(tmp_path / "p.png")
    Image.open(tmp_path / "p.png").save(folder / "zkweb.preview.webp", lossless=True)  # A1111's preview
    Image.open(tmp_path / "p.png").save(folder / "holiday.webp")  # a plain picture
    pixel_webp(folder / "zklossy.webp", embedding_dict(vectors, "zklossy"), lossless=False)
    # a PNG with the text chunk converted to WebP: WebP has no text chunk, Pillow keeps none
    Image.open(chunk_png(tmp_path / "zkchunk.png", embedding_dict(vectors, "zkchunk"))).save(
        folder / "zkchunk.webp", lossless=True
    )
    Image.open(tmp_path / "p.png").save(folder / "zkplain.avif")  # a plain AVIF picture
    Image.open(tmp_path / "p.png").save(folder / "zkweb.preview.avif")
    rows = _listed(cli)
    assert set(rows) == {"zkweb.webp"}
    assert (rows["zkweb.webp"]["name"], rows["zkweb.webp"]["vectors"], rows["zkweb.webp"]["shape"]) == ("zkweb", 2, WIDTH)
    assert rows["zkweb.webp"]["metadata"]["step"] == "700" and rows["zkweb.webp"]["error"] is None

    info = _json(cli("embeddings", "import", folder / "zkweb.webp", "--name", "zkwebcopy", "--json"))
    assert (info["name"], info["converted_from"], info["vectors"]) == ("zkwebcopy", "webp", [2])
    from lorastudio.adapters import load_embedding

    assert torch.allclose(load_embedding(folder / "zkwebcopy.safetensors").vectors[0], vectors)
    _one_line_refusal(cli("embeddings", "import", folder / "zklossy.webp"), folder / "zklossy.webp", "lossy copy")
    _one_line_refusal(cli("embeddings", "import", folder / "zkplain.avif"), folder / "zkplain.avif", "without embedding data")


def test_a_webp_embedding_in_the_folder_changes_the_image(cli, tiny_workspace, one_torch_thread):
    plain = _gen(cli, "zkpq zkweb picture")
    pixel_webp(tiny_workspace.embeddings / "zkweb.webp", embedding_dict(_vectors(2), "zkweb"))
    assert np.abs(_gen(cli, "zkpq zkweb picture") - plain).mean() > 0.1


@pytest.mark.skipif(_jxl_readable(), reason="this Pillow opens JPEG XL (a plugin is installed)")
def test_a_picture_format_pillow_cannot_open_is_listed_and_refused_with_what_to_install(
    cli, workspace, tmp_path, client
):
    (workspace.embeddings / "zkjxl.jxl").write_bytes(JXL_CODESTREAM)
    (workspace.embeddings / "zkjxl.preview.jxl").write_bytes(JXL_CODESTREAM)  # a preview: never listed
    rows = _listed(cli)
    assert set(rows) == {"zkjxl.jxl"} and rows["zkjxl.jxl"]["vectors"] is None
    assert "zkjxl.jxl: this Pillow cannot open JPEG XL (.jxl) pictures; install pillow-jxl-plugin" in rows[
        "zkjxl.jxl"
    ]["error"]
    source = tmp_path / "zkother.jxl"
    source.write_bytes(JXL_CODESTREAM)
    _one_line_refusal(cli("embeddings", "import", source), source, "install pillow-jxl-plugin")
    sent = client.post("/api/v1/embeddings", files={"file": ("zkother.jxl", JXL_CODESTREAM)})
    assert sent.status_code == 400 and "zkother.jxl: this Pillow cannot open JPEG XL" in sent.text, sent.text
    assert sorted(p.name for p in workspace.embeddings.iterdir()) == ["zkjxl.jxl", "zkjxl.preview.jxl"]


def test_an_upload_named_avif_or_jxl_must_be_one(client):
    for name in ("x.avif", "x.jxl"):
        sent = client.post("/api/v1/embeddings", files={"file": (name, b"#!/bin/sh\necho hi\n" * 4)})
        assert sent.status_code == 400 and f"its content is not a {name[2:]} file" in sent.text, sent.text


# -- 2. a picture answers to the name stored in it ----------------------------------------------------


def test_a_picture_in_the_folder_answers_to_its_stored_name(cli, client, workspace):
    from lorastudio.service.embedding_files import prompt_embedding_files

    folder = workspace.embeddings
    chunk_png(folder / "download (1).png", embedding_dict(_vectors(3), "zkstored"))
    pixel_webp(folder / "zkfile.webp", embedding_dict(_vectors(4, count=3), "zkinside"))
    pixel_png(folder / "zkblank.png", embedding_dict(_vectors(5), "  "))  # a blank name: the stem
    names = {row["file"]: row["name"] for row in _json(cli("embeddings", "list", "--json"))["embeddings"]}
    assert names == {"download (1).png": "zkstored", "zkfile.webp": "zkinside", "zkblank.png": "zkblank"}
    rest = {row["name"] for row in client.get("/api/v1/embeddings").json()["embeddings"]}
    assert rest == {"zkstored", "zkinside", "zkblank"}
    assert set(client.get("/sdapi/v1/embeddings").json()["loaded"]) == {"zkstored", "zkinside", "zkblank"}
    used = prompt_embedding_files(folder, ["a zkstored and zkinside, zkfile, download", "zkblank"])
    assert used == {"zkstored": folder / "download (1).png", "zkinside": folder / "zkfile.webp", "zkblank": folder / "zkblank.png"}
    assert cli("embeddings", "delete", "zkfile").exit_code == 2  # the file name is not its word
    assert cli("embeddings", "delete", "zkinside").exit_code == 0 and not (folder / "zkfile.webp").exists()


def test_two_files_claiming_one_word_list_one_answering_and_a_note_on_the_other(cli, client, workspace):
    from lorastudio.service.embedding_files import prompt_embedding_files

    folder = workspace.embeddings
    a1111_pt(folder / "zkclash.pt", _vectors(6))
    chunk_png(folder / "aaa.png", embedding_dict(_vectors(7), "zkclash"))  # sorted first, a picture
    chunk_png(folder / "b1.png", embedding_dict(_vectors(8), "zkdup"))
    pixel_png(folder / "b2.png", embedding_dict(_vectors(9), "zkdup"))
    rows = _listed(cli)
    assert rows["zkclash.pt"]["error"] is None and rows["zkclash.pt"]["shadowed_by"] is None
    note = rows["aaa.png"]["error"]
    assert rows["aaa.png"]["shadowed_by"] == "zkclash.pt" and note.startswith("aaa.png: answers to 'zkclash', as zkclash.pt")
    assert "import it with `--name`" in note and rows["aaa.png"]["vectors"] == 2  # read, but not used
    assert rows["b1.png"]["error"] is None and rows["b2.png"]["shadowed_by"] == "b1.png"
    assert "rename or delete" not in rows["b2.png"]["error"]
    assert prompt_embedding_files(folder, ["zkclash zkdup"]) == {"zkclash": folder / "zkclash.pt", "zkdup": folder / "b1.png"}
    a1111 = client.get("/sdapi/v1/embeddings").json()
    assert set(a1111["loaded"]) == {"zkclash", "zkdup"} and a1111["skipped"] == {}  # one entry per word
    # a stem clash is said the same way
    a1111_pt(folder / "zkclash.bin", _vectors(10))
    assert _listed(cli)["zkclash.bin"]["shadowed_by"] == "zkclash.pt"
    assert "rename or delete one of them" in _listed(cli)["zkclash.bin"]["error"]


def test_an_upload_or_import_takes_the_pictures_stored_name_and_renaming_a_picture_is_refused(cli, client, workspace, tmp_path):
    source = chunk_png(tmp_path / "zkpic (1).png", embedding_dict(_vectors(11), "zkupload"))
    sent = client.post("/api/v1/embeddings", files={"file": ("zkpic (1).png", source.read_bytes())})
    assert sent.status_code == 200 and sent.json()["name"] == "zkupload", sent.text
    named = client.post("/api/v1/embeddings", files={"file": ("x.png", source.read_bytes())}, data={"name": "zkgiven"})
    assert named.json()["name"] == "zkgiven"
    clash = chunk_png(workspace.embeddings / "zkfolder.png", embedding_dict(_vectors(12), "zkinfolder"))
    # an import's name is checked against the words, not the file stems
    taken = cli("embeddings", "import", a1111_pt(tmp_path / "zkinfolder.pt", _vectors(13)))
    assert taken.exit_code == 2 and "already in the library" in taken.output
    refused = cli("embeddings", "rename", "zkinfolder", "zknew")
    assert refused.exit_code == 2 and "--name zknew" in refused.output and clash.exists()


# -- 3. a diffusers concept file with several tokens ---------------------------------------------------


def test_a_concept_file_with_several_tokens_gets_the_multiple_terms_refusal(cli, workspace, tmp_path):
    torch.save({"<zk-cat>": _vectors(14)[0], "<zk-dog>": _vectors(15)[0]}, tmp_path / "learned_embeds.bin")
    save_file({"<zk-cat>": _vectors(14), "<zk-dog>": _vectors(15)}, tmp_path / "learned_embeds.safetensors")
    for source in (tmp_path / "learned_embeds.bin", tmp_path / "learned_embeds.safetensors"):
        line = _one_line_refusal(cli("embeddings", "import", source), source, "embedding file has multiple terms in it")
        assert "'<zk-cat>', '<zk-dog>'" in line and "save each token in a file of its own" in line
    # listed in embeddings/ with the same line (a .safetensors is listed from its header)
    save_file({"<zk-cat>": _vectors(14), "<zk-dog>": _vectors(15)}, workspace.embeddings / "zkconcepts.safetensors")
    assert "zkconcepts.safetensors: embedding file has multiple terms" in _listed(cli)["zkconcepts.safetensors"]["error"]
    # a LoRA given by mistake is no embedding at all, not "several terms"
    lora = {"lora_unet_x.lora_down.weight": torch.zeros(4, 320), "lora_unet_x.lora_up.weight": torch.zeros(320, 4)}
    save_file({**lora, "lora_unet_x.alpha": torch.tensor(4.0)}, tmp_path / "zklora.safetensors")
    _one_line_refusal(
        cli("embeddings", "import", tmp_path / "zklora.safetensors"), tmp_path / "zklora.safetensors", "not a textual-inversion"
    )
