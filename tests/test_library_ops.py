"""Library operations are service functions the CLI and the API share (issue 13, WP3).

Deleting a model, LoRA or embedding removes the file and its studio.db row from either
front; what `/loras` and `/embeddings` list is exactly what a prompt can use; quota errors
are 429 with Retry-After from every route; `outputs list --json` is `GET /api/v1/outputs`.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from lorastudio.api.app import create_app
from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.library import Library
from lorastudio.service.studio import Studio, StudioSettings

_register()
runner = CliRunner()
TINY = {"steps": 1, "width": 64, "height": 64}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _cli_error(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return result.output


@pytest.fixture(scope="module")
def sd15_model(tiny_models_dir):
    from lorastudio.models.loading import load_model

    return load_model("tiny-sd15", tiny_models_dir, tiny_models_dir / ".cache")


def _lora_bytes(model, tmp_path, seed: int = 0) -> bytes:
    import torch

    from lorastudio.adapters import LoraFile, LoraModule, save_kohya

    g = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for path, module in model.unet.named_modules():
        if path.endswith(("attn2.to_k", "attn2.to_v")):
            down = torch.randn(4, module.in_features, generator=g) * 0.3
            up = torch.randn(module.out_features, 4, generator=g) * 0.3
            lora.add("unet", path, LoraModule(down, up, 2.0, "linear"))
    out = tmp_path / f"lora-{seed}.safetensors"
    save_kohya(lora, out, family=model.family, unet_config=model.unet.config)
    return out.read_bytes()


def _embedding(path, vectors: int = 2, width: int = 32):
    import torch

    from lorastudio.adapters import Embedding, save_embedding

    save_embedding(Embedding(path.stem, [torch.randn(vectors, width)]), path, "sd15")
    return path


# --- delete from the CLI: file and studio.db row -----------------------------------------------


def test_cli_lora_delete_removes_file_and_row_so_a_recopied_file_starts_clean(tiny_workspace, sd15_model, tmp_path):
    data = _lora_bytes(sd15_model, tmp_path)
    path = tiny_workspace.loras / "style.safetensors"
    path.write_bytes(data)
    Library(tiny_workspace).add_lora(
        "style", path, "sd15", "0" * 64, trigger="sks", base_model="tiny-sd15", info={"run": "r1", "step": 5}
    )
    listed = {row["name"]: row for row in _cli("lora", "list")["loras"]}
    assert listed["style"]["registered"] and listed["style"]["run"] == "r1"

    assert _cli("lora", "delete", "style") == {"name": "style", "deleted": True}
    assert not path.exists() and Library(tiny_workspace).loras() == []
    assert "style" not in {row["name"] for row in _cli("lora", "list")["loras"]}

    path.write_bytes(data)  # the same name copied in by hand: not the old run's LoRA
    row = {row["name"]: row for row in _cli("lora", "list")["loras"]}["style"]
    assert row["registered"] is False and row["run"] is None and row["trigger"] != "sks"
    assert "not found in loras/" in _cli_error("lora", "delete", "missing")
    assert "not found in loras/" in _cli_error("lora", "delete", "../style")


def test_cli_models_delete_removes_file_and_row(tiny_workspace):
    from lorastudio.service.models import list_models

    target = tiny_workspace.models / "tiny-sd15"
    assert target.is_symlink()
    list_models(tiny_workspace)  # records every model in studio.db
    assert Library(tiny_workspace).model("tiny-sd15") is not None
    assert _cli("models", "delete", "tiny-sd15") == {"name": "tiny-sd15", "deleted": True}
    assert not target.exists() and not target.is_symlink()
    assert Library(tiny_workspace).model("tiny-sd15") is None

    broken = tiny_workspace.models / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    list_models(tiny_workspace)
    assert _cli("models", "delete", "broken")["deleted"] and not broken.exists()
    assert "not found in models/" in _cli_error("models", "delete", "broken")


def test_models_delete_leaves_what_a_link_points_at(tiny_workspace, tiny_models_dir):
    from lorastudio.service.models import delete_model

    delete_model(tiny_workspace, "tiny-sdxl")
    assert (tiny_models_dir / "tiny-sdxl" / "model_index.json").is_file()


def test_cli_embeddings_list_and_delete(tiny_workspace):
    _embedding(tiny_workspace.embeddings / "sparkle.safetensors", vectors=3)
    rows = {row["name"]: row for row in _cli("embeddings", "list")["embeddings"]}
    assert rows["sparkle"]["vectors"] == 3 and rows["sparkle"]["shape"] == 32 and rows["sparkle"]["error"] is None
    assert _cli("embeddings", "delete", "sparkle") == {"name": "sparkle", "deleted": True}
    assert _cli("embeddings", "list") == {"embeddings": []}
    assert "not found in embeddings/" in _cli_error("embeddings", "delete", "sparkle")


def test_embedding_listing_reads_the_vectors_tensor_not_the_first_one(tiny_workspace):
    import torch
    from safetensors.torch import save_file

    from lorastudio.adapters import Embedding, save_embedding
    from lorastudio.service.embeddings import list_embeddings

    xl = Embedding("xl", [torch.randn(2, 768), torch.randn(2, 1280)])  # the header sorts clip_g first
    save_embedding(xl, tiny_workspace.embeddings / "xl.safetensors", "sdxl")
    a1111 = {"string_to_param.*": torch.randn(3, 768), "string_to_token.*": torch.tensor([265])}
    save_file(a1111, str(tiny_workspace.embeddings / "old.safetensors"))  # string_to_token sorts first
    rows = {row["name"]: (row["vectors"], row["shape"]) for row in list_embeddings(tiny_workspace)}
    assert rows == {"old": (3, 768), "xl": (2, 768)}
    # HCP-Diffusion's SDXL files: CLIP-L and CLIP-G side by side in one [n, 2048] matrix, as a .pt or
    # imported (`emb_params`): listed as SDXL files are, by CLIP-L's width, not as another family's 2048
    joined = torch.cat([torch.randn(4, 768), torch.randn(4, 1280)], dim=-1)
    torch.save({"string_to_param": {"*": joined}, "name": "hcp"}, tiny_workspace.embeddings / "hcp.pt")
    save_file({"emb_params": joined[:2].contiguous()}, str(tiny_workspace.embeddings / "hcpimported.safetensors"))
    rows = {row["name"]: (row["vectors"], row["shape"]) for row in list_embeddings(tiny_workspace)}
    assert (rows["hcp"], rows["hcpimported"]) == ((4, 768), (2, 768))


def test_api_lora_delete_removes_the_row_too(client, studio, sd15_model, tmp_path):
    path = studio.workspace.loras / "style.safetensors"
    path.write_bytes(_lora_bytes(sd15_model, tmp_path))
    Library(studio.workspace).add_lora("style", path, "sd15", "0" * 64, trigger="sks")
    assert client.delete("/api/v1/loras/style").json() == {"name": "style", "deleted": True}
    assert Library(studio.workspace).loras() == []


# --- what is listed is what a prompt can use ------------------------------------------------------


def test_every_listed_lora_is_found_by_its_tag_even_with_an_upper_case_suffix(tiny_workspace, sd15_model, tmp_path):
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import find_lora_file, run_generation
    from lorastudio.service.model_cache import ModelCache

    (tiny_workspace.loras / "loud.SAFETENSORS").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=1))
    (tiny_workspace.loras / "pickled.bin").write_bytes(b"\x80\x04K\x01.")
    (tiny_workspace.loras / "notes.txt").write_text("not a LoRA")
    studio = Studio(tiny_workspace, StudioSettings())
    with TestClient(create_app(studio)) as client:
        native = [row["name"] for row in client.get("/api/v1/loras").json()["loras"]]
        a1111 = [row["name"] for row in client.get("/sdapi/v1/loras").json()]
        assert native == a1111 == ["loud", "pickled"]
        assert client.get("/api/v1/loras/loud").json()["file"] == "loud.SAFETENSORS"
    studio.close()
    for name in native:
        assert find_lora_file(tiny_workspace, name).stem == name

    cache = ModelCache(tiny_workspace)
    plain = run_generation(tiny_workspace, GenerateConfig(model="tiny-sd15", prompt="red", seed=1, **TINY), cache)
    cfg = GenerateConfig(model="tiny-sd15", prompt="red <lora:loud:1>", seed=1, **TINY)
    with_lora = run_generation(tiny_workspace, cfg, cache)
    assert with_lora.loras and with_lora.loras[0]["name"] == "loud"
    assert with_lora.images[0].path.read_bytes() != plain.images[0].path.read_bytes()
    # a pickled LoRA is found, then refused for what it is (not "not found")
    pickled = GenerateConfig(model="tiny-sd15", prompt="red <lora:pickled:1>", **TINY)
    with pytest.raises(LorastudioError, match="pickles") as refused:
        run_generation(tiny_workspace, pickled, cache)
    assert not isinstance(refused.value, NotFoundError)


def test_loras_in_subfolders_and_by_their_alias_are_found_as_a1111_finds_them(tiny_workspace, sd15_model, tmp_path):
    """A1111 users keep LoRAs in subfolders of models/Lora and type what its cards insert, the
    training name (`ss_output_name`): `<lora:hero:1>` for loras/chars/hero.safetensors and
    `<lora:mystyle:1>` for loras/style1.safetensors. A name two files share as alias is no name;
    the folder's own file wins over a subfolder's; hidden folders and peft folders are not walked."""
    from safetensors.torch import load_file, save_file

    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import find_lora_file, run_generation
    from lorastudio.service.model_cache import ModelCache

    loras = tiny_workspace.loras
    (loras / "chars").mkdir()
    (loras / "chars" / "hero.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=2))
    (loras / "chars" / "style1.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=5))
    for name, alias, seed in (("style1", "mystyle", 3), ("twin-a", "same", 4), ("twin-b", "same", 4)):
        _lora_bytes(sd15_model, tmp_path, seed=seed)
        tensors = load_file(str(tmp_path / f"lora-{seed}.safetensors"))
        save_file(tensors, str(loras / f"{name}.safetensors"), metadata={"ss_output_name": alias})
    (loras / ".trash").mkdir()
    (loras / ".trash" / "gone.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=6))
    (loras / "peft-one").mkdir()
    (loras / "peft-one" / "adapter_config.json").write_text("{}")
    (loras / "peft-one" / "adapter_model.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=7))
    (loras / "chars" / "loop").symlink_to(loras, target_is_directory=True)  # a link back up: walked once
    # Links to the workspace, a folder above it or another workspace folder are never walked (a LoRA
    # name must not reach, or delete, models/); a shared folder outside the workspace is.
    (tiny_workspace.models / "base.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=8))
    (loras / "up").symlink_to(tiny_workspace.root, target_is_directory=True)
    (loras / "top").symlink_to(tiny_workspace.root.parent, target_is_directory=True)
    (loras / "models").symlink_to(tiny_workspace.models, target_is_directory=True)
    shared = tmp_path / "a1111" / "Lora"
    shared.mkdir(parents=True)
    (shared / "shared-one.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=9))
    (loras / "a1111").symlink_to(shared, target_is_directory=True)

    studio = Studio(tiny_workspace, StudioSettings())
    with TestClient(create_app(studio)) as client:
        rows = client.get("/api/v1/loras").json()["loras"]
        native = [row["name"] for row in rows]
        a1111 = {row["name"]: row["alias"] for row in client.get("/sdapi/v1/loras").json()}
    studio.close()
    # the subfolder's style1 is listed, saying why <lora:style1> does not reach it
    assert [row["error"] for row in rows if row["name"] == "style1"] == [
        None, "style1.safetensors: <lora:style1> uses style1.safetensors; rename this file to use it."
    ]
    assert native == ["style1", "twin-a", "twin-b", "shared-one", "hero", "style1"]
    assert a1111["hero"] == "hero" and a1111["twin-a"] == "same"
    assert find_lora_file(tiny_workspace, "hero") == loras / "chars" / "hero.safetensors"
    assert find_lora_file(tiny_workspace, "style1") == loras / "style1.safetensors"  # the folder's own
    assert find_lora_file(tiny_workspace, "mystyle") == loras / "style1.safetensors"
    for missing in ("same", "gone", "adapter_model", "chars/hero", "base"):
        with pytest.raises(NotFoundError):
            find_lora_file(tiny_workspace, missing)

    cache = ModelCache(tiny_workspace)
    by_file = run_generation(tiny_workspace, GenerateConfig(model="tiny-sd15", prompt="red <lora:style1:1>", seed=1, **TINY), cache)
    by_alias = run_generation(tiny_workspace, GenerateConfig(model="tiny-sd15", prompt="red <lora:mystyle:1>", seed=1, **TINY), cache)
    nested = run_generation(tiny_workspace, GenerateConfig(model="tiny-sd15", prompt="red <lora:hero:1>", seed=1, **TINY), cache)
    def pixels(image) -> bytes:
        return Image.open(image.path).convert("RGB").tobytes()

    assert pixels(by_alias.images[0]) == pixels(by_file.images[0]) != pixels(nested.images[0])
    assert "Lora hashes" in by_alias.images[0].infotext and "Lora hashes" in nested.images[0].infotext
    from lorastudio.service.loras import rename_lora

    rename_lora(tiny_workspace, "hero", "hero2")  # stays in its subfolder
    assert (loras / "chars" / "hero2.safetensors").is_file() and not (loras / "hero2.safetensors").exists()
    with pytest.raises(LorastudioError, match="already exists in .*chars"):
        rename_lora(tiny_workspace, "twin-a", "hero2")  # a name a subfolder's file holds is taken


def test_an_a1111_image_whose_lora_has_another_name_here_regenerates_with_it(tiny_workspace, sd15_model, tmp_path, monkeypatch):
    """The image says `<lora:mystyle_v2:0.8>` and `Lora hashes: "mystyle_v2: <hash>"`; this studio
    has that file as style1: the recipe names style1, as A1111's paste does. A tag the studio has
    by name whose file has another hash than the image's is the file with the image's hash where
    the studio has one (`kept` is style1's here), with a note; a hash it lacks stays as written."""
    from PIL import PngImagePlugin

    from lorastudio.adapters.hashing import lora_short_hash
    from lorastudio.service.recipes import read_recipe

    (tiny_workspace.loras / "style1.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=3))
    (tiny_workspace.loras / "kept.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed=4))
    short = lora_short_hash(tiny_workspace.loras / "style1.safetensors")
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "red <lora:mystyle_v2:0.8> <lora:kept:0.5> <lora:gone:1>\nNegative prompt: <lora:mystyle_v2:-0.2>\n"
        "Steps: 1, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Model: tiny-sd15, "
        f'Lora hashes: "mystyle_v2: {short}, kept: {short}, gone: 0123456789ab", Version: v1.10.1',
    )
    image = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(image, pnginfo=info)
    recipe = read_recipe(image, tiny_workspace)
    assert recipe.config.prompt == "red <lora:style1:0.8> <lora:style1:0.5> <lora:gone:1>"
    assert recipe.config.negative_prompt == "<lora:style1:-0.2>"
    renamed = [n.params for n in recipe.notes if n.key == "lora_renamed"]
    assert renamed == [{"old": "mystyle_v2", "new": "style1"}]  # said once, for both prompts
    changed = [(n.params["name"], n.params["file"]) for n in recipe.notes if n.key == "weights_found"]
    assert changed == [("kept", "style1")]

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr("lorastudio.adapters.hashing.lora_short_hash", no_hashing)  # kept by size and mtime
    assert read_recipe(image, tiny_workspace).config.prompt == recipe.config.prompt


def test_embeddings_listed_are_the_ones_applied_and_a_ckpt_is_neither(tiny_workspace):
    from lorastudio.service.embeddings import list_embeddings
    from lorastudio.service.generation import find_embedding_files

    _embedding(tiny_workspace.embeddings / "glow.safetensors")
    _embedding(tiny_workspace.embeddings / "shout.SAFETENSORS")
    (tiny_workspace.embeddings / "old.ckpt").write_bytes(b"\x80\x04K\x01.")
    (tiny_workspace.embeddings / "negatives").mkdir()  # A1111 walks the embeddings folder too
    _embedding(tiny_workspace.embeddings / "negatives" / "badhands.safetensors")
    listed = [row["name"] for row in list_embeddings(tiny_workspace)]
    assert listed == ["glow", "shout", "badhands"]
    used = find_embedding_files(tiny_workspace, ["glow shout old", "badhands"])
    assert sorted(used) == sorted(listed)
    _embedding(tiny_workspace.embeddings / "negatives" / "glow.safetensors")  # a name the folder's own file has
    assert find_embedding_files(tiny_workspace, ["glow"])["glow"] == tiny_workspace.embeddings / "glow.safetensors"


def test_an_embedding_for_another_family_is_skipped_as_a1111_does(tiny_workspace):
    """A second run with the same trigger on SDXL replaces `alice.safetensors` with clip_l/clip_g
    vectors; an SD1.5 prompt saying "alice" then failed. As A1111, such a file (or one of another
    width) is skipped and its word read as text: the picture is the one without the file."""
    import numpy as np
    import torch

    from lorastudio.adapters import Embedding, save_embedding
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation

    request = GenerateConfig(model="tiny-sd15", prompt="alice, red wide", seed=3, **TINY)
    plain = run_generation(tiny_workspace, request).images[0]
    save_embedding(Embedding("alice", [torch.randn(2, 32), torch.randn(2, 64)]), tiny_workspace.embeddings / "alice.safetensors", "sdxl")
    _embedding(tiny_workspace.embeddings / "wide.safetensors", width=48)
    skipped = run_generation(tiny_workspace, request).images[0]
    assert np.array_equal(np.asarray(Image.open(skipped.path)), np.asarray(Image.open(plain.path)))
    assert "TI hashes" not in skipped.infotext
    _embedding(tiny_workspace.embeddings / "red.safetensors")  # one that fits is still used
    used = run_generation(tiny_workspace, request).images[0]
    import hashlib

    # A1111's TI hash: the first 12 hex of the whole file's SHA-256 (not the tensor bytes' hash)
    short = hashlib.sha256((tiny_workspace.embeddings / "red.safetensors").read_bytes()).hexdigest()[:12]
    assert f'TI hashes: "red: {short}"' in used.infotext


def test_a1111_embeddings_route_reshapes_the_service_rows(client, studio):
    _embedding(studio.workspace.embeddings / "glow.safetensors", vectors=2)
    (studio.workspace.embeddings / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    body = client.get("/sdapi/v1/embeddings").json()
    assert body["loaded"]["glow"]["vectors"] == 2 and body["loaded"]["glow"]["shape"] == 32
    assert body["skipped"]["broken"]["vectors"] == 0 and body["skipped"]["broken"]["shape"] is None


# --- one 429 handler --------------------------------------------------------------------------------

ALICE = ("alice", "pw-a")


@pytest.fixture
def full_client(tiny_workspace):
    """Alice is at her quota of one queued job (no worker runs)."""
    studio = Studio(tiny_workspace, StudioSettings(max_queued_per_user=1))
    studio.submit("sleep", {"seconds": 0.1}, user="alice")
    with TestClient(create_app(studio, auth=":".join(ALICE))) as client:
        yield client, studio
    studio.close()


def _png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _assert_429(response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == "TooManyRequests"


def test_quota_is_429_with_retry_after_from_uploads_img2img_and_train(full_client):
    client, studio = full_client
    png = base64.b64decode(_png_b64())
    _assert_429(client.post("/api/v1/uploads", files={"file": ("a.png", png, "image/png")}, auth=ALICE))
    assert list(studio.uploads_dir.iterdir()) == []  # checked before the upload is stored
    img2img = {"prompt": "x", **TINY, "init_images": [_png_b64()]}
    _assert_429(client.post("/sdapi/v1/img2img", json=img2img, auth=ALICE))
    assert list(studio.uploads_dir.iterdir()) == []
    train = {"model": "tiny-sd15", "data": {"dir": "nothing"}}
    _assert_429(client.post("/api/v1/jobs/train", json=train, auth=ALICE))
    _assert_429(client.post("/api/v1/datasets", data={"name": "d"}, files={"file": ("a.png", png, "image/png")}, auth=ALICE))
    assert len(studio.list_jobs(user="alice")) == 1


# --- outputs: one list for both fronts ----------------------------------------------------------


def test_outputs_list_json_is_the_api_rows(tiny_workspace):
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation
    from lorastudio.service.model_cache import ModelCache

    studio = Studio(tiny_workspace, StudioSettings())  # first: it makes studio.db a queue database
    cfg = GenerateConfig(model="tiny-sd15", prompt="red", seed=4, count=2, **TINY)
    run_generation(tiny_workspace, cfg, ModelCache(tiny_workspace))
    with TestClient(create_app(studio)) as client:
        api = client.get("/api/v1/outputs").json()
        api_one = client.get("/api/v1/outputs?limit=1").json()
    studio.close()
    assert len(api["outputs"]) == 2
    assert _cli("outputs", "list") == api
    assert _cli("outputs", "list", "--limit", "1") == api_one
    text = runner.invoke(app, ["outputs", "list"])
    assert text.exit_code == 0 and api["outputs"][0]["id"] in text.stdout


def test_the_lora_listing_reads_each_files_header_once(tiny_workspace, sd15_model, tmp_path, monkeypatch):
    import safetensors

    from lorastudio.models import checkpoint
    from lorastudio.service.loras import list_lora_files

    for seed in (1, 2):
        (tiny_workspace.loras / f"style{seed}.safetensors").write_bytes(_lora_bytes(sd15_model, tmp_path, seed))
    real, reads = checkpoint.read_safetensors_header, []
    monkeypatch.setattr(checkpoint, "read_safetensors_header", lambda path: reads.append(path.name) or real(path))
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: reads.append("safe_open") or None)
    rows = list_lora_files(tiny_workspace)
    assert sorted(reads) == ["style1.safetensors", "style2.safetensors"]
    assert [(r["name"], r["library"]["trigger"], r["error"]) for r in rows] == [("style1", None, None), ("style2", None, None)]
    assert rows[0]["metadata"] and rows[0]["size_bytes"] > 0


def test_a_truncated_lora_is_listed_with_an_error_and_a_bad_upload_names_the_clients_file(client, studio, sd15_model, tmp_path):
    data = _lora_bytes(sd15_model, tmp_path)
    (studio.workspace.loras / "cut.safetensors").write_bytes(data[: len(data) // 2])  # header intact
    row = client.get("/api/v1/loras").json()["loras"][0]
    assert row["name"] == "cut" and "past the end of the file" in row["error"]
    bad = client.post("/api/v1/loras", files={"file": ("mine.safetensors", data[:100], "x")})
    assert bad.status_code == 400 and "upload 'mine.safetensors': not a readable .safetensors" in bad.json()["detail"]
