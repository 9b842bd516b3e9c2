"""``TextFrontend`` deployment: text/SSML → linguistic units (token ids, pauses, syllable→token marks)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import serve

from deployments.common import TorchWorker, replica_threads, route_logs_to_serve
from deployments.payloads import UnitPayload, unit_payload
from engine.frontend import Frontend, FrontendError
from engine.modeldir import load_model_dir

__all__ = ["TextFrontend"]

log = logging.getLogger("tts.frontend")


@serve.deployment(name="TextFrontend", max_ongoing_requests=16, max_queued_requests=64)
class TextFrontend:
    """Owns one :class:`engine.frontend.Frontend` and the voices' vocabularies."""

    def __init__(self, model_dir: str, threads: int | None = None) -> None:
        route_logs_to_serve()
        self.model = load_model_dir(model_dir)
        self.frontend = Frontend()
        self.worker = TorchWorker(replica_threads(threads), "frontend")
        from serve_app.metrics import StageMetrics

        self.metrics = StageMetrics("frontend")
        self.worker.run_sync(self._process, "你好。", None, "neutral")  # warm jieba/pypinyin once

    def _voice(self, voice: str | None) -> Any:
        if voice is None:
            return next(iter(self.model.voices.values()))
        return self.model.voices[voice]

    def _process(self, text: str, voice: str | None, emotion: str) -> list[UnitPayload]:
        spec = self._voice(voice)
        units = self.frontend.process(text, spec.vocab, emotion=emotion)
        return [unit_payload(u) for u in units]

    async def process(
        self, text: str, voice: str | None = None, emotion: str = "neutral"
    ) -> list[UnitPayload]:
        """Units for ``text``; raises ``FrontendError`` (a client error) on bad input."""
        start = time.perf_counter()
        try:
            return await self.worker.run(self._process, text, voice, emotion)
        except FrontendError:
            self.metrics.error("bad_text")
            raise
        finally:
            self.metrics.observe("process", time.perf_counter() - start)

    async def check_health(self) -> None:
        """A real tiny frontend run; raising marks the replica unhealthy."""
        units = await self.worker.run(self._process, "好", None, "neutral")
        if not units or units[0].ids.shape[0] == 0:
            raise RuntimeError("frontend produced no tokens for a health-check sentence")
