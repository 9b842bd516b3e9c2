"""``TextFrontend`` deployment: a :class:`~engine.messages.SynthesisRequest` → units with merged controls."""

from __future__ import annotations

import logging
import time

from ray import serve

from deployments.common import TorchWorker, replica_threads, route_logs_to_serve
from deployments.metrics import StageMetrics
from engine.frontend import Frontend, FrontendError, SynthesisUnit
from engine.messages import SynthesisRequest
from engine.modeldir import load_model_dir
from engine.stages import frontend_units

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
        self.metrics = StageMetrics("frontend")
        self.worker.run_sync(self._process, SynthesisRequest("你好。"))  # warm jieba/pypinyin once

    def _process(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        return frontend_units(self.frontend, self.model, request)

    async def process(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        """Units for the request's text; raises ``FrontendError`` (a client error) on bad input."""
        start = time.perf_counter()
        try:
            return await self.worker.run(self._process, request)
        except FrontendError:
            self.metrics.error("bad_text")
            raise
        finally:
            self.metrics.observe("process", time.perf_counter() - start)

    async def check_health(self) -> None:
        """A real tiny frontend run; raising marks the replica unhealthy."""
        units = await self.worker.run(self._process, SynthesisRequest("好"))
        if not units or units[0].ids.shape[0] == 0:
            raise RuntimeError("frontend produced no tokens for a health-check sentence")
