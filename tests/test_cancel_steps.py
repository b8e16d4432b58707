"""A cancel takes effect within one sampling step, and during a large VAE decode at the next tile."""

from __future__ import annotations

import pytest

from lorastudio.generate.config import GenerateConfig
from lorastudio.service.job_kinds import install
from lorastudio.service.jobs import HandlerRegistry, open_store
from lorastudio.service.jobs.worker import Worker


def test_tiles_are_stitched_exactly_where_the_decoder_is_local():
    """Stitching and blending put every pixel where a whole decode would (a local 'VAE': upsampling)."""
    import torch

    from lorastudio.generate.vae_tiling import decode_in_tiles

    def upsample(latents):
        return latents.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2) * 2 - 1

    latents = torch.randn(2, 4, 13, 21, generator=torch.Generator().manual_seed(0))
    tiles = []
    tiled = decode_in_tiles(upsample, latents, 8, tile=8, before_tile=lambda: tiles.append(1))
    assert tiled.shape == (2, 4, 104, 168)
    assert torch.allclose(tiled, upsample(latents), atol=1e-6)
    assert len(tiles) == 3 * 4  # stride 6: rows at 0, 6, 12; columns at 0, 6, 12, 18


def test_encoder_tiles_are_stitched_exactly_where_the_encoder_is_local():
    import torch

    from lorastudio.generate.vae_tiling import encode_in_tiles

    def pool(pixels):
        return torch.nn.functional.avg_pool2d(pixels, 8)

    pixels = torch.randn(1, 3, 104, 168, generator=torch.Generator().manual_seed(1))
    tiles = []
    tiled = encode_in_tiles(pool, pixels, 8, tile=8, before_tile=lambda: tiles.append(1))
    assert tiled.shape == (1, 3, 13, 21)
    assert torch.allclose(tiled, pool(pixels), atol=1e-6)
    assert len(tiles) == 3 * 4


