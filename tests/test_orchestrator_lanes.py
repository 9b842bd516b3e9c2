"""Vocoder lanes (engine.orchestrator): a chunk-pipelined causal unit vocoded by concurrent chains."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.messages import SynthesisRequest, VocodeChunk, VocodeChunkResult
from engine.orchestrator import Orchestrator, StageUnavailable, StreamSettings, acoustic_input, lane_bounds
from engine.synthesizer import LocalStages

TEXT = "第一句。第二句话。第三句话更长一些，还有更多的字。"


@pytest.mark.parametrize("frames", [0, 1, 63, 64, 100, 213, 302, 600, 1111])
@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lane_bounds_cover_the_unit_in_whole_pieces(frames: int, lanes: int) -> None:
    bounds = lane_bounds(frames, lanes, 64)
    assert bounds[0][0] == 0 and bounds[-1][1] == frames
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous, in order
    assert len(bounds) <= lanes
    if len(bounds) > 1:
        assert all(s % 64 == 0 and e - s >= 64 for s, e in bounds)
        sizes = [e - s for s, e in bounds]
        assert sizes[0] > sizes[-1]  # later lanes start later, so they get fewer frames


def test_lane_bounds_split_long_units_only() -> None:
    assert lane_bounds(100, 2, 64) == [(0, 100)]  # a second lane would have < 64 frames
    assert lane_bounds(302, 2, 64) == [(0, 192), (192, 302)]


class Recording:
    """LocalStages that record vocode_chunk calls and can fail one of them."""

    def __init__(self, inner: LocalStages, fail_at: int | None = None) -> None:
        self.inner = inner
        self.chunks: list[VocodeChunk] = []
        self.fail_at = fail_at
        self.items: list[list[int]] = []  # mel frames per acoustic stream item, per stream

    def acoustic_stream(self, voice: str | None, inp: Any, chunk_frames: int, max_chunk_frames: int) -> Any:
        gen = self.inner.acoustic_stream(voice, inp, chunk_frames, max_chunk_frames)
        items: list[int] = []
        self.items.append(items)

        class Recorded:
            async def __aiter__(self) -> Any:
                async for item in gen:
                    items.append(item.mel.shape[0])
                    yield item

            def cancel(self) -> None:
                gen.cancel()

        return Recorded()

    async def vocode_chunk(self, chunk: VocodeChunk) -> VocodeChunkResult:
        self.chunks.append(chunk)
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise StageUnavailable("replica died")
        return await self.inner.vocode_chunk(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def stages(tiny_model_dir: Path) -> LocalStages:
    return LocalStages(tiny_model_dir, threads=1)


def _audio(stages: Any, settings: StreamSettings) -> np.ndarray:
    return asyncio.run(Orchestrator(stages, settings).synthesize(SynthesisRequest(TEXT))).audio


@pytest.mark.parametrize("lanes", [2, 3])
def test_laned_units_equal_whole_units(stages: LocalStages, lanes: int) -> None:
    whole = _audio(stages, StreamSettings(pipeline_below=0))
    rec = Recording(stages)
    small = StreamSettings(pipeline_below=8, vocoder_lanes=lanes, chunk_frames=8, max_chunk_frames=8)
    laned = _audio(rec, small)
    assert laned.shape == whole.shape
    np.testing.assert_allclose(laned, whole, atol=1e-5)
    starts = [c for c in rec.chunks if c.state is None]
    units = len(asyncio.run(stages.units(SynthesisRequest(TEXT))))
    assert len(starts) > units  # at least one unit really ran more than one chain
    assert all(c.mel.shape[0] % 8 == 0 for c in rec.chunks if not c.final)  # whole pieces only
    # the mel comes as one piece (the first lane starts after it), then in items of two: fewer hops
    for items in rec.items:
        frames = [n for n in items if n]
        assert frames[0] == min(8, sum(frames)) and all(n <= 16 for n in frames)
        assert all(n == 16 for n in frames[1:-1])


def test_one_lane_is_the_single_stateful_chain(stages: LocalStages) -> None:
    rec = Recording(stages)
    units = len(asyncio.run(stages.units(SynthesisRequest(TEXT))))
    _audio(rec, StreamSettings(pipeline_below=8, vocoder_lanes=1, chunk_frames=8, max_chunk_frames=8))
    assert len([c for c in rec.chunks if c.state is None]) == units


def test_a_lost_lane_reruns_the_unit_whole(stages: LocalStages) -> None:
    whole = _audio(stages, StreamSettings(pipeline_below=0))
    rec = Recording(stages, fail_at=2)
    laned = _audio(rec, StreamSettings(pipeline_below=8, chunk_frames=8, max_chunk_frames=8))
    np.testing.assert_allclose(laned, whole, atol=1e-5)


def test_a_live_streams_chunks_say_when_they_are_due(stages: LocalStages) -> None:
    """The vocoder serves the chunk due soonest first (deployments/vocoder.py): a streamed request's first
    chunk is due now, each next one when the audio before it will have played out (never later); the later
    units and laned (non-streamed) units are due whenever (None)."""
    rec = Recording(stages)
    small = StreamSettings(pipeline_below=8, vocoder_lanes=2, chunk_frames=8, max_chunk_frames=8)
    orch = Orchestrator(rec, small)

    async def streamed() -> int:
        req = SynthesisRequest(TEXT)
        return sum([len(c) async for c in orch.stream(req, await orch.units(req))])

    assert asyncio.run(streamed()) > 0
    live = [c for c in rec.chunks if c.due_in_s is not None]
    assert live[0] is rec.chunks[0] and live[0].due_in_s == 0.0 and len(live) > 3
    info = asyncio.run(stages.info())
    played = 0.0
    for c in live:
        assert c.due_in_s is not None and c.due_in_s <= played + 1e-6, (c.due_in_s, played)
        played += c.mel.shape[0] * info["hop_length"] / info["sample_rate"]
    rec.chunks.clear()
    asyncio.run(orch.synthesize(SynthesisRequest(TEXT)))
    assert rec.chunks and all(c.due_in_s is None for c in rec.chunks)


class HoldingLastUnit:
    """LocalStages whose acoustic model holds the last (longest) unit until the test releases it."""

    def __init__(self, inner: LocalStages, longest: int) -> None:
        self.inner = inner
        self.longest = longest
        self.release = asyncio.Event()

    async def acoustic(self, voice: str | None, inp: Any) -> Any:
        if inp.ids.shape[0] == self.longest:
            await self.release.wait()
        return await self.inner.acoustic(voice, inp)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_streams_later_units_follow_one_by_one(stages: LocalStages) -> None:
    """Unit 2 of a streamed request reaches the listener while unit 3 is still being synthesised, and the
    whole stream equals the request synthesised at once."""
    req = SynthesisRequest(TEXT)
    units = asyncio.run(stages.units(req))
    assert len(units) == 3
    inputs = [acoustic_input(u) for u in units]
    longest = max(i.ids.shape[0] for i in inputs)
    assert [i.ids.shape[0] for i in inputs].count(longest) == 1 and inputs[2].ids.shape[0] == longest
    whole = asyncio.run(Orchestrator(stages, StreamSettings(pipeline_below=0)).synthesize(req))
    sr, hop = whole.sample_rate, int(asyncio.run(stages.info())["hop_length"])
    before_last = sum(r.frames * hop + round(r.pause_after_s * sr) for r in whole.units[:2])

    async def streamed() -> np.ndarray:
        held = HoldingLastUnit(stages, longest)
        orch = Orchestrator(held, StreamSettings(pipeline_below=0))
        got: list[np.ndarray] = []
        async for chunk in orch.stream(req, units):
            got.append(chunk)
            if sum(len(c) for c in got) >= before_last:
                held.release.set()  # only a stream that handed over unit 2 gets here while unit 3 waits
        return np.concatenate(got)

    audio = asyncio.run(asyncio.wait_for(streamed(), timeout=30))
    np.testing.assert_allclose(audio, whole.audio, atol=1e-5)
