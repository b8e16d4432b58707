"""The A1111 ControlNet dialect: `alwayson_scripts.controlnet` units, `/sdapi/v1/scripts`, `/controlnet/*`.

The parser is tested on its own (every alias and old spelling the extension reads); the routes
through the in-process app, with the submitted GenerateConfig captured where a real ControlNet
would be needed to generate; and the `webuiapi` client unchanged against the app.
"""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from lorastudio.api.a1111_controlnet import (
    WHERE,
    control_mode,
    controlnet_args,
    parse_unit,
    parse_units,
    resize_mode,
    store_units,
)
from lorastudio.errors import InvalidRequest
from lorastudio.service.controlnets import (
    check_model,
    check_module,
    check_unit_names,
    control_unit,
    list_annotators,
    list_controlnets,
)
from lorastudio.service.uploads import upload_path, uploads_dir

TINY = {"steps": 2, "width": 64, "height": 64}
CN_FILE = "control_v11p_sd15_canny.safetensors"


def encode(image: Image.Image, prefix: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return "data:image/png;base64," + data if prefix else data


def decode(b64: str) -> Image.Image:
    assert not b64.startswith("data:")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


RED = Image.new("RGB", (64, 48), (220, 20, 20))
HALF = Image.new("L", (64, 48), 0)
HALF.paste(255, (0, 0, 32, 48))


def unit(**fields):
    return {"enabled": True, "module": "none", "model": "control_v11p_sd15_canny", "image": encode(RED), **fields}


def controlnet(*units, key="controlnet"):
    return {key: {"args": list(units)}}


# --- the parser alone -------------------------------------------------------------------------


def test_the_script_key_is_case_insensitive_and_empty_args_mean_no_units():
    one = unit()
    assert controlnet_args(controlnet(one, key="ControlNet")) == [one]
    assert controlnet_args(controlnet(one, key=" CONTROLNET ")) == [one]
    assert controlnet_args({"ControlNet": {"args": []}}) == []
    assert controlnet_args({"controlnet": {}}) == [] and controlnet_args({}) == [] and controlnet_args(None) == []
    assert controlnet_args({"ADetailer": {"args": [True]}}) == []  # other scripts are not ControlNet's business
    with pytest.raises(InvalidRequest, match="given twice"):
        controlnet_args({"controlnet": {"args": []}, "ControlNet": {"args": []}})
    with pytest.raises(InvalidRequest, match=r"alwayson_scripts.controlnet.args: send a list"):
        controlnet_args({"controlnet": {"args": "unit"}})


def test_disabled_units_are_dropped_placeholders_skipped_and_enabled_is_the_default():
    units = parse_units(controlnet(unit(enabled=False), None, {"module": "none", "model": "m", "image": "x"}))
    assert [u.index for u in units] == [2]  # named by its place in args, as the extension numbers units
    assert units[0].what == f"{WHERE}[2]"
    assert parse_unit(0, unit(enabled="false")) is None and parse_unit(0, unit(enabled=0)) is None


def test_unknown_keys_are_ignored_and_fields_pass_through():
    parsed = parse_unit(
        0,
        unit(
            weight=0.6, guidance_start=0.1, guidance_end=0.8, pixel_perfect=True, hr_option="low res only",
            low_vram=True, some_future_key={"x": 1}, inpaint_crop_input_image=True,
        ),
    )
    assert parsed.fields == {
        "weight": 0.6,
        "guidance_start": 0.1,
        "guidance_end": 0.8,
        "pixel_perfect": True,
        "module": "none",
        "model": "control_v11p_sd15_canny",
        "hr_option": "Low res only",
    }
    assert parsed.image == encode(RED) and parsed.mask is None and parsed.save_detected_map is True


def test_legacy_field_aliases():
    parsed = parse_unit(0, {"input_image": "AAA", "guidance": 0.7, "lowvram": True, "mask_image": "BBB", "model": "m"})
    assert parsed.image == "AAA" and parsed.mask == "BBB" and parsed.fields["guidance_end"] == 0.7
    assert parse_unit(0, {"image": "AAA", "effective_region_mask": "CCC", "model": "m"}).mask == "CCC"
    for both in (
        {"input_image": "AAA", "image": "AAA"},
        {"guidance": 0.5, "guidance_end": 0.5},
        {"mask_image": "B", "mask": "B", "image": "A"},
        {"mask": "B", "effective_region_mask": "C", "image": "A"},
    ):
        with pytest.raises(InvalidRequest, match=rf"{WHERE}\[0\]: both"):
            parse_unit(0, {"model": "m", **both})


def test_guess_mode_becomes_controlnet_is_more_important_unless_a_control_mode_is_given():
    assert parse_unit(0, unit(guessmode=True)).fields["control_mode"] == "ControlNet is more important"
    assert parse_unit(0, unit(guess_mode=True)).fields["control_mode"] == "ControlNet is more important"
    assert "control_mode" not in parse_unit(0, unit(guessmode=False)).fields
    assert parse_unit(0, unit(guessmode=True, control_mode=1)).fields["control_mode"] == "My prompt is more important"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Just Resize", "Just Resize"),
        ("crop and resize", "Crop and Resize"),
        ("Resize and Fill", "Resize and Fill"),
        ("Inner Fit (Scale to Fit)", "Crop and Resize"),
        ("Scale to Fit (Inner Fit)", "Crop and Resize"),
        ("Envelope (Outer Fit)", "Resize and Fill"),
        ("Outer Fit (Shrink to Fit)", "Resize and Fill"),
        (0, "Just Resize"),
        (1, "Crop and Resize"),
        (2, "Resize and Fill"),
        (3, "Just Resize"),  # A1111's "Just Resize (latent upscale)"
        ("2", "Resize and Fill"),
    ],
)
def test_resize_modes_by_name_old_name_and_index(value, expected):
    assert resize_mode(value) == expected
    assert parse_unit(0, unit(resize_mode=value)).fields["resize_mode"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "Balanced"),
        (1, "My prompt is more important"),
        (2, "ControlNet is more important"),
        ("Balanced", "Balanced"),
        ("controlnet is more important", "ControlNet is more important"),
    ],
)
def test_control_modes_by_name_and_index(value, expected):
    assert control_mode(value) == expected


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"resize_mode": 7}, "resize_mode"),
        ({"resize_mode": "Stretch"}, "resize_mode"),
        ({"resize_mode": True}, "resize_mode"),
        ({"control_mode": 3}, "control_mode"),
        ({"control_mode": "Loud"}, "control_mode"),
        ({"hr_option": "Sometimes"}, "hr_option"),
        ({"enabled": "maybe"}, "enabled"),
        ({"advanced_weighting": [1.0] * 13}, "advanced_weighting"),
        ({"input_mode": "merge"}, "input_mode"),
        ({"ipadapter_input": "AAAA"}, "ipadapter_input"),
        ({"image": ["a", "b", "c"]}, "image"),
        ({"image": 12}, "image"),
        ({"image": None, "mask": encode(HALF)}, "mask"),
    ],
)
def test_bad_unit_fields_are_a_422_naming_the_unit_and_field(fields, where):
    with pytest.raises(InvalidRequest, match=rf"^{WHERE}\[1\]\.{where}:"):
        parse_unit(1, unit(**fields))


