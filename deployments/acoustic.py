"""``SambertAcoustic`` deployment: :class:`AcousticInput` → mel (batched) or a stream of mel chunks."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from ray import serve

from deployments.common import BatchSettings, TorchWorker, replica_threads, route_logs_to_serve, timed_batch
from deployments.metrics import StageMetrics
from engine.messages import AcousticInput, AcousticOutput, MelChunk
from engine.modeldir import load_model_dir
from engine.sambert import AcousticModel
from engine.stages import mel_chunks

__all__ = ["SambertAcoustic"]

log = logging.getLogger("tts.acoustic")
_END = object()


@serve.deployment(name="SambertAcoustic", max_ongoing_requests=8, max_queued_requests=32)
class SambertAcoustic:
    """Owns one :class:`engine.sambert.AcousticModel` per voice; torch runs on a dedicated thread."""

    def __init__(self, model_dir: str, threads: int | None = None) -> None:
        route_logs_to_serve()
        directory = load_model_dir(model_dir)
        self.default_voice = next(iter(directory.voices))
        self.worker = TorchWorker(replica_threads(threads), "acoustic")
        self.models: dict[str, AcousticModel] = {
            name: self.worker.run_sync(AcousticModel.from_voice, spec, self.worker.threads)
            for name, spec in directory.voices.items()
        }
        self.metrics = StageMetrics("acoustic")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``max_batch_size`` / ``batch_wait_timeout_s`` from the Serve config without a restart."""
        cfg = BatchSettings.from_user_config(user_config)
        self._synthesize_batch.set_max_batch_size(cfg.max_batch_size)
        self._synthesize_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def _model(self, voice: str | None) -> AcousticModel:
        try:
            return self.models[voice or self.default_voice]
        except KeyError:
            raise ValueError(f"unknown voice {voice!r}") from None

    def _run_batch(self, reqs: list[tuple[str | None, AcousticInput]]) -> list[AcousticOutput]:
        out: list[AcousticOutput | None] = [None] * len(reqs)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (voice, _) in enumerate(reqs):
            groups[voice or self.default_voice].append(i)
        for voice, idx in groups.items():
            results = self.models[voice].synthesize([reqs[i][1] for i in idx])
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return [o for o in out if o is not None]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def _synthesize_batch(self, reqs: list[tuple[str | None, AcousticInput]]) -> list[AcousticOutput]:
        return await timed_batch(self.worker, self.metrics, "synthesize_batch", self._run_batch, reqs)

    async def synthesize(self, voice: str | None, inp: AcousticInput) -> AcousticOutput:
        """Whole-utterance mel, durations and pitch (dynamically batched with concurrent callers)."""
        self._model(voice)
        return await self._synthesize_batch((voice, inp))

    async def stream(
        self,
        voice: str | None,
        inp: AcousticInput,
        chunk_frames: int = 16,
        max_chunk_frames: int | None = None,
    ) -> AsyncGenerator[MelChunk, None]:
        """Mel chunks straight from the AR decoder; the first item carries durations, pitch and frame count.

        Chunks are ``chunk_frames`` long, doubling up to ``max_chunk_frames`` when given. Each decoder step
        runs on the torch thread; cancelling the caller stops the loop between chunks.
        """
        model = self._model(voice)
        start = time.perf_counter()
        stream = await self.worker.run(model.stream, inp, chunk_frames, max_chunk_frames)
        chunks = mel_chunks(stream)
        while True:
            chunk = await self.worker.run(next, chunks, _END)
            if chunk is _END:
                break
            yield chunk
        self.metrics.observe("stream", time.perf_counter() - start)

    async def check_health(self) -> None:
        """A real tiny inference (two tokens) on the default voice."""
        ids = np.zeros((2, 6), dtype=np.int64)
        res = await self.worker.run(self._run_batch, [(None, AcousticInput(ids=ids))])
        if res[0].mel.ndim != 2 or res[0].mel.shape[1] != 80:
            raise RuntimeError(f"acoustic health check produced mel of shape {res[0].mel.shape}")
