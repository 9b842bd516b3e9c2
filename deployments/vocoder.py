"""``HifiGanVocoder`` deployment: mel → waveform, dynamically batched.

Streaming keeps no state in the replica. Causal voices (the released 16 kHz ones): each chunk carries the
state the previous chunk returned (every layer's left context, a few hundred kB), so consecutive chunks of one
request may land on any replica, or be retried on another after a crash, and still equal whole-utterance
vocoding with no recomputation. Non-causal voices: the ingress sends a mel *window* (left context + new
frames + lookahead) and asks for the samples of the new frames only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray import serve

from deployments.common import BatchSettings, TorchWorker, replica_threads, route_logs_to_serve, timed_batch
from deployments.metrics import StageMetrics
from engine.hifigan import Vocoder
from engine.messages import VocodeChunk, VocodeChunkResult, VocodeRequest, VocoderInfo
from engine.modeldir import load_model_dir
from engine.stages import vocode_request_steps, vocoder_info
from engine.steps import Steps

__all__ = ["HifiGanVocoder"]

log = logging.getLogger("tts.vocoder")


@serve.deployment(name="HifiGanVocoder", max_ongoing_requests=8, max_queued_requests=32)
class HifiGanVocoder:
    """Owns one :class:`engine.hifigan.Vocoder` per voice; torch runs on a dedicated thread."""

    def __init__(self, model_dir: str, threads: int | None = None, precision: str = "fp32") -> None:
        route_logs_to_serve()
        directory = load_model_dir(model_dir)
        self.default_voice = next(iter(directory.voices))
        self.worker = TorchWorker(replica_threads(threads), "vocoder")
        self.models: dict[str, Vocoder] = {
            name: self.worker.run_sync(Vocoder.from_voice, spec, None, precision)
            for name, spec in directory.voices.items()
        }
        self.metrics = StageMetrics("vocoder")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``max_batch_size`` / ``batch_wait_timeout_s`` without a restart."""
        cfg = BatchSettings.from_user_config(user_config)
        self._vocode_batch.set_max_batch_size(cfg.max_batch_size)
        self._vocode_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def info(self) -> VocoderInfo:
        """Rate, hop, whether chunks can carry state, and the mel context a stateless window needs."""
        return vocoder_info(self.models, self.default_voice)

    def _batch_steps(self, reqs: list[VocodeRequest]) -> Steps[list[np.ndarray]]:
        # One by one: the convolutions are compute-bound on CPU, so a padded batch gains nothing and pays
        # for its padding (4 mels of 100-300 frames: 3.04 s batched vs 1.94 s one by one, 1 thread).
        out = []
        for r in reqs:
            out.append((yield from vocode_request_steps(self.models[r.voice or self.default_voice], r)))
        return out

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def _vocode_batch(self, reqs: list[VocodeRequest]) -> list[np.ndarray]:
        # steppable: a whole unit's mel (hundreds of ms of work) lets a stream's first chunk pass
        run = self._batch_steps
        return await timed_batch(self.worker, self.metrics, "vocode_batch", run, reqs, steppable=True)

    async def vocode(self, req: VocodeRequest) -> np.ndarray:
        """Waveform (float32, model rate) for a mel or a mel window."""
        if (req.voice or self.default_voice) not in self.models:
            raise ValueError(f"unknown voice {req.voice!r}")
        if req.mel.ndim != 2 or req.mel.shape[1] != 80:
            raise ValueError(f"mel must be [frames, 80], got {req.mel.shape}")
        return await self._vocode_batch(req)

    def _chunk_steps(self, reqs: list[VocodeChunk]) -> Steps[VocodeChunkResult]:
        (r,) = reqs
        model = self.models[r.voice or self.default_voice]
        audio, state = yield from model.vocode_continue_steps(r.mel, r.state, r.final)
        return VocodeChunkResult(audio, state)

    async def vocode_chunk(self, req: VocodeChunk) -> VocodeChunkResult:
        """Audio for the next frames of a causal utterance, plus the state to send with the next chunk."""
        voice = req.voice or self.default_voice
        if voice not in self.models:
            raise ValueError(f"unknown voice {req.voice!r}")
        if not self.models[voice].causal:
            raise ValueError(f"voice {voice!r} is not causal: stream it with mel windows (vocode)")
        if req.mel.ndim != 2 or req.mel.shape[1] != 80 or req.mel.shape[0] == 0:
            raise ValueError(f"mel must be [frames > 0, 80], got {req.mel.shape}")
        # Not batched: stacking equal-length chunks gains nothing on CPU, and each batch size multiplies the
        # shapes (and oneDNN primitives) the replica holds. Chunks queue by when their listener needs them
        # on the torch thread instead, and pause between residual blocks: a stream's first audio (due now)
        # or a stream about to run dry passes streams that are seconds ahead and whole units nobody listens
        # to yet, and waits at most one block (a few ms) of the chunk that is running.
        due = TorchWorker.due_in(req.due_in_s)
        metrics, run = self.metrics, self._chunk_steps
        return await timed_batch(self.worker, metrics, "vocode_chunk_batch", run, [req], due, True)

    async def check_health(self) -> None:
        """A real tiny inference: 4 mel frames through the default voice."""
        audio = await self.worker.run_steps(self._batch_steps, [VocodeRequest(np.zeros((4, 80), np.float32))])
        hop = self.models[self.default_voice].hop_length
        if audio[0].shape != (4 * hop,) or not np.isfinite(audio[0]).all():
            raise RuntimeError(f"vocoder health check produced {audio[0].shape}")