def test_defaults_of_minus_one_and_the_image_forms():
    parsed = parse_unit(0, unit(processor_res=-1, threshold_a=-1, threshold_b=100))
    assert "processor_res" not in parsed.fields and "threshold_a" not in parsed.fields
    assert parsed.fields["threshold_b"] == 100
    assert parse_unit(0, unit(processor_res=768)).fields["processor_res"] == 768
    prefixed = encode(RED, prefix=True)
    for image, mask, expected in (
        (prefixed, None, (prefixed, None)),
        ({"image": "AAA", "mask": "BBB"}, None, ("AAA", "BBB")),
        (["AAA", "BBB"], None, ("AAA", "BBB")),
        ([{"image": "AAA", "mask": None}], None, ("AAA", None)),
        ("AAA", "BBB", ("AAA", "BBB")),
        ("", None, (None, None)),  # webuiapi sends "" for no image
    ):
        parsed = parse_unit(0, unit(image=image, mask=mask))
        assert (parsed.image, parsed.mask) == expected


def test_more_than_three_enabled_units_is_a_422_listing_them():
    args = [unit(), unit(enabled=False), unit(), unit(), unit()]
    with pytest.raises(InvalidRequest, match=r"4 enabled ControlNet units \(args\[0\], args\[2\], args\[3\], args\[4\]\)"):
        parse_units(controlnet(*args))
    assert len(parse_units(controlnet(*args[:4]))) == 3
    with pytest.raises(InvalidRequest, match=rf"{WHERE}\[0\]: a ControlNet unit is an object"):
        parse_units(controlnet("canny"))


