"""Context model for polyphonic characters, combined with the reading our dictionaries and rules chose.

The model is g2pM's one-layer BiLSTM (Park & Lee 2020, trained on the CPP benchmark's train split; the
``g2pM`` package, Apache-2.0, ships its weights as numpy arrays). We run those arrays with our own numpy code
(the package's loop costs ~10 ms per 100 characters; folding the embedding into the input projection, running
each direction only as far as needed and scoring only the candidate classes makes it several times cheaper)
and restrict its output to the readings CC-CEDICT lists for the character.

:func:`decide` combines it with the lexical reading from :mod:`engine.frontend.g2p`: each candidate
reading gets a linear score: its model log-probability, a bonus when it is the reading our dictionaries chose
(by where that came from: pypinyin phrase of n syllables, max-matched sub-phrase, bare single-character
default) and a bonus per phrase dictionary (pypinyin's; CC-CEDICT's, ``cedict_phrases.tsv``) with a 2-4
character word around the character that reads it so. Overrides, forced readings, the project phrase list,
context rules and surname readings are never changed. The weights (a conditional logit) are fitted on the CPP
**dev** split by ``engine/frontend/training/fit_polyphone_gate.py`` and stored in ``polyphone_gate.json``; the
CPP test split is never read for fitting.
"""

from __future__ import annotations

import importlib.resources
import json
import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.frontend.errors import FrontendError

GATE_PATH = Path(__file__).with_name("polyphone_gate.json")
CEDICT_PATH = Path(__file__).with_name("cedict_phrases.tsv")
_BOS, _EOS, _UNK = "시", "끝", "<UNK>"  # g2pM's sentence-boundary and unknown tokens
_LOCK = threading.Lock()
_MODEL: PolyphoneModel | None = None
_CEDICT: dict[str, list[str]] | None = None
_NEVER = frozenset("一不")  # citation tone + sandhi rules own these


