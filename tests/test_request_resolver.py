"""service.requests: a request's names are checked before the job is queued, without a Studio."""

from __future__ import annotations

import pytest

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.names import NamePolicy
from lorastudio.service.requests import RequestResolver


def test_a_generation_gets_the_default_model_and_the_servers_device_never_the_clients(tiny_workspace):
    resolver = RequestResolver(tiny_workspace, NamePolicy(strict=True), device="cpu")
    cfg = resolver.generate(GenerateConfig(prompt="a cat"), default_model="tiny-sd15")
    assert (cfg.model, cfg.device) == ("tiny-sd15", "cpu")
    with pytest.raises(InvalidRequest, match="the server chooses the device"):
        resolver.generate(GenerateConfig(prompt="a cat", device="cuda:1"), default_model="tiny-sd15")
    with pytest.raises(LorastudioError, match="upload"):
        resolver.generate(GenerateConfig(prompt="a cat", init_image="../../etc/passwd"), "tiny-sd15")
    with pytest.raises(LorastudioError, match="nothere"):
        resolver.check_lora_tags("a cat <lora:nothere:1>")