# --- names and images against a workspace --------------------------------------------------------


@pytest.fixture
def cn_workspace(workspace):
    (workspace.controlnet / CN_FILE).write_bytes(b"\0" * 4096)
    return workspace


def test_unknown_module_and_model_are_422s_listing_the_valid_names(cn_workspace):
    title = list_controlnets(cn_workspace)[0]["title"]
    modules = ", ".join(row.name for row in list_annotators())
    with pytest.raises(InvalidRequest, match=rf"^u\.module: preprocessor 'warp' is not available; use one of: {re.escape(modules)}"):
        check_module("warp", "u.module")
    assert check_module("None").name == "none" and check_module(None).name == "none"
    with pytest.raises(InvalidRequest, match=rf"^u\.model: ControlNet 'depth' not found in controlnet/; use one of: {re.escape(title)}"):
        check_model(cn_workspace, "depth", "u.model")
    for none in ("None", "", None):
        with pytest.raises(InvalidRequest, match=rf"no ControlNet model chosen; use one of: {re.escape(title)}"):
            check_model(cn_workspace, none, "u.model")
    assert check_model(cn_workspace, title) == check_model(cn_workspace, "control_v11p_sd15_canny")
    unit_ = check_unit_names(cn_workspace, control_unit({"module": "NONE", "model": title, "threshold_a": 64}))
    assert unit_.module == "none" and unit_.threshold_a is None  # "none" has no threshold: 64 means nothing


def test_an_empty_controlnet_folder_says_where_to_put_files(workspace):
    with pytest.raises(InvalidRequest, match=r"controlnet/ holds no ControlNet yet; copy a .safetensors"):
        check_model(workspace, "canny")


def test_store_units_checks_everything_and_leaves_no_upload_when_refused(cn_workspace):
    ws = cn_workspace

    def refused(fields, match, img2img=False):
        with pytest.raises(InvalidRequest, match=match):
            store_units(ws, parse_units(controlnet(unit(), unit(**fields))), img2img=img2img)
        assert list(uploads_dir(ws).iterdir()) == []

    refused({"image": ""}, rf"^{WHERE}\[1\]\.image: a txt2img ControlNet unit needs an image")
    refused({"image": "not an image!"}, rf"^{WHERE}\[1\]\.image:")
    refused({"image": encode(RED), "mask": encode(HALF.resize((32, 32)))}, rf"^{WHERE}\[1\]\.mask: 32x32 differs from the image's 64x48")
    refused({"guidance_start": 0.9, "guidance_end": 0.2}, rf"^{WHERE}\[1\]: guidance_start 0.9 is after guidance_end 0.2")
    refused({"weight": 3}, rf"^{WHERE}\[1\]\.weight: Input should be less than or equal to 2")
    refused({"processor_res": 10}, rf"^{WHERE}\[1\]\.processor_res:")
    refused({"model": "depth"}, rf"^{WHERE}\[1\]\.model: ControlNet 'depth' not found")
    refused({"module": "warp"}, rf"^{WHERE}\[1\]\.module: preprocessor 'warp' is not available")
    units, stored = store_units(ws, parse_units(controlnet(unit(image=None))), img2img=True)
    assert units[0].image is None and stored == []  # img2img: the init image is the control image


