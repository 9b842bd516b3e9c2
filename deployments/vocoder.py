"""``HifiGanVocoder`` deployment: mel → waveform, dynamically batched.

Streaming is stateless on this side: the ingress sends a mel *window* (left context + new frames + lookahead)
and asks for the samples of the new frames only, so consecutive chunks of one request may land on any replica
(and may be batched with other requests' chunks) while the result matches whole-utterance vocoding.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
from ray import serve

from deployments.common import BatchSettings, TorchWorker, replica_threads, route_logs_to_serve
from deployments.payloads import VocodeRequest
from engine.hifigan import Vocoder
from engine.modeldir import load_model_dir

__all__ = ["HifiGanVocoder"]

log = logging.getLogger("tts.vocoder")


@serve.deployment(name="HifiGanVocoder", max_ongoing_requests=8, max_queued_requests=32)
class HifiGanVocoder:
    """Owns one :class:`engine.hifigan.Vocoder` per voice; torch runs on a dedicated thread."""

    def __init__(self, model_dir: str, threads: int | None = None) -> None:
        route_logs_to_serve()
        directory = load_model_dir(model_dir)
        self.default_voice = next(iter(directory.voices))
        self.worker = TorchWorker(replica_threads(threads), "vocoder")
        self.models: dict[str, Vocoder] = {
            name: self.worker.run_sync(Vocoder.from_voice, spec) for name, spec in directory.voices.items()
        }
        from serve_app.metrics import StageMetrics

        self.metrics = StageMetrics("vocoder")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``max_batch_size`` / ``batch_wait_timeout_s`` without a restart."""
        cfg = BatchSettings.from_user_config(user_config)
        self._vocode_batch.set_max_batch_size(cfg.max_batch_size)
        self._vocode_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def info(self) -> dict[str, int]:
        """Rate, hop and the mel context a stateless streaming window needs to be exact."""
        model = self.models[self.default_voice]
        radius = int(model.model.receptive_radius_frames())
        causal = bool(model.causal)
        return {
            "sample_rate": int(model.sample_rate),
            "hop_length": int(model.hop_length),
            # causal kernels put the whole reach on the left; non-causal split it (measured exact to 1e-6)
            "left_context": 2 * radius if causal else radius,
            "lookahead": 0 if causal else radius,
        }

    def _run_batch(self, reqs: list[VocodeRequest]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(reqs)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(reqs):
            groups[r.voice or self.default_voice].append(i)
        for voice, idx in groups.items():
            model = self.models[voice]
            mels = [np.asarray(reqs[i].mel, dtype=np.float32) for i in idx]
            audios = model.vocode_batch(mels) if len(mels) > 1 else [model.vocode(mels[0])]
            hop = int(model.hop_length)
            for i, audio in zip(idx, audios, strict=True):
                r = reqs[i]
                a = np.asarray(audio, dtype=np.float32)
                if r.start is not None or r.end is not None:
                    a = a[(r.start or 0) * hop : (r.end if r.end is not None else r.mel.shape[0]) * hop]
                out[i] = a
        return out  # type: ignore[return-value]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def _vocode_batch(self, reqs: list[VocodeRequest]) -> list[np.ndarray]:
        start = time.perf_counter()
        try:
            return await self.worker.run(self._run_batch, reqs)
        finally:
            self.metrics.batch(len(reqs))
            self.metrics.observe("vocode_batch", time.perf_counter() - start)

    async def vocode(self, req: VocodeRequest) -> np.ndarray:
        """Waveform (float32, model rate) for a mel or a mel window."""
        if (req.voice or self.default_voice) not in self.models:
            raise ValueError(f"unknown voice {req.voice!r}")
        if req.mel.ndim != 2 or req.mel.shape[1] != 80:
            raise ValueError(f"mel must be [frames, 80], got {req.mel.shape}")
        return await self._vocode_batch(req)

    async def check_health(self) -> None:
        """A real tiny inference: 4 mel frames through the default voice."""
        audio = await self.worker.run(self._run_batch, [VocodeRequest(np.zeros((4, 80), np.float32))])
        hop = self.models[self.default_voice].hop_length
        if audio[0].shape != (4 * hop,) or not np.isfinite(audio[0]).all():
            raise RuntimeError(f"vocoder health check produced {audio[0].shape}")
