"""Property-based fuzzing of the whole API from its own OpenAPI schema: no request is a 500.

schemathesis generates valid and invalid requests for every operation (native `/api/v1`
and A1111 `/sdapi/v1`) and sends them in process (ASGI). The check is "not a server
error": whatever a client sends, the answer is a 2xx or a 4xx that names the problem.

The studio runs its worker with tiny limits, so a fuzzed generation that passes
validation costs a couple of 64x64 steps of the tiny model. Examples are derandomized
(the same requests on every run) and bounded so the test stays near a minute on 2 cores.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from lorastudio.api.app import create_app
from lorastudio.service.studio import Studio, StudioSettings

pytestmark = pytest.mark.slow  # hypothesis over the whole OpenAPI schema (~10 s)

EXAMPLES_PER_OPERATION = 8
# Valid generation requests get these fields, so that they pass the server's limits and
# names and really run (one 64x64 step); every other field stays fuzzed.
_CHEAP_A1111 = {"steps": 1, "width": 64, "height": 64, "batch_size": 1, "n_iter": 1, "enable_hr": False}
CHEAP = {
    "/api/v1/jobs/generate": {
        "model": "tiny-sd15",
        "steps": 1,
        "width": 64,
        "height": 64,
        "batch_size": 1,
        "count": 1,
        "hires_scale": 1.0,
        "hires_steps": 0,
        "hires_upscaler": "Latent",
        "sampler": "Euler",
        "schedule": None,
        "vae": None,
        "device": None,
        "init_image": None,
        "mask": None,
    },
    "/sdapi/v1/txt2img": {**_CHEAP_A1111, "sampler_name": "Euler", "scheduler": None},
    "/sdapi/v1/img2img": {**_CHEAP_A1111, "sampler_name": "Euler", "scheduler": None},
}


@pytest.fixture
def fuzz_studio(tiny_workspace, one_torch_thread):
    limits = StudioSettings(
        max_prompt_chars=200,
        max_image_pixels=64 * 64,
        max_output_pixels=128 * 128,
        max_images_per_request=1,
        max_steps=2,
        max_queued_per_user=5,
        max_upload_bytes=64 * 1024,
        max_weights_upload_bytes=64 * 1024,
    )
    studio = Studio(tiny_workspace, limits)
    studio.start()
    yield studio
    studio.close()


def fuzz_operation(operation, mode, statuses: Counter) -> None:
    """Up to EXAMPLES_PER_OPERATION requests of one kind for one operation; raises on a 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: report the first failing request
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        if mode == GenerationMode.POSITIVE and isinstance(case.body, dict) and operation.path in CHEAP:
            case.body.update(CHEAP[operation.path])
        response = case.call_and_validate(checks=[not_a_server_error])
        statuses[(operation.method.upper(), operation.path, response.status_code // 100)] += 1

    try:
        run()
    except Unsatisfiable:  # no invalid request exists for an operation without parameters
        assert mode == GenerationMode.NEGATIVE


def modes_for(operation) -> list[GenerationMode]:
    """Invalid requests only where something can be invalid (a body, query or header parameter):
    a lone string path parameter accepts every value, and searching for a wrong one takes long."""
    negatable = len(operation.body) or len(operation.query) or len(operation.headers)
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if negatable else [GenerationMode.POSITIVE]


def test_no_request_is_a_server_error(fuzz_studio):
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_studio))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50  # every route of both dialects is in the schema
    failures = []
    statuses: Counter = Counter()
    for operation in operations:
        for mode in modes_for(operation):
            try:
                fuzz_operation(operation, mode, statuses)
            except Exception as exc:  # collect them all: one run shows every broken route
                # hypothesis wraps what failed ("Inconsistent results ... (1 sub-exception)"): show it too
                inner = "; ".join(str(e)[:1500] for e in getattr(exc, "exceptions", ()))
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc} {inner}"[:4000])
    assert not failures, "\n\n".join(failures)
    by_class = Counter()
    for (_, _, klass), n in statuses.items():
        by_class[klass] += n
    # both kinds were exercised: requests that passed and requests refused
    assert by_class[2] > 30 and by_class[4] > 100