def test_store_units_stores_the_image_and_mask_as_uploads(cn_workspace):
    units, stored = store_units(
        cn_workspace, parse_units(controlnet(unit(image={"image": encode(RED, True), "mask": encode(HALF)}))), img2img=False
    )
    image = Image.open(upload_path(cn_workspace, units[0].image))
    mask = Image.open(upload_path(cn_workspace, units[0].mask))
    assert image.mode == "RGB" and image.getpixel((5, 5)) == (220, 20, 20)
    assert mask.mode == "L" and mask.getpixel((5, 5)) == 255 and mask.getpixel((50, 5)) == 0
    assert sorted(stored) == sorted([units[0].image, units[0].mask])


# --- through the app ---------------------------------------------------------------------------


@pytest.fixture
def cn_studio(studio):
    (studio.workspace.controlnet / CN_FILE).write_bytes(b"\0" * 4096)
    return studio


@pytest.fixture
def captured(cn_studio, monkeypatch):
    """The GenerateConfig the route submits, with its unit images read back (no ControlNet runs)."""
    seen = []

    def capture(cfg, **_):
        images = [
            {k: Image.open(upload_path(cn_studio.workspace, getattr(u, k))).copy() if getattr(u, k) else None for k in ("image", "mask")}
            for u in cfg.controlnet
        ]
        seen.append((cfg, images))
        raise InvalidRequest("captured before the queue")

    monkeypatch.setattr(cn_studio, "submit_generate", capture)
    return seen


@pytest.fixture
def cn_client(cn_studio):
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app

    with TestClient(create_app(cn_studio)) as client:
        yield client


def _submitted(response, captured):
    assert response.status_code == 422 and response.json()["detail"] == "captured before the queue", response.text
    return captured[-1]


def test_txt2img_turns_units_into_the_generate_config(cn_client, captured):
    body = {
        **TINY,
        "prompt": "red",
        "alwayson_scripts": {
            "ControlNet": {
                "args": [
                    unit(
                        module="None", weight=0.5, resize_mode="Envelope (Outer Fit)", control_mode=2,
                        guidance=0.6, threshold_a=64, processor_res=-1, image=encode(RED, True),
                        mask_image=encode(HALF),
                    ),
                    {"enabled": False, "model": "nothing at all"},
                ]
            },
            "ADetailer": {"args": [False]},
        },
    }
    cfg, images = _submitted(cn_client.post("/sdapi/v1/txt2img", json=body), captured)
    (cu,) = cfg.controlnet
    assert (cu.module, cu.model, cu.weight, cu.guidance_end) == ("none", "control_v11p_sd15_canny", 0.5, 0.6)
    assert (cu.resize_mode, cu.control_mode, cu.processor_res, cu.threshold_a) == (
        "Resize and Fill", "ControlNet is more important", 512, None,
    )
    assert images[0]["image"].getpixel((1, 1)) == (220, 20, 20) and images[0]["mask"].getpixel((40, 1)) == 0
    assert list(uploads_dir(cn_client.app.state.studio.workspace).iterdir()) == []  # refused: nothing kept


def test_img2img_unit_without_an_image_uses_the_init_image(cn_client, captured):
    body = {**TINY, "init_images": [encode(RED)], "alwayson_scripts": controlnet(unit(image=""))}
    cfg, images = _submitted(cn_client.post("/sdapi/v1/img2img", json=body), captured)
    assert cfg.init_image and cfg.controlnet[0].image is None and images == [{"image": None, "mask": None}]


