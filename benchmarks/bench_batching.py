"""Acoustic-stage batching A/B (Ray-free, full-size random model): ``python -m benchmarks.bench_batching``.

``clients`` concurrent callers each send ``per_client`` utterances of mixed lengths (seeded) to one acoustic
stage with one torch thread, as the served ``SambertAcoustic`` replica runs them; a share of them is streamed
(first chunk after ``--first-chunk`` frames, chunks doubling to 64, as the orchestrator asks). Modes:
- ``window``: ``@serve.batch`` semantics (whole utterances wait up to 5 ms for a batch of up to
  ``--max-batch``, which then decodes to the end), streams run their own decoder chunk by chunk on the same
  thread: the ``window`` mode of ``deployments/acoustic.py``, reproduced here without Serve;
- ``continuous``: :class:`engine.sambert.scheduler.ContinuousBatcher` (the default mode).
Modes alternate (A B A B ...) so both see the same machine load. Prints wall time, throughput (audio seconds
per second), whole-utterance latency p50/p95 and first-chunk latency p50/p95 per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_engine import syllable_line
from engine.messages import AcousticInput, AcousticOutput
from engine.modeldir import load_model_dir
from engine.sambert import AcousticModel
from engine.sambert.scheduler import BatcherSettings, ContinuousBatcher, Event, StreamEnd, StreamStart

REPO = Path(__file__).resolve().parent.parent
HOP_S = 200 / 16000


class WindowStage:
    """``@serve.batch(max_batch_size, batch_wait_timeout_s)`` over one torch thread, plus chunked streams."""

    def __init__(self, am: AcousticModel, max_batch: int, wait_s: float = 0.005) -> None:
        self.am, self.max_batch, self.wait_s = am, max_batch, wait_s
        self.pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
        self.queue: asyncio.Queue[tuple[AcousticInput, asyncio.Future[AcousticOutput]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        def call() -> Any:
            with torch.inference_mode():
                return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def _batches(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(
                        await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
                    )
                except TimeoutError:
                    break
            outs = await self._run(self.am.synthesize, [inp for inp, _ in batch])
            for (_, fut), out in zip(batch, outs, strict=True):
                fut.set_result(out)

    async def synthesize(self, inp: AcousticInput) -> AcousticOutput:
        if self.task is None:
            self.task = asyncio.ensure_future(self._batches())
        fut: asyncio.Future[AcousticOutput] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((inp, fut))
        return await fut

    async def stream(self, inp: AcousticInput, chunk: int, max_chunk: int, first: Callable[[], None]) -> int:
        stream = await self._run(self.am.stream, inp, chunk, max_chunk)
        it = iter(stream)
        frames = 0
        while (mel := await self._run(next, it, None)) is not None:
            if not frames:
                first()
            frames += mel.shape[0]
        return frames

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown()


class ContinuousStage:
    """The batcher behind the same two calls (events delivered onto the event loop)."""

    def __init__(self, am: AcousticModel, max_batch: int) -> None:
        self.batcher = ContinuousBatcher({"v": am}, BatcherSettings(max_batch=max_batch), threads=1)

    def _submit(self, inp: AcousticInput, **kw: Any) -> asyncio.Queue[Event]:
        loop, q = asyncio.get_running_loop(), asyncio.Queue()  # type: ignore[var-annotated]
        self.batcher.submit(None, inp, sink=lambda e: loop.call_soon_threadsafe(q.put_nowait, e), **kw)
        return q

    async def synthesize(self, inp: AcousticInput) -> AcousticOutput:
        out = await self._submit(inp).get()
        assert isinstance(out, AcousticOutput), out
        return out

    async def stream(self, inp: AcousticInput, chunk: int, max_chunk: int, first: Callable[[], None]) -> int:
        q = self._submit(inp, stream=True, chunk_frames=chunk, max_chunk_frames=max_chunk)
        frames = 0
        while not isinstance(event := await q.get(), StreamEnd):
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, StreamStart):
                continue
            if not frames:
                first()
            frames += event.shape[0]
        return frames

    def close(self) -> None:
        self.batcher.close()


def workload(vocab: Any, clients: int, per_client: int, stream_share: float, seed: int) -> list[list[Any]]:
    """Per client: (ids, streamed) pairs; 6 to 40 syllables (short sentences and clauses, as served units)."""
    rng = np.random.default_rng(seed)

    def item() -> tuple[np.ndarray, bool]:
        ids = syllable_line(vocab, int(rng.integers(6, 41)), seed=int(rng.integers(1 << 30)))
        return ids, bool(rng.random() < stream_share)

    return [[item() for _ in range(per_client)] for _ in range(clients)]


async def run_once(stage: Any, plan: list[list[Any]], first_chunk: int) -> dict[str, float]:
    latencies: list[float] = []
    firsts: list[float] = []
    audio = 0.0

    async def client(items: list[Any]) -> None:
        nonlocal audio
        for ids, streamed in items:
            start = time.perf_counter()
            if streamed:
                frames = await stage.stream(
                    AcousticInput(ids),
                    first_chunk,
                    64,
                    lambda s=start: firsts.append(time.perf_counter() - s),
                )
            else:
                frames = (await stage.synthesize(AcousticInput(ids))).mel.shape[0]
                latencies.append(time.perf_counter() - start)
            audio += frames * HOP_S

    start = time.perf_counter()
    await asyncio.gather(*[client(items) for items in plan])
    wall = time.perf_counter() - start

    def pct(v: list[float], q: float) -> float:
        return float(np.percentile(v, q)) if v else float("nan")

    return {
        "wall_s": wall,
        "throughput": audio / wall,
        "lat_p50": pct(latencies, 50),
        "lat_p95": pct(latencies, 95),
        "first_p50": pct(firsts, 50),
        "first_p95": pct(firsts, 95),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("TTS_MODEL_DIR"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=4)
    parser.add_argument("--stream-share", type=float, default=0.25)
    parser.add_argument(
        "--first-chunk", type=int, default=8, help="acoustic_chunk_frames of the orchestrator"
    )
    parser.add_argument("--max-batch", type=int, default=4, help="both modes (window: @serve.batch size)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["window", "continuous"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from engine.modeldir import benchmark_model_dir

    voice = load_model_dir(benchmark_model_dir(args.model_dir, "full")).default_voice
    torch.set_num_threads(1)
    am = AcousticModel.from_voice(voice, threads=1)
    plan = workload(voice.vocab, args.clients, args.per_client, args.stream_share, args.seed)
    am.synthesize([AcousticInput(plan[0][0][0])])  # warm-up
    print(
        f"clients {args.clients} x {args.per_client} utterances, {args.stream_share:.0%} streamed, "
        f"max batch {args.max_batch}, load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    cols = ("wall_s", "audio/s", "lat p50", "lat p95", "1st p50", "1st p95")
    print(f"{'mode':>10} " + " ".join(f"{c:>7}" for c in cols))
    results: dict[str, list[dict[str, float]]] = {m: [] for m in args.modes}
    factories: dict[str, Callable[[], Any]] = {
        "window": lambda: WindowStage(am, args.max_batch),
        "continuous": lambda: ContinuousStage(am, args.max_batch),
    }
    for _ in range(args.rounds):
        for mode in args.modes:
            stage = factories[mode]()

            async def go(stage: Any = stage) -> dict[str, float]:
                return await run_once(stage, plan, args.first_chunk)

            try:
                res = asyncio.run(go())
            finally:
                stage.close()
            results[mode].append(res)
            print(
                f"{mode:>10} {res['wall_s']:>7.2f} {res['throughput']:>7.2f} {res['lat_p50']:>7.3f} "
                f"{res['lat_p95']:>7.3f} {res['first_p50']:>7.3f} {res['first_p95']:>7.3f}",
                flush=True,
            )
    if len(args.modes) == 2 and args.rounds:
        a, b = args.modes

        def med(m: str, k: str) -> float:
            return statistics.median(r[k] for r in results[m])

        print(f"\nmedian {b} / {a}: throughput x{med(b, 'throughput') / med(a, 'throughput'):.2f}, "
              f"whole p95 x{med(b, 'lat_p95') / med(a, 'lat_p95'):.2f}, "
              f"first-chunk p95 x{med(b, 'first_p95') / med(a, 'first_p95'):.2f}")  # fmt: skip
    print(f"load avg after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
