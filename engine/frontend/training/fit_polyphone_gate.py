"""Fit the polyphone gate (``engine/frontend/polyphone_gate.json``) on the CPP **dev** split.

For every dev sentence: our dictionary/rule reading of the marked character and where it came from
(``G2P(polyphone_model=False)``), and the context model's log-probabilities. Per source, the bonus added to
our reading's log-probability is the grid value with the best dev accuracy (ties → the smaller bonus); 5-fold
cross-validation on dev estimates the accuracy on unseen sentences. The CPP test split is never read.

Run: ``python -m engine.frontend.training.fit_polyphone_gate [--write]``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from dataclasses import dataclass

from engine.frontend import polyphone as pm
from engine.frontend.evaluation import CPP_DEV, cpp_run, load_cpp
from engine.frontend.g2p import DECIDED_SOURCES, G2P

GRID = [x / 2 for x in range(0, 41)]


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    ours: str
    source: str
    log_probs: dict[str, float]


def collect(context: bool) -> list[Case]:
    g2p = G2P(polyphone_model=False)
    model = pm.model()
    cases = []
    for it in load_cpp(CPP_DEV, "dev"):
        run = cpp_run(it)
        syl = next(
            (s for w in g2p.words(run.text, run.forced) for s in w.syllables if s.first == run.index), None
        )
        if syl is None:  # an erhua 儿 merged into the syllable before it
            cases.append(Case(it.label, "er5", "erhua", {}))
            continue
        if syl.source in DECIDED_SOURCES or not model.is_polyphone(syl.hanzi):
            lp = {}
        else:
            left, right = (run.left, run.right) if context else ("", "")
            lp = model.log_probs(left + run.text + right, [len(left) + run.index])[0]
        ours = syl.lexical[:-2] + syl.lexical[-1] if syl.last > syl.first else syl.lexical
        cases.append(Case(it.label, ours, syl.source, lp))
    return cases


def choose(c: Case, gate: dict[str, float]) -> str:
    return pm.decide(c.log_probs, c.ours, c.source, gate) if c.log_probs else c.ours


def fit(cases: list[Case]) -> dict[str, float]:
    by_src: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        if c.log_probs:
            by_src[c.source].append(c)
    gate = {}
    for src, group in sorted(by_src.items()):
        best = max(GRID, key=lambda b: (sum(choose(c, {src: b}) == c.label for c in group), -b))
        gate[src] = best
    return gate


def accuracy(cases: list[Case], gate: dict[str, float]) -> float:
    return sum(choose(c, gate) == c.label for c in cases) / len(cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help=f"write the gate to {pm.GATE_PATH}")
    ap.add_argument(
        "--context", action="store_true", help="the model also reads the sentence around the hanzi run"
    )
    args = ap.parse_args()
    cases = collect(args.context)
    print(f"dev sentences: {len(cases)}")
    print(f"dictionaries + rules only: {sum(c.ours == c.label for c in cases) / len(cases) * 100:.2f} %")
    model_only = accuracy(cases, {})
    print(f"context model decides every undecided polyphone: {model_only * 100:.2f} %")
    rng = random.Random(0)
    order = list(range(len(cases)))
    rng.shuffle(order)
    correct = 0
    for k in range(5):
        test = [cases[i] for j, i in enumerate(order) if j % 5 == k]
        train = [cases[i] for j, i in enumerate(order) if j % 5 != k]
        g = fit(train)
        correct += sum(choose(c, g) == c.label for c in test)
    print(f"gate, 5-fold cross-validated on dev: {correct / len(cases) * 100:.2f} %")
    gate = fit(cases)
    print(f"gate fitted on all of dev: {accuracy(cases, gate) * 100:.2f} %  {gate}")
    if args.write:
        pm.GATE_PATH.write_text(
            json.dumps({"fitted_on": "CPP dev split", "bonus": gate}, indent=1, sort_keys=True) + "\n",
            "utf-8",
        )
        print(f"wrote {pm.GATE_PATH}")


if __name__ == "__main__":
    main()