def test_refused_units_answer_422_naming_the_unit_and_keep_no_upload(cn_client, captured):
    title = list_controlnets(cn_client.app.state.studio.workspace)[0]["title"]
    cases = [
        (controlnet(unit(model="depth")), f"{WHERE}[0].model: ControlNet 'depth' not found in controlnet/; use one of: {title}"),
        (controlnet(unit(model="None")), f"{WHERE}[0].model: no ControlNet model chosen; use one of: {title}"),
        (controlnet(unit(module="warp")), f"{WHERE}[0].module: preprocessor 'warp' is not available; use one of: none"),
        (controlnet(unit(), unit(image="")), f"{WHERE}[1].image: a txt2img ControlNet unit needs an image"),
        (controlnet(unit(image="bm90IGFuIGltYWdl")), f"{WHERE}[0].image:"),
        (controlnet(*[unit()] * 4), f"{WHERE}: 4 enabled ControlNet units"),
        (controlnet(unit(guidance_start=0.5, guidance_end=0.1)), f"{WHERE}[0]: guidance_start 0.5 is after"),
        (controlnet(unit(mask=encode(HALF.resize((8, 8))))), f"{WHERE}[0].mask: 8x8 differs"),
    ]
    for scripts, detail in cases:
        for route, extra in (("txt2img", {}), ("img2img", {"init_images": [encode(RED)]})):
            if "needs an image" in detail and route == "img2img":
                continue
            response = cn_client.post(f"/sdapi/v1/{route}", json={**TINY, **extra, "alwayson_scripts": scripts})
            assert response.status_code == 422, (route, response.text)
            assert response.json()["detail"].startswith(detail), response.json()["detail"]
    assert captured == []
    assert list(uploads_dir(cn_client.app.state.studio.workspace).iterdir()) == []


def test_the_xyz_plot_takes_the_units_too(cn_client, monkeypatch):
    import lorastudio.service.grid as grid

    seen = []

    def capture(studio, cfg, request, **_):
        seen.append((cfg, request))
        raise InvalidRequest("captured before the queue")

    monkeypatch.setattr(grid, "submit_grid", capture)
    body = {
        **TINY,
        "script_name": "x/y/z plot",
        "script_args": [6, "3,7", None],
        "alwayson_scripts": controlnet(unit(weight=0.4)),
    }
    response = cn_client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422 and response.json()["detail"] == "captured before the queue"
    cfg, request = seen[0]
    assert request.x.axis == "cfg" and [u.weight for u in cfg.controlnet] == [0.4]
    assert list(uploads_dir(cn_client.app.state.studio.workspace).iterdir()) == []
    refused = cn_client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": controlnet(unit(image=""))})
    assert refused.status_code == 422 and refused.json()["detail"].startswith(f"{WHERE}[0].image:")


def test_scripts_list_controlnet_for_both_modes(cn_client):
    scripts = cn_client.get("/sdapi/v1/scripts").json()
    for mode in ("txt2img", "img2img"):
        assert {"controlnet", "controlnet m2m"} <= set(scripts[mode])
    assert "x/y/z plot" in scripts["txt2img"]
    rows = cn_client.get("/sdapi/v1/script-info").json()
    cn_rows = [r for r in rows if r["name"] == "controlnet"]
    assert sorted(r["is_img2img"] for r in cn_rows) == [False, True] and all(r["is_alwayson"] for r in cn_rows)
    refused = cn_client.post("/sdapi/v1/txt2img", json={**TINY, "script_name": "controlnet m2m"})
    assert refused.status_code == 400 and "scripts here: x/y/z plot" in refused.json()["detail"]


def test_controlnet_routes_answer_the_extensions_shapes(cn_client):
    title = list_controlnets(cn_client.app.state.studio.workspace)[0]["title"]
    assert cn_client.get("/controlnet/version").json() == {"version": 3}
    assert cn_client.get("/controlnet/model_list").json() == {"model_list": [title]}
    assert cn_client.get("/controlnet/model_list?update=true").json() == {"model_list": [title]}
    modules = cn_client.get("/controlnet/module_list?alias_names=false").json()
    assert set(modules) == {"module_list", "module_detail"} and modules["module_list"][0] == "none"
    assert set(modules["module_detail"]) == set(modules["module_list"])
    for detail in modules["module_detail"].values():
        assert set(detail) == {"model_free", "sliders"}
        assert all(set(s) == {"name", "value", "min", "max", "step"} for s in detail["sliders"])
    assert cn_client.get("/controlnet/module_list?alias_names=true").json()["module_list"] == modules["module_list"]
    assert cn_client.get("/controlnet/settings").json() == {"control_net_unit_count": 3}
    types = cn_client.get("/controlnet/control_types").json()["control_types"]["All"]
    assert types["model_list"] == ["None", title] and types["default_option"] == "none"


