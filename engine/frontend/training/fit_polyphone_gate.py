"""Fit the polyphone gate (``engine/frontend/polyphone_gate.json``) on the CPP **dev** split.

For every dev sentence: our dictionary/rule reading of the marked character and where it came from
(``G2P(polyphone_model=False)``), the context model's log-probabilities (it reads the whole sentence, as the
frontend does) and the phrase-dictionary evidence (:func:`engine.frontend.g2p.phrase_evidence`). The gate is a
conditional logit over each character's candidate readings (features: log-probability, "our reading" per
source, "a pypinyin / CC-CEDICT word around it reads it so"), fitted by maximum likelihood with a small L2
penalty. Reported: fit on even lines → accuracy on odd lines and the reverse, 5-fold cross-validation, and the
fit on all of dev (the one written). The CPP test split is never read.

Run: ``python -m engine.frontend.training.fit_polyphone_gate [--write]``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from engine.frontend import polyphone as pm
from engine.frontend.evaluation import CPP_DEV, cpp_run, load_cpp
from engine.frontend.g2p import DECIDED_SOURCES, G2P, phrase_evidence

SOURCES = ("pdict2", "pdict3", "pdict4", "sub2", "sub3", "single")
DICTS = ("pypinyin", "cedict")
L2 = 0.01


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    ours: str
    source: str
    log_probs: dict[str, float]  # empty: the model does not decide this character
    evidence: dict[str, set[str]]

    def candidates(self) -> list[str]:
        return [*self.log_probs, *([self.ours] if self.ours not in self.log_probs else [])]

    def features(self) -> np.ndarray:
        """One row per candidate: log-probability, our reading by source, evidence by dictionary."""
        rows = []
        for r in self.candidates():
            ours = [float(r == self.ours and self.source == s) for s in SOURCES]
            ev = [float(r in self.evidence.get(d, ())) for d in DICTS]
            rows.append([self.log_probs.get(r, pm.UNLISTED), *ours, *ev])
        return np.array(rows)


def collect() -> list[Case]:
    g2p = G2P(polyphone_model=False)
    model = pm.model()
    cases = []
    for it in load_cpp(CPP_DEV, "dev"):
        run = cpp_run(it)
        text = run.left + run.text + run.right
        words = g2p.sentence(text, [(len(run.left), run.forced)])[0]
        syl = next((s for w in words for s in w.syllables if s.first == run.index), None)
        if syl is None:  # an erhua 儿 merged into the syllable before it
            cases.append(Case(it.label, "er5", "erhua", {}, {}))
            continue
        ours = syl.lexical[:-2] + syl.lexical[-1] if syl.last > syl.first else syl.lexical
        if syl.source in DECIDED_SOURCES or not model.is_polyphone(syl.hanzi):
            cases.append(Case(it.label, ours, syl.source, {}, {}))
            continue
        p = len(run.left) + run.index
        lp = model.log_probs(text, [p])[0]
        cases.append(Case(it.label, ours, syl.source, lp, phrase_evidence(text, p)))
    return cases


def to_gate(w: np.ndarray) -> pm.Gate:
    n = len(SOURCES)
    return pm.Gate(
        float(w[0]),
        {s: round(float(v), 4) for s, v in zip(SOURCES, w[1 : 1 + n], strict=True)},
        {d: round(float(v), 4) for d, v in zip(DICTS, w[1 + n :], strict=True)},
    )


def fit(cases: list[Case]) -> pm.Gate:
    data = []
    for c in cases:
        if c.log_probs and c.label in c.candidates():
            data.append((c.features(), c.candidates().index(c.label)))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = L2 * float(w[1:] @ w[1:]), np.r_[0.0, 2 * L2 * w[1:]]
        for x, y in data:
            z = x @ w
            z -= z.max()
            p = np.exp(z)
            p /= p.sum()
            total -= float(np.log(p[y] + 1e-12))
            grad -= x[y] - p @ x
        return total, grad

    w0 = np.zeros(1 + len(SOURCES) + len(DICTS))
    w0[0] = 1.0
    return to_gate(minimize(loss, w0, jac=True, method="L-BFGS-B").x)


def choose(c: Case, gate: pm.Gate) -> str:
    return pm.decide(c.log_probs, c.ours, c.source, gate, c.evidence) if c.log_probs else c.ours


def accuracy(cases: list[Case], gate: pm.Gate) -> float:
    return sum(choose(c, gate) == c.label for c in cases) / len(cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help=f"write the gate to {pm.GATE_PATH}")
    args = ap.parse_args()
    cases = collect()
    print(f"dev sentences: {len(cases)}")
    print(f"dictionaries + rules only: {sum(c.ours == c.label for c in cases) / len(cases) * 100:.2f} %")
    model_only = pm.Gate(1.0, {}, {})
    print(f"context model decides every undecided polyphone: {accuracy(cases, model_only) * 100:.2f} %")
    even, odd = cases[0::2], cases[1::2]
    print(
        f"fit on even lines -> odd lines: {accuracy(odd, fit(even)) * 100:.2f} %; "
        f"fit on odd -> even: {accuracy(even, fit(odd)) * 100:.2f} %"
    )
    rng = random.Random(0)
    order = list(range(len(cases)))
    rng.shuffle(order)
    correct = 0
    for k in range(5):
        test = [cases[i] for j, i in enumerate(order) if j % 5 == k]
        train = [cases[i] for j, i in enumerate(order) if j % 5 != k]
        g = fit(train)
        correct += sum(choose(c, g) == c.label for c in test)
    print(f"5-fold cross-validated on dev: {correct / len(cases) * 100:.2f} %")
    gate = fit(cases)
    print(f"fitted on all of dev: {accuracy(cases, gate) * 100:.2f} %  {gate}")
    if args.write:
        weights = {"log_prob": round(gate.log_prob, 4), "ours": gate.ours, "evidence": gate.evidence}
        pm.GATE_PATH.write_text(
            json.dumps({"fitted_on": "CPP dev split", "weights": weights}, indent=1, sort_keys=True) + "\n",
            "utf-8",
        )
        print(f"wrote {pm.GATE_PATH}")


if __name__ == "__main__":
    main()