def test_hires_upscale_stops_at_the_next_encoder_tile(sd15, monkeypatch, one_torch_thread):
    from lorastudio.generate import pipeline
    from lorastudio.generate.conditioning import PromptEncoder

    monkeypatch.setattr(pipeline, "TILED_DECODE_MIN_PIXELS", 64 * 64)  # tile only the 128 px hires image
    monkeypatch.setattr(pipeline, "TILE_LATENT", 4)
    encoded_tiles = []
    hook = sd15.vae.encoder.register_forward_hook(lambda module, args, out: encoded_tiles.append(1))
    try:
        cfg = GenerateConfig(
            model="tiny-sd15", prompt="red", steps=2, width=64, height=64, seed=1, hires_scale=2.0, hires_steps=2,
            hires_upscaler="Lanczos",
        )
        plan = pipeline.build_plan(cfg, sd15, cfg.prompt, cfg.negative_prompt)
        assert len(pipeline.generate_images(sd15, cfg, plan, PromptEncoder(sd15))) == 1
        assert len(encoded_tiles) == 6 * 6  # 128 px = 16 latents; tile 4, stride 3: 0, 3, ..., 15
        encoded_tiles.clear()
        stopped = pipeline.generate_images(
            sd15, cfg, plan, PromptEncoder(sd15), should_stop=lambda: bool(encoded_tiles)
        )
    finally:
        hook.remove()
    # the image as far as it got (A1111's interrupt): the first pass at its own size
    assert [i.image.size for i in stopped] == [(64, 64)] and len(encoded_tiles) == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_cancel_requested_during_step_k_stops_the_job_before_step_k_plus_2(
    tiny_workspace,
    queue_url,  # noqa: F811
    monkeypatch,
):
    from lorastudio.generate.pipeline import _Sampler

    k = 3
    config = GenerateConfig(model="tiny-sd15", prompt="red", steps=40, width=64, height=64, seed=1)
    with open_store(queue_url, tiny_workspace) as store, open_store(queue_url, tiny_workspace) as api:
        job = store.enqueue("generate", {"config": config.model_dump(mode="json")})
        steps_run = []
        real_predict = _Sampler._predict

        def predict_and_cancel_at_k(self, *args, **kwargs):
            steps_run.append(len(steps_run) + 1)
            if len(steps_run) == k:
                api.cancel(job.id)  # as the API would, from its own connection, during step k
            return real_predict(self, *args, **kwargs)

        monkeypatch.setattr(_Sampler, "_predict", predict_and_cancel_at_k)
        Worker(store, tiny_workspace, worker_id="w", registry=install(HandlerRegistry())).run(stop_when_idle=True)
        done = store.get(job.id)
        assert done.state == "cancelled"
    assert k <= len(steps_run) < k + 2, steps_run
    # The image as far as it got is the cancelled job's result, as A1111's interrupt answers it
    assert done.result["seeds"] == [1] and len(done.result["infotexts"]) == 1
    assert (tiny_workspace.outputs / job.id / done.result["images"][0]).is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_worker_stop_during_sampling_keeps_nothing_and_the_job_runs_again(tiny_workspace, queue_url, monkeypatch):  # noqa: F811
    """A cancel keeps the batch it stops (A1111's interrupt); a worker that stops hands the job
    back to run again whole, so its half-sampled batch is neither saved nor added to the library."""
    from lorastudio.generate.pipeline import _Sampler

    config = GenerateConfig(model="tiny-sd15", prompt="red", steps=40, width=64, height=64, seed=1)
    with open_store(queue_url, tiny_workspace) as store:
        job = store.enqueue("generate", {"config": config.model_dump(mode="json")})
        worker = Worker(store, tiny_workspace, worker_id="w", registry=install(HandlerRegistry()))
        real_predict, calls = _Sampler._predict, []

        def predict_and_stop_the_worker(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                worker.stop()
            return real_predict(self, *args, **kwargs)

        monkeypatch.setattr(_Sampler, "_predict", predict_and_stop_the_worker)
        worker.run(stop_when_idle=True)
        assert store.get(job.id).state == "queued" and len(calls) < 6
    folder = tiny_workspace.outputs / job.id
    assert not (folder.is_dir() and list(folder.glob("*.png")))


def test_a_cancel_during_decode_stops_at_the_next_tile(sd15, monkeypatch, one_torch_thread):
    from lorastudio.generate import pipeline
    from lorastudio.generate.conditioning import PromptEncoder

    monkeypatch.setattr(pipeline, "TILED_DECODE_MIN_PIXELS", 0)  # tile even this small image
    monkeypatch.setattr(pipeline, "TILE_LATENT", 4)  # 64 px -> 8x8 latents -> 9 tiles
    decoded_tiles = []
    hook = sd15.vae.decoder.register_forward_hook(lambda module, args, out: decoded_tiles.append(1))
    try:
        cfg = GenerateConfig(model="tiny-sd15", prompt="red", steps=3, width=64, height=64, seed=1)
        plan = pipeline.build_plan(cfg, sd15, cfg.prompt, cfg.negative_prompt)
        whole = pipeline.generate_images(sd15, cfg, plan, PromptEncoder(sd15))
        assert len(whole) == 1 and len(decoded_tiles) == 9  # the tiled decode ran to the end

        decoded_tiles.clear()
        # the cancel arrives while the first tile decodes
        stopped = pipeline.generate_images(
            sd15, cfg, plan, PromptEncoder(sd15), should_stop=lambda: bool(decoded_tiles)
        )
    finally:
        hook.remove()
    assert stopped == [] and len(decoded_tiles) == 1


# --- /skip: end the current batch where it got to, go on with the next --------------------------


def test_skip_is_counted_for_running_jobs_only(queue_url, workspace):  # noqa: F811
    with open_store(queue_url, workspace) as store:
        queued = store.enqueue("sleep")
        running = store.enqueue("sleep")
        store.claim("w")  # the oldest: `queued` runs now
        assert store.skip(queued.id) and store.skip(queued.id)
        assert not store.skip(running.id)  # still queued: nothing to skip
        assert (store.skips_requested(queued.id), store.skips_requested(running.id)) == (2, 0)
        events = [e for e in store.events(queued.id) if e.type == "skip_requested"]
        assert [e.data["skips"] for e in events] == [1, 2]


def test_an_old_studio_db_gains_the_skip_column(workspace):
    import sqlite3

    from lorastudio.service.jobs.sqlite_store import SCHEMA

    old_schema = SCHEMA.replace("    skip_requests INTEGER NOT NULL DEFAULT 0,\n", "")
    assert old_schema != SCHEMA
    conn = sqlite3.connect(workspace.db_path)
    conn.executescript(old_schema)
    conn.close()
    with open_store(None, workspace) as store:
        job = store.enqueue("sleep")
        store.claim("w")
        assert store.skip(job.id) and store.skips_requested(job.id) == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_skip_during_a_batch_ends_it_within_one_step_as_far_as_it_got_and_the_next_batches_run(
    tiny_workspace,
    queue_url,  # noqa: F811
    monkeypatch,
):
    from lorastudio.generate.pipeline import _Sampler

    k, steps = 2, 12
    config = GenerateConfig(
        model="tiny-sd15", prompt="red", steps=steps, width=64, height=64, seed=100, count=3
    )
    with open_store(queue_url, tiny_workspace) as store, open_store(queue_url, tiny_workspace) as api:
        job = store.enqueue("generate", {"config": config.model_dump(mode="json")})
        calls = []
        real_predict = _Sampler._predict

        def predict_and_skip_at_k(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == k:
                assert api.skip(job.id)  # as /sdapi/v1/skip would, during step k of the first batch
            return real_predict(self, *args, **kwargs)

        monkeypatch.setattr(_Sampler, "_predict", predict_and_skip_at_k)
        Worker(store, tiny_workspace, worker_id="w", registry=install(HandlerRegistry())).run(stop_when_idle=True)
        done = store.get(job.id)
    assert done.state == "succeeded", done.error
    # As A1111's skip: the first batch (seed 100) comes back decoded from where it got to
    assert done.result["seeds"] == [100, 101, 102]
    assert k <= len(calls) - 2 * steps < k + 2
    from PIL import Image

    folder = tiny_workspace.outputs / job.id
    first, full = (Image.open(folder / name).convert("RGB").tobytes() for name in done.result["images"][:2])
    assert first != full


# --- x/y/z grids: /interrupt stops the grid, /skip ends a cell; both keep the cell as far as it got --


def _grid_payload(steps: int) -> dict:
    from lorastudio.service.grid_request import AxisRequest, GridRequest

    config = GenerateConfig(model="tiny-sd15", prompt="red", steps=steps, width=64, height=64, seed=1)
    grid = GridRequest(x=AxisRequest(axis="seed", values="1,2,3"))
    return {"config": config.model_dump(mode="json"), "grid": grid.model_dump(mode="json")}


def _run_grid_and_call_at_step(workspace, monkeypatch, at_step: int, call) -> tuple:
    """Run one 3-cell grid job; `call(studio)` runs (as the A1111 route would) during sampling step `at_step`."""
    from lorastudio.generate.pipeline import _Sampler
    from lorastudio.service.studio import Studio

    studio = Studio(workspace)  # not started: the worker below runs the job
    try:
        job = studio.store.enqueue("grid", _grid_payload(steps=6))
        calls = []
        real_predict = _Sampler._predict

        def predict_and_call(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == at_step:
                assert call(studio) == [job.id]
            return real_predict(self, *args, **kwargs)

        monkeypatch.setattr(_Sampler, "_predict", predict_and_call)
        with open_store(None, workspace) as store:
            Worker(store, workspace, worker_id="w", registry=install(HandlerRegistry())).run(stop_when_idle=True)
        done = studio.get_job(job.id)
        return done, len(calls), studio.job_folder(done)
    finally:
        studio.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_interrupt_during_a_grid_cell_stops_within_one_step_and_keeps_the_cells_made(tiny_workspace, monkeypatch):
    from PIL import Image

    steps, k = 6, 2  # the interrupt comes during step k of the second cell
    done, calls, folder = _run_grid_and_call_at_step(tiny_workspace, monkeypatch, steps + k, lambda s: s.interrupt())
    assert done.state == "cancelled", done.error
    assert steps + k <= calls < steps + k + 2  # the second cell stopped at its next step, the third never ran
    assert done.result["seeds"] == [1, 2] and len(done.result["images"]) == 2  # the second as far as it got
    grid = Image.open(folder / done.result["grid"])
    assert grid.width >= 3 * 64  # the whole layout, the cells not rendered left blank
    assert (folder / done.result["images"][0]).is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_skip_during_a_grid_cell_ends_that_cell_and_the_next_cells_run(tiny_workspace, monkeypatch):
    steps, k = 6, 2  # the skip comes during step k of the first cell
    done, calls, _ = _run_grid_and_call_at_step(tiny_workspace, monkeypatch, k, lambda s: s.skip())
    assert done.state == "succeeded", done.error
    assert done.result["seeds"] == [1, 2, 3]  # the first cell (seed 1) as far as it got
    assert k <= calls - 2 * steps < k + 2


def test_progress_reports_interrupted_and_skipped_as_a1111_does(workspace):
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app
    from lorastudio.service.studio import Studio

    studio = Studio(workspace)  # no worker: this test plays the worker's part
    try:
        with TestClient(create_app(studio)) as client:

            def state() -> dict:
                return client.get("/sdapi/v1/progress").json()["state"]

            studio.store.enqueue("generate", {})
            job = studio.store.claim("w")
            assert (state()["interrupted"], state()["skipped"]) == (False, False)

            assert client.post("/sdapi/v1/skip").json() is None
            assert (state()["interrupted"], state()["skipped"]) == (False, True)
            studio.store.progress(job.id, job.attempt, 0.1, {"step": 1, "total": 10})
            assert state()["skipped"]  # still the batch that was asked to skip
            studio.store.emit(job.id, job.attempt, "skipped", {})  # the worker dropped it
            studio.store.progress(job.id, job.attempt, 0.2, {"step": 2, "total": 10})
            assert state()["skipped"] is False  # the next batch runs

            assert client.post("/sdapi/v1/interrupt").json() == {}
            assert (state()["interrupted"], state()["skipped"]) == (True, False)
    finally:
        studio.close()


def test_a_page_following_one_of_a_users_two_running_jobs_sees_that_ones_progress(workspace):
    """Two workers run two of Alice's generations: A1111's /progress view shows one, a page following
    the other sees the other's step (it showed "starting" for as long as it ran)."""
    from lorastudio.service.studio import Studio

    studio = Studio(workspace)  # no worker: this test plays two workers' part
    try:
        first = studio.store.enqueue("generate", {}, user="alice")
        second = studio.store.enqueue("generate", {}, user="alice")
        first, second = studio.store.claim("w1"), studio.store.claim("w2")
        studio.store.progress(first.id, first.attempt, 0.5, {"step": 5, "total": 10})
        studio.store.progress(second.id, second.attempt, 0.2, {"step": 2, "total": 10})
        shown = studio.progress_state("alice")["job"]  # one of them, as A1111's /progress shows one
        other, step = (second.id, 2) if shown == first.id else (first.id, 5)
        state = studio.progress_state("alice", other)
        assert (state["job"], state["step"], state["job_count"]) == (other, step, 2)
        assert studio.progress_state("alice", shown)["step"] == 7 - step  # and back (one progress cursor)
        assert studio.progress_state("bob", second.id)["job"] is None  # never another user's
    finally:
        studio.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_interrupt_in_the_first_grid_cell_ends_cancelled_with_that_cell_as_far_as_it_got(tiny_workspace, monkeypatch):
    done, calls, folder = _run_grid_and_call_at_step(tiny_workspace, monkeypatch, 2, lambda s: s.interrupt())
    assert done.state == "cancelled" and done.result["seeds"] == [1]  # not "failed: no cell was generated"
    assert calls < 4  # stopped at the next step of the first cell
    assert len(list(folder.glob("grid-*.png"))) == 1



def test_each_sampling_step_asks_the_database_once_for_cancel_and_skip(queue_url, workspace):  # noqa: F811
    from lorastudio.generate.pipeline import SkipBatch
    from lorastudio.service.job_steps import StepReporter
    from lorastudio.service.jobs.context import JobContext, WorkerInfo
    from lorastudio.service.jobs.store import JobCancelled

    with open_store(queue_url, workspace) as store:
        store.enqueue("generate")
        job = store.claim("w")
        reads = []

        class CountingStore:  # the worker's store, counting the reads a step makes
            def __getattr__(self, name):
                if name in ("stop_requests", "is_cancel_requested", "skips_requested"):
                    reads.append(name)
                return getattr(store, name)

        ctx = JobContext(job, CountingStore(), workspace, WorkerInfo(None, "w"), workspace.outputs / job.id)
        reporter = StepReporter(ctx, skippable=True)
        assert [reporter.should_stop() for _ in range(3)] == [False, False, False]
        assert store.skip(job.id)
        with pytest.raises(SkipBatch):
            reporter.should_stop()
        store.cancel(job.id)
        assert reporter.should_stop() and isinstance(reporter.stopped, JobCancelled)
    assert reads == ["stop_requests"] * 5


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2S a", "UniPC", "LCM"])
def test_a_stopped_batch_is_decoded_from_the_samplers_clean_estimate(sd15, name):
    """A1111 returns an interrupted batch from its denoised estimate: DPM-Solver and UniPC keep it
    as their last model output (their step output has none), so those come back clean too."""
    import torch

    from lorastudio.generate.pipeline import denoised_estimate
    from lorastudio.generate.samplers import make_scheduler, parse_sampler

    # epsilon prediction, so that a model "knowing the noise" is simply that noise
    scheduler = make_scheduler(parse_sampler(name), {**sd15.scheduler_config, "prediction_type": "epsilon"})
    scheduler.set_timesteps(6)
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    t = scheduler.timesteps[0]
    sample = scheduler.add_noise(clean, noise, t.reshape(1))  # what the first step sees
    kwargs = {} if name == "UniPC" else {"generator": g}
    stepped = scheduler.step(noise, t, sample, **kwargs)  # a model that knows the noise exactly
    estimate = denoised_estimate(scheduler, stepped, stepped.prev_sample)
    assert torch.allclose(estimate, clean, atol=2e-2), (estimate - clean).abs().max()
    assert not torch.allclose(stepped.prev_sample, clean, atol=2e-2)  # the sample itself is still noisy


def test_progress_counts_sampling_steps_for_second_order_samplers(sd15, one_torch_thread):
    """Heun and DPM2 evaluate the UNet twice for most steps: progress (and A1111's /progress
    job_no) counts each step once, ending at the request's total."""
    from lorastudio.generate import pipeline
    from lorastudio.generate.conditioning import PromptEncoder

    for sampler in ("Heun", "DPM2", "Euler"):
        cfg = GenerateConfig(model="tiny-sd15", prompt="red", steps=3, count=2, width=64, height=64, seed=1, sampler=sampler)
        plan = pipeline.build_plan(cfg, sd15, cfg.prompt, cfg.negative_prompt)
        seen: list = []
        pipeline.generate_images(sd15, cfg, plan, PromptEncoder(sd15), progress=lambda d, t, seen=seen: seen.append((d, t)))
        assert seen == [(d, 6) for d in range(1, 7)], sampler


def test_a_resumed_training_runs_eta_is_the_trainers_own(workspace):
    """Resumed at step 500 of 1000, ten steps done in 10 s after 20 s of loading: the job's elapsed
    time said 29 s were left; the trainer's estimate (its pace this session) says 490 s, and both
    /progress and the Train tab show that."""
    from lorastudio.service.studio import Studio
    from lorastudio.service.train_runs import training_eta

    studio = Studio(workspace)  # no worker: this test plays the worker's part
    try:
        studio.store.enqueue("train", {})
        job = studio.store.claim("w")
        studio.store.progress(job.id, job.attempt, 0.51, {"step": 510, "total": 1000, "eta_s": 490.0})
        assert studio.progress_state()["eta"] == 490.0
        running = studio.get_job(job.id)
        assert training_eta(running, reported=490.0) == 490.0
        assert training_eta(running, now=running.started_at + 30) < 60  # the elapsed-time guess it replaces
    finally:
        studio.close()