def test_detect_takes_both_image_keys_with_or_without_the_data_prefix(cn_client):
    for key in ("controlnet_input_images", "controlnet_images"):
        for prefix in (True, False):
            response = cn_client.post("/controlnet/detect", json={"controlnet_module": "none", key: [encode(RED, prefix)]})
            assert response.status_code == 200, response.text
            data = response.json()
            assert data["info"] == "Success" and len(data["images"]) == 1
            image = decode(data["images"][0])
            assert image.size == (64, 48) and image.convert("RGB").getpixel((3, 3)) == (220, 20, 20)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"controlnet_module": "warp", "controlnet_images": ["x"]}, "controlnet_module: preprocessor 'warp' is not available; use one of: none"),
        ({"controlnet_module": "none"}, "controlnet_input_images: no image given"),
        ({"controlnet_input_images": ["a"], "controlnet_images": ["b"]}, "controlnet_input_images and controlnet_images are both given"),
        ({"controlnet_images": ["bm90IGFuIGltYWdl"]}, "controlnet_input_images[0]:"),
        ({"controlnet_images": ["a"], "controlnet_masks": ["b"]}, "controlnet_masks: not supported"),
        ({"controlnet_images": ["a"], "controlnet_processor_res": 8}, "controlnet_processor_res: 8 is below 64"),
    ],
)
def test_detect_refuses_what_it_cannot_do(cn_client, body, detail):
    response = cn_client.post("/controlnet/detect", json=body)
    assert response.status_code == 422 and response.json()["detail"].startswith(detail), response.text


def webuiapi_client(client, monkeypatch):
    """webuiapi's client, unchanged, talking to the in-process app (its session is the test client)."""
    import webuiapi

    with monkeypatch.context() as patch:  # no request before the session is ours
        patch.setattr(webuiapi.WebUIApi, "check_extensions", lambda self: None)
        api = webuiapi.WebUIApi(host="127.0.0.1", port=7860)
    api.session = client
    api.check_extensions()  # reads /sdapi/v1/scripts
    return api


def test_the_webuiapi_client_sends_units_and_reads_the_lists(cn_client, captured, monkeypatch):
    import webuiapi

    api = webuiapi_client(cn_client, monkeypatch)
    assert api.has_controlnet  # it saw "controlnet m2m"
    title = list_controlnets(cn_client.app.state.studio.workspace)[0]["title"]
    assert api.controlnet_version() == 3 and api.controlnet_model_list() == [title]
    assert api.controlnet_module_list()[0] == "none"
    detected = api.controlnet_detect([RED], module="none")
    assert detected.info == "Success" and detected.image.convert("RGB").getpixel((0, 0)) == (220, 20, 20)

    cn_unit = webuiapi.ControlNetUnit(image=RED, mask=HALF, model=title, weight=0.7, guidance_end=0.5, control_mode=1)
    with pytest.raises(RuntimeError, match="captured before the queue"):
        api.txt2img(prompt="red", steps=2, width=64, height=64, controlnet_units=[cn_unit], alwayson_scripts={})
    cfg, images = captured[-1]
    (cu,) = cfg.controlnet
    assert (cu.model, cu.weight, cu.guidance_end, cu.control_mode, cu.resize_mode) == (
        title, 0.7, 0.5, "My prompt is more important", "Resize and Fill",
    )
    assert images[0]["image"].getpixel((0, 0)) == (220, 20, 20) and images[0]["mask"].getpixel((0, 0)) == 255
    with pytest.raises(RuntimeError, match="captured before the queue"):  # no units: `args: []` is fine
        api.txt2img(prompt="red", steps=2, width=64, height=64)
    assert captured[-1][0].controlnet == []


