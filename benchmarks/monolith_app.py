"""One-deployment (monolithic) Ray Serve variant for the comparison: the whole engine in each replica.

Same engine, model and request shape as the seed server; scales by replicas instead of by stage.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response


@serve.deployment(
    name="MonolithTTS", num_replicas=2, max_ongoing_requests=4, ray_actor_options={"num_cpus": 1}
)
class MonolithTTS:
    def __init__(self, model_dir: str, threads: int = 1, vocoder_precision: str = "fp32") -> None:
        from engine.synthesizer import Synthesizer

        self.synth = Synthesizer(model_dir, threads=threads, vocoder_precision=vocoder_precision)
        self.lock = threading.Lock()  # the models are not re-entrant: one synthesis per replica at a time
        # warm up off the replica's event loop (Serve runs constructors inside it; the engine's sync API
        # starts its own loop)
        warm = threading.Thread(target=self._run, args=({"text": "您好。"},))
        warm.start()
        warm.join()

    def _run(self, req: dict[str, Any]) -> bytes:
        with self.lock:
            wav, _ = self.synth.synthesize_bytes(
                req["text"], "wav", emotion=req.get("emotion", "neutral"), speed=req.get("speed", 1.0)
            )
        return wav

    async def __call__(self, request: Request) -> Response:
        req = json.loads(await request.body())
        wav = await asyncio.to_thread(self._run, req)
        return Response(wav, media_type="audio/wav")


def build(model_dir: str, replicas: int = 2, threads: int = 1, vocoder_precision: str = "fp32") -> Any:
    return MonolithTTS.options(num_replicas=replicas).bind(model_dir, threads, vocoder_precision)