class _BiLSTM:
    """g2pM's network (embedding → BiLSTM → Linear-ReLU-Linear) in numpy, float32.

    The embedding and input projection are folded into one table per direction; both directions run in one
    loop, each only as far as the requested positions need (forward to the last, backward to the first).
    """

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        def f32(name: str) -> np.ndarray:
            return np.ascontiguousarray(np.asarray(state[name], dtype=np.float32))

        emb = f32("embedding.weight")
        self.tables, recurrent = [], []
        for sfx in ("", "_reverse"):
            bias = f32(f"lstm.bias_ih_l0{sfx}") + f32(f"lstm.bias_hh_l0{sfx}")
            self.tables.append(np.ascontiguousarray(emb @ f32(f"lstm.weight_ih_l0{sfx}").T + bias))
            recurrent.append(f32(f"lstm.weight_hh_l0{sfx}").T)
        self.recurrent = np.ascontiguousarray(np.stack(recurrent))  # [2, n, 4n]
        self.hidden = self.recurrent.shape[1]
        self.w1, self.b1 = np.ascontiguousarray(f32("logit_layer.0.weight").T), f32("logit_layer.0.bias")
        self.w2, self.b2 = f32("logit_layer.2.weight"), f32("logit_layer.2.bias")

    def _run(self, fw_ids: Sequence[int], bw_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Both directions in one loop (``bw_ids`` already reversed); hidden states per step for each."""
        n, steps = self.hidden, max(len(fw_ids), len(bw_ids))
        pad = [0] * steps
        x = np.stack(
            [
                self.tables[0][list(fw_ids) + pad[len(fw_ids) :]],
                self.tables[1][list(bw_ids) + pad[len(bw_ids) :]],
            ],
            axis=1,
        )  # [steps, 2, 4n]; padded steps are computed and ignored
        h = np.zeros((2, 1, n), np.float32)
        c = np.zeros((2, n), np.float32)
        out = np.empty((steps, 2, n), np.float32)
        for t in range(steps):
            g = x[t] + np.matmul(h, self.recurrent)[:, 0]  # gates i, f, g, o (PyTorch's order)
            s = 1.0 / (1.0 + np.exp(-g))
            c = s[:, n : 2 * n] * c + s[:, :n] * np.tanh(g[:, 2 * n : 3 * n])
            out[t] = s[:, 3 * n :] * np.tanh(c)
            h = out[t][:, None, :]
        return out[: len(fw_ids), 0], out[: len(bw_ids), 1]

    def logits(
        self, ids: Sequence[int], positions: Sequence[int], classes: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Logits of the classes ``classes[k]`` at ``positions[k]`` of ``ids``."""
        lo = min(positions)
        fw, bw = self._run(ids[: max(positions) + 1], ids[lo:][::-1])
        bw = bw[::-1]  # bw[i] is the state at position lo + i
        out = []
        for p, cls in zip(positions, classes, strict=True):
            hid = np.maximum(np.concatenate([fw[p], bw[p - lo]]) @ self.w1 + self.b1, 0.0)
            out.append(self.w2[cls] @ hid + self.b2[cls])
        return out


def _load_pickle(path: Path) -> object:
    with path.open("rb") as f:
        return pickle.load(f)  # the installed g2pM package's own files


class PolyphoneModel:
    """The CPP-trained BiLSTM with candidate readings per character; thread-safe after construction."""

    def __init__(self, package_dir: Path | None = None) -> None:
        if package_dir is None:
            try:
                package_dir = Path(str(importlib.resources.files("g2pM")))
            except ModuleNotFoundError:
                raise FrontendError(
                    "the polyphone model needs the 'g2pM' package (pip install g2pM)"
                ) from None
        try:
            state = _load_pickle(package_dir / "np_ckpt.pkl")
            char2idx = _load_pickle(package_dir / "char2idx.pkl")
            class2idx = _load_pickle(package_dir / "class2idx.pkl")
            cedict = _load_pickle(package_dir / "digest_cedict.pkl")
        except (OSError, pickle.UnpicklingError) as exc:
            raise FrontendError(f"cannot load the g2pM model files in {package_dir}: {exc}") from None
        assert isinstance(state, dict) and isinstance(char2idx, dict)
        assert isinstance(class2idx, dict) and isinstance(cedict, dict)
        self.net = _BiLSTM(state)
        self.char2idx: dict[str, int] = char2idx
        readings = {idx: py.replace("u:", "v") for py, idx in class2idx.items()}
        # candidates per polyphonic character: (readings, class indices)
        self.candidates: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        for ch, prons in cedict.items():
            cls = [class2idx[p] for p in prons if p in class2idx]
            if len(cls) > 1 and ch not in _NEVER:
                self.candidates[ch] = (tuple(readings[c] for c in cls), np.array(cls))
        self._bos, self._eos, self._unk = char2idx[_BOS], char2idx[_EOS], char2idx[_UNK]

    def is_polyphone(self, ch: str) -> bool:
        return ch in self.candidates

    def log_probs(self, text: str, positions: Sequence[int]) -> list[dict[str, float]]:
        """Log-probabilities of each candidate reading of ``text[p]`` for every ``p`` in ``positions``."""
        if not positions:
            return []
        for p in positions:
            if not 0 <= p < len(text) or text[p] not in self.candidates:
                raise FrontendError(f"internal: position {p} of {text!r} is not a known polyphone")
        get, unk = self.char2idx.get, self._unk
        ids = [self._bos, *(get(c, unk) for c in text), self._eos]
        cands = [self.candidates[text[p]] for p in positions]
        rows = self.net.logits(ids, [p + 1 for p in positions], [cls for _, cls in cands])
        out = []
        for row, (names, _) in zip(rows, cands, strict=True):
            z = row - row.max()
            lp = z - np.log(np.exp(z).sum())
            out.append(dict(zip(names, lp.tolist(), strict=True)))
        return out


def model() -> PolyphoneModel:
    """The process-wide model, loaded on first use."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                _MODEL = PolyphoneModel()
    return _MODEL


def cedict_phrases() -> dict[str, list[str]]:
    """CC-CEDICT words with a polyphone (``cedict_phrases.tsv``), loaded on first use."""
    global _CEDICT
    if _CEDICT is None:
        with _LOCK:
            if _CEDICT is None:
                table = {}
                for line in CEDICT_PATH.read_text("utf-8").splitlines():
                    if line and not line.startswith("#"):
                        word, py = line.split("\t")
                        table[word] = py.split()
                _CEDICT = table
    return _CEDICT


@dataclass(frozen=True, slots=True)
class Gate:
    """Weights of the linear score per candidate reading (see the module docstring)."""

    log_prob: float
    ours: dict[str, float]  # by source of our reading
    evidence: dict[str, float]  # by phrase dictionary

    def score(
        self, reading: str, log_prob: float, ours: str, source: str, evidence: Mapping[str, set[str]]
    ) -> float:
        s = self.log_prob * log_prob + (self.ours.get(source, 0.0) if reading == ours else 0.0)
        return s + sum(w for d, w in self.evidence.items() if reading in evidence.get(d, ()))


def load_gate(path: Path = GATE_PATH) -> Gate:
    """The fitted gate weights."""
    data = json.loads(path.read_text("utf-8"))["weights"]
    return Gate(
        float(data["log_prob"]),
        {str(k): float(v) for k, v in data["ours"].items()},
        {str(k): float(v) for k, v in data["evidence"].items()},
    )


UNLISTED = -30.0  # log-probability of a reading the model does not list for the character


def decide(
    log_probs: Mapping[str, float],
    ours: str,
    source: str,
    gate: Gate,
    evidence: Mapping[str, set[str]] | None = None,
) -> str:
    """The candidate (the model's readings and ours) with the best gate score."""
    evidence = evidence or {}
    cands = [*log_probs, *([ours] if ours not in log_probs else [])]
    return max(cands, key=lambda r: gate.score(r, log_probs.get(r, UNLISTED), ours, source, evidence))