# --- with the preprocessors (generate.annotators.registry) ---------------------------------------


@pytest.fixture
def registry():
    return pytest.importorskip("lorastudio.generate.annotators.registry")


def test_module_list_shows_the_registrys_preprocessors_and_sliders(cn_client, registry):
    modules = cn_client.get("/controlnet/module_list").json()
    assert modules["module_list"] == [row.name for row in registry.list_annotators()]
    canny = modules["module_detail"]["canny"]
    assert [s["name"] for s in canny["sliders"]] == ["Preprocessor Resolution", "Canny Low Threshold", "Canny High Threshold"]
    assert canny["sliders"][1] == {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1.0}


def test_detect_canny_answers_an_edge_map_and_checks_its_thresholds(cn_client, registry):
    import numpy as np

    square = Image.new("RGB", (128, 128), (0, 0, 0))
    square.paste((255, 255, 255), (32, 32, 96, 96))
    body = {"controlnet_module": "canny", "controlnet_images": [encode(square, True)], "controlnet_processor_res": 128}
    response = cn_client.post("/controlnet/detect", json=body)
    assert response.status_code == 200, response.text
    edges = decode(response.json()["images"][0]).convert("L")
    assert set(np.unique(np.asarray(edges))) == {0, 255} and edges.getpixel((64, 64)) == 0 and edges.getpixel((10, 10)) == 0
    assert max(edges.getpixel((x, 64)) for x in range(29, 36)) == 255  # the square's left side
    refused = cn_client.post("/controlnet/detect", json={**body, "controlnet_threshold_a": 300})
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "controlnet.threshold_a: 300.0 is outside 'Canny Low Threshold' of 'canny' (1..255); send -1 for its default 100."
    )


def test_unit_modules_by_alias_and_thresholds_in_range(cn_workspace, registry):
    (u,) = store_units(cn_workspace, parse_units(controlnet(unit(module="INVERT", threshold_a=64))), img2img=False)[0]
    assert u.module == "invert (from white bg & black line)" and u.threshold_a is None
    (u,) = store_units(cn_workspace, parse_units(controlnet(unit(module="canny", threshold_a=64, threshold_b=-1))), img2img=False)[0]
    assert (u.module, u.threshold_a, u.threshold_b) == ("canny", 64.0, None)
    with pytest.raises(InvalidRequest, match=rf"^{re.escape(WHERE)}\[0\]\.threshold_b: 0.0 is outside 'Canny High Threshold'"):
        store_units(cn_workspace, parse_units(controlnet(unit(module="canny", threshold_b=0))), img2img=False)


# --- end to end, with a real (tiny) ControlNet ----------------------------------------------------


@pytest.fixture
def real_cn_client(studio, request):
    """The app with a tiny random ControlNet (made from the tiny UNet) in studio/controlnet."""
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app

    pytest.importorskip("lorastudio.generate.control")  # the sampling side (helper "controlnet")
    files = pytest.importorskip("controlnet_files")
    files.make_controlnet(request.getfixturevalue("sd15")).save_pretrained(studio.workspace.controlnet / "tiny-cn")
    with TestClient(create_app(studio)) as client:
        yield client


