"""One exit replica's queue without Ray: batches bounded by count and padded seconds, no
wait at an idle replica, expired and cancelled calls dropped before compute."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import tone
from emodistill.serve.predictor import ExitPredictor
from emodistill.serve.replica import UNHEALTHY_AFTER, ExitWorker


@pytest.fixture(scope="module")
def predictor(served_checkpoint):
    p = ExitPredictor(served_checkpoint, "exit_2")
    p.warmup()
    return p


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    return tone(seconds, seed=seed).astype(np.float32)


def run(coro):
    return asyncio.run(coro)


def test_a_call_at_an_idle_replica_runs_at_once_and_reports_its_replica(predictor):
    worker = ExitWorker(predictor, replica="r1")

    async def go():
        return await worker.predict(clip(1.0), left_ms=10_000)

    a = run(go())
    assert a.prediction.batch_size == 1 and a.queue_ms < 50 and a.compute_ms > 0
    assert (a.replica, a.depth, a.expired) == ("r1", 0, False)
    alone = predictor.predict([clip(1.0)])[0]
    np.testing.assert_allclose(a.prediction.probabilities, alone.probabilities, atol=1e-6)


def test_calls_arriving_during_a_batch_form_the_next_one_within_both_bounds(predictor):
    worker = ExitWorker(predictor, max_batch_size=8, max_batch_audio_s=6.0)
    worker.inject_fault("slow", delay_s=0.2, calls=1)  # the first batch runs long while the others arrive

    async def go():
        first = asyncio.create_task(worker.predict(clip(1.0), 10_000))
        await asyncio.sleep(0.05)
        later = [asyncio.create_task(worker.predict(clip(s, i), 10_000)) for i, s in enumerate([1.0, 1.0, 20.0, 1.5, 1.0])]
        return await first, await asyncio.gather(*later)

    first, later = run(go())
    assert first.prediction.batch_size == 1
    sizes = [a.prediction.batch_size for a in later]
    # the four short clips (padded 4 x 1.5 = 6 s) together, the 20 s clip alone
    assert sizes == [4, 4, 1, 4, 4], sizes
    assert worker.stats.largest_batch_audio_s == pytest.approx(20.0)  # a clip over the bound runs alone
    assert later[0].depth >= 0 and worker.depth == 0
    count_only = ExitWorker(predictor, max_batch_size=8, max_batch_audio_s=None)
    count_only.inject_fault("slow", delay_s=0.2, calls=1)
    worker = count_only
    _, later = run(go())
    assert [a.prediction.batch_size for a in later] == [5] * 5  # counted, not measured: the 1 s clips pay for 20 s


def test_calls_whose_deadline_passed_in_the_queue_are_not_computed(predictor):
    worker = ExitWorker(predictor, max_batch_size=1)
    worker.inject_fault("slow", delay_s=0.3, calls=1)

    async def go():
        first = asyncio.create_task(worker.predict(clip(1.0), 10_000))
        await asyncio.sleep(0.02)
        late = [asyncio.create_task(worker.predict(clip(1.0), left_ms=50)) for _ in range(3)]
        ok = asyncio.create_task(worker.predict(clip(1.0), left_ms=10_000))
        return await first, await asyncio.gather(*late), await ok

    first, late, ok = run(go())
    assert first.prediction is not None and ok.prediction is not None
    assert all(a.expired and a.prediction is None and a.queue_ms >= 50 for a in late)
    s = worker.stats
    assert (s.received, s.computed, s.expired, s.cancelled) == (5, 2, 3, 0)


def test_a_cancelled_call_leaves_the_queue_uncomputed(predictor):
    worker = ExitWorker(predictor, max_batch_size=1)
    worker.inject_fault("slow", delay_s=0.3, calls=1)

    async def go():
        first = asyncio.create_task(worker.predict(clip(1.0), 10_000))
        await asyncio.sleep(0.02)
        with pytest.raises(asyncio.TimeoutError):  # the caller gives up: wait_for cancels the call
            await asyncio.wait_for(worker.predict(clip(1.0), 10_000), 0.05)
        return await first

    run(go())
    s = worker.stats
    assert (s.received, s.computed, s.cancelled, worker.depth) == (2, 1, 1, 0)


def test_a_failing_model_fails_its_calls_and_then_the_health_check(predictor):
    worker = ExitWorker(predictor)
    worker.inject_fault("raise")

    async def go():
        return await worker.predict(clip(1.0), 10_000)

    for _ in range(UNHEALTHY_AFTER):
        with pytest.raises(RuntimeError, match="injected fault"):
            run(go())
    with pytest.raises(RuntimeError, match="batches failed"):
        worker.check_health()
    worker.inject_fault(None)
    worker.check_health()
    assert run(go()).prediction is not None and worker.stats.failed == UNHEALTHY_AFTER
    with pytest.raises(ValueError):
        worker.inject_fault("explode")


def test_block_outputs_resume_in_batches_per_start_block_and_in_float16(served_checkpoint, predictor):
    shallow = ExitWorker(ExitPredictor(served_checkpoint, "exit_1"), state_dtype="float16")
    deep = ExitWorker(ExitPredictor(served_checkpoint, "exit_4"))

    async def go():
        a = await shallow.predict(clip(1.2), 10_000, return_state=True)
        b = await shallow.predict(clip(1.2), 10_000, return_state=False)
        resumed = await deep.resume(a.prediction.state, 10_000)
        direct = await deep.predict(clip(1.2), 10_000)
        return a, b, resumed, direct

    a, b, resumed, direct = run(go())
    assert a.prediction.state.hidden.dtype == np.float16 and b.prediction.state is None
    assert a.prediction.state.seconds == pytest.approx(1.2, abs=0.03)
    np.testing.assert_allclose(resumed.prediction.probabilities, direct.prediction.probabilities, atol=2e-3)


def test_clips_travel_as_int16_only_when_that_is_lossless():
    import io

    import soundfile as sf
    from emodistill.serve.replica import from_wire, to_wire

    buf = io.BytesIO()
    sf.write(buf, clip(1.0), 16000, format="WAV")  # 16-bit PCM
    pcm, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")
    wire = to_wire(pcm)
    assert wire.dtype == np.int16 and np.array_equal(from_wire(wire), pcm)
    resampled = clip(1.0) * 0.5 + 1e-6  # not on the 16-bit grid
    assert to_wire(resampled) is resampled and from_wire(resampled) is resampled


def test_model_threads_can_yield_the_cpu(predictor):
    import os

    worker = ExitWorker(predictor, nice=3)

    async def go():
        answer = await worker.predict(clip(0.5), 10_000)
        (tid,) = worker._niced  # the executor's thread is alive while the loop runs
        return answer, os.getpriority(os.PRIO_PROCESS, tid)

    answer, nice = run(go())
    assert answer.prediction is not None and nice >= 3
