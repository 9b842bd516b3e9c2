"""Context model for polyphonic characters, combined with the reading our dictionaries and rules chose.

The model is g2pM's one-layer BiLSTM (Park & Lee 2020, trained on the CPP benchmark's train split; the
``g2pM`` package, Apache-2.0, ships its weights as numpy arrays). We load those arrays into a PyTorch
``nn.LSTM`` (the package's own pure-numpy loop costs ~10 ms per 100 characters; PyTorch runs the same network
in a fraction of that) and restrict its output to the readings CC-CEDICT lists for the character.

:func:`decide` combines it with the lexical reading from :mod:`engine.frontend.g2p`: each candidate reading
scores its model log-probability, and the reading our dictionaries chose gets a bonus that depends on where it
came from (pypinyin phrase of n syllables, max-matched sub-phrase, bare single-character default). Overrides,
forced readings, the project phrase list, context rules and surname readings are never changed. The bonuses
are fitted on the CPP **dev** split by ``engine/frontend/training/fit_polyphone_gate.py`` and stored in
``polyphone_gate.json``; the CPP test split is never read for fitting.
"""

from __future__ import annotations

import importlib.resources
import json
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.frontend.errors import FrontendError

GATE_PATH = Path(__file__).with_name("polyphone_gate.json")
_BOS, _EOS, _UNK = "시", "끝", "<UNK>"  # g2pM's sentence-boundary and unknown tokens
_LOCK = threading.Lock()
_MODEL: PolyphoneModel | None = None
_NEVER = frozenset("一不")  # citation tone + sandhi rules own these


class _BiLSTM(nn.Module):
    """g2pM's network: embedding → BiLSTM → Linear-ReLU-Linear over all readings."""

    def __init__(self, n_chars: int, n_classes: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_chars, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.logit_layer = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(ids))
        return self.logit_layer(h[0, positions])


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
        emb = state["embedding.weight"]
        self.net = _BiLSTM(emb.shape[0], len(class2idx), emb.shape[1], state["lstm.weight_hh_l0"].shape[1])
        self.net.load_state_dict(
            {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
        )
        self.net.eval()
        self.char2idx: dict[str, int] = char2idx
        readings = {idx: py.replace("u:", "v") for py, idx in class2idx.items()}
        # candidates per polyphonic character: (readings, class indices)
        self.candidates: dict[str, tuple[tuple[str, ...], torch.Tensor]] = {}
        for ch, prons in cedict.items():
            cls = [class2idx[p] for p in prons if p in class2idx]
            if len(cls) > 1 and ch not in _NEVER:
                self.candidates[ch] = (tuple(readings[c] for c in cls), torch.tensor(cls))
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
        ids = torch.tensor([[self._bos, *(get(c, unk) for c in text), self._eos]])
        with torch.inference_mode():
            logits = self.net(ids, torch.tensor([p + 1 for p in positions]))
        out = []
        for row, p in zip(logits, positions, strict=True):
            names, cls = self.candidates[text[p]]
            lp = torch.log_softmax(row[cls], dim=0).tolist()
            out.append(dict(zip(names, lp, strict=True)))
        return out


def model() -> PolyphoneModel:
    """The process-wide model, loaded on first use."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                _MODEL = PolyphoneModel()
    return _MODEL


def load_gate(path: Path = GATE_PATH) -> dict[str, float]:
    """Bonus (in log-probability units) for our own reading, by where it came from."""
    data = json.loads(path.read_text("utf-8"))
    return {str(k): float(v) for k, v in data["bonus"].items()}


def decide(log_probs: dict[str, float], ours: str, source: str, gate: dict[str, float]) -> str:
    """The candidate with the best model log-probability, our reading getting ``gate[source]`` on top."""
    scores = dict(log_probs)
    scores[ours] = scores.get(ours, -30.0) + gate.get(source, 0.0)
    return max(scores, key=scores.__getitem__)