def test_a_webuiapi_unit_steers_a_real_generation(real_cn_client, monkeypatch):
    import numpy as np
    import webuiapi

    api = webuiapi_client(real_cn_client, monkeypatch)
    (title,) = api.controlnet_model_list()
    square = Image.new("RGB", (64, 64), "black")
    square.paste((255, 255, 255), (16, 16, 48, 48))
    args = {"prompt": "red", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler"}
    plain = api.txt2img(**args)
    units = [webuiapi.ControlNetUnit(image=square, model=title, module="none", weight=1.0)]
    # alwayson_scripts={}: webuiapi writes the units into its shared default dict otherwise, and every
    # later call of any client in this process (tests/test_hires_modes.py's) would send them again
    controlled = api.txt2img(**args, controlnet_units=units, alwayson_scripts={})
    assert controlled.image.size == (64, 64)
    difference = np.abs(np.asarray(controlled.image, np.float32) - np.asarray(plain.image, np.float32)).mean()
    assert difference > 1.0
    assert "ControlNet 0" in controlled.image.info["parameters"]
    assert controlled.info["extra_generation_params"]["ControlNet 0"].startswith("Module: none, Model: tiny-cn")
    # the unit's map follows the image, as the extension answers (webuiapi sends no save_detected_map)
    assert len(controlled.images) == 2 and np.array_equal(np.asarray(controlled.images[1]), np.asarray(square))
    body = {**args, "alwayson_scripts": {"controlnet": {"args": [
        {"image": encode(square), "model": title, "module": "none", "save_detected_map": False}]}}}  # fmt: skip
    assert len(real_cn_client.post("/sdapi/v1/txt2img", json=body).json()["images"]) == 1
    units = [webuiapi.ControlNetUnit(model="tiny-cn", module="none", weight=1.0)]  # img2img: the init image
    changed = api.img2img(
        images=[square], **args, denoising_strength=0.6, controlnet_units=units, alwayson_scripts={}
    )
    assert changed.image.size == (64, 64) and "ControlNet 0" in changed.image.info["parameters"]


def test_a_native_request_naming_an_unknown_controlnet_is_refused_with_the_listing_hint(cn_client):
    pytest.importorskip("lorastudio.service.control")  # the resolver checks unit models (helper "controlnet")
    body = {**TINY, "model": "tiny-sd15", "prompt": "x", "controlnet": [{"model": "nope", "module": "none"}]}
    response = cn_client.post("/api/v1/jobs/generate", json=body)
    assert response.status_code in (404, 422), response.text
    detail = response.json()["detail"]
    assert "'nope'" in detail and "GET /controlnet/model_list" in detail


def test_detect_answers_the_pose_keypoints_of_the_pose_preprocessors(cn_client, registry, monkeypatch):
    import lorastudio.service.annotate as annotate

    calls = []

    def fake_detect_map(ws, module, image, resolution, threshold_a, threshold_b, poses=None):
        calls.append((module, resolution))
        if module.startswith("openpose"):  # as the pose rows do; the others leave the list empty
            poses.append({"people": [], "canvas_width": image.width, "canvas_height": image.height})
        return image

    monkeypatch.setattr(annotate, "detect_map", fake_detect_map)
    body = {"controlnet_module": "openpose_full", "controlnet_input_images": [encode(RED)] * 2, "controlnet_processor_res": -1}
    data = cn_client.post("/controlnet/detect", json=body).json()
    assert calls == [("openpose_full", 512)] * 2 and len(data["images"]) == 2  # -1 = 512
    assert data["poses"] == [{"people": [], "canvas_width": 64, "canvas_height": 48}] * 2
    assert "poses" not in cn_client.post("/controlnet/detect", json={**body, "controlnet_module": "none"}).json()


def test_native_lists_of_controlnets_preprocessors_and_upscalers(cn_client, cn_studio):
    controlnets = cn_client.get("/api/v1/controlnets").json()["controlnets"]
    assert [row["title"] for row in controlnets] == cn_client.get("/controlnet/model_list").json()["model_list"]
    rows = {row["name"]: row for row in cn_client.get("/api/v1/preprocessors").json()["preprocessors"]}
    assert rows["canny"]["ready"] and rows["canny"]["sliders"]
    assert not rows["openpose"]["ready"] and "body_pose_model.pth" in rows["openpose"]["missing_weights"]
    upscalers = {row["name"] for row in cn_client.get("/api/v1/upscalers").json()["upscalers"]}
    assert {"Latent (antialiased)", "Lanczos", "None"} <= upscalers
