"""Linguistic-unit vocabularies of the released voices and the token-string encoder.

The token format is ttsfrd's ``{phone$tone$syllable_flag$word_segment$emotion$speaker}`` (spec §5.1).
Vocabulary order follows KAN-TTS ``KanTtsLinguisticUnit`` (spec §5.2): the PinYin phone set in file order,
then the four break marks, then ``_``, ``~`` and (unless ``has_mask`` is False) ``@[MASK]``.
Unlike the reference, unknown symbols are rejected instead of silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# PinYin/PhoneSet.xml names in file order (Mandarin initials/finals, zero-initial pseudo initials,
# lower-case ARPAbet without stress, erhua finals, pau).
PHONES: tuple[str, ...] = tuple(
    """
    a_c ai_c an_c ang_c ao_c b_c c_c ch_c d_c e_c ei_c en_c eng_c er_c f_c g_c h_c i_c ia_c ian_c iang_c
    iao_c ie_c ih_c ii_c in_c ing_c io_c iong_c iou_c j_c k_c l_c m_c n_c o_c ong_c ou_c p_c q_c r_c s_c sh_c
    t_c u_c ua_c uai_c uan_c uang_c uei_c uen_c ueng_c uo_c v_c van_c ve_c vn_c xx_c z_c zh_c w_c y_c ga ge go
    aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th uh uw v w y z zh
    air_c angr_c anr_c aor_c ar_c eir_c engr_c enr_c iangr_c ianr_c iaor_c iar_c ier_c ihr_c iir_c ingr_c
    inr_c iongr_c iour_c ir_c ongr_c or_c our_c uair_c uangr_c uanr_c uar_c ueir_c uenr_c uor_c ur_c vanr_c
    ver_c vnr_c vr_c pau
    """.split()
)
ENGLISH_PHONES: frozenset[str] = frozenset(PHONES[PHONES.index("aa") : PHONES.index("zh") + 1])
BREAKS: tuple[str, ...] = ("#1", "#2", "#3", "#4")
TONES: tuple[str, ...] = ("tone1", "tone_none", "tone4", "tone2", "tone3", "tone5", "tone0")
SYLLABLE_FLAGS: tuple[str, ...] = ("s_begin", "s_end", "s_none", "s_both", "s_middle")
WORD_SEGMENTS: tuple[str, ...] = ("word_begin", "word_end", "word_middle", "word_both", "word_none")
EMOTION_NAMES: tuple[str, ...] = (
    "none neutral angry disgust fear happy sad surprise calm gentle relax lyrical serious disgruntled "
    "satisfied disappointed excited anxiety jealousy hate pity pleasure arousal dominance "
    "placeholder1 placeholder2 placeholder3 placeholder4 placeholder5 placeholder6 placeholder7 "
    "placeholder8 placeholder9"
).split()
EMOTIONS: tuple[str, ...] = tuple(f"emotion_{name}" for name in EMOTION_NAMES)
DEFAULT_SPEAKER_LIST: tuple[str, ...] = ("F7", "F74", "FBYN", "FRXL", "M7", "xiaoyu")
PAD, EOS, MASK = "_", "~", "@[MASK]"
FIELDS: tuple[str, ...] = ("sy", "tone", "syllable_flag", "word_segment", "emotion", "speaker")


class SymbolError(ValueError):
    """A token string is malformed or uses a symbol the voice's vocabulary does not have."""


def _with_specials(names: Iterable[str], has_mask: bool) -> tuple[str, ...]:
    tail = (PAD, EOS, MASK) if has_mask else (PAD, EOS)
    return (*names, *tail)


@dataclass(frozen=True)
class LinguisticVocab:
    """The six vocabularies of one voice, in KAN-TTS id order."""

    sy: tuple[str, ...]  # stored with the "@" prefix KAN-TTS uses, except the specials
    tone: tuple[str, ...]
    syllable_flag: tuple[str, ...]
    word_segment: tuple[str, ...]
    emotion: tuple[str, ...]
    speaker: tuple[str, ...]
    has_mask: bool = True
    _index: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {name: {sym: i for i, sym in enumerate(getattr(self, name))} for name in FIELDS}
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(
        cls,
        speaker_list: Sequence[str] = DEFAULT_SPEAKER_LIST,
        has_mask: bool = True,
        phones: Sequence[str] = PHONES,
    ) -> LinguisticVocab:
        sy = _with_specials([f"@{p}" for p in (*phones, *BREAKS)], has_mask)
        return cls(
            sy=sy,
            tone=_with_specials(TONES, has_mask),
            syllable_flag=_with_specials(SYLLABLE_FLAGS, has_mask),
            word_segment=_with_specials(WORD_SEGMENTS, has_mask),
            emotion=_with_specials(EMOTIONS, has_mask),
            speaker=_with_specials(speaker_list, has_mask),
            has_mask=has_mask,
        )

    @classmethod
    def from_am_config(cls, am_config: Mapping[str, Any], dict_dir: Path | None = None) -> LinguisticVocab:
        """Build from an ``am/config.yaml`` mapping; ``dict/sy_dict.txt`` order wins when present."""
        unit = am_config.get("linguistic_unit") or {}
        speakers = unit.get("speaker_list", ",".join(DEFAULT_SPEAKER_LIST))
        speaker_list = [s.strip() for s in str(speakers).split(",") if s.strip()]
        if not speaker_list:
            raise SymbolError("am/config.yaml linguistic_unit.speaker_list is empty")
        has_mask = bool(unit.get("has_mask", True))
        phones: Sequence[str] = PHONES
        if dict_dir is not None and (dict_dir / "sy_dict.txt").is_file():
            listed = [
                ln.strip().lstrip("@") for ln in (dict_dir / "sy_dict.txt").read_text("utf-8").splitlines()
            ]
            phones = [p for p in listed if p and p not in BREAKS and p not in (PAD, EOS, MASK)]
        return cls.build(speaker_list, has_mask, phones)

    def sizes(self) -> dict[str, int]:
        """Vocabulary sizes, keyed as KAN-TTS ``get_unit_size()`` returns them."""
        return {name: len(getattr(self, name)) for name in FIELDS}

    def id_of(self, field_name: str, symbol: str) -> int:
        key = f"@{symbol}" if field_name == "sy" and symbol not in (PAD, EOS, MASK) else symbol
        try:
            return self._index[field_name][key]
        except KeyError:
            raise SymbolError(f"unknown {field_name} symbol {symbol!r} for this voice") from None

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Encode ``{a$b$c$d$e$f}`` tokens to an int64 array ``[T, 6]`` (no trailing ``~``)."""
        out = np.empty((len(tokens), len(FIELDS)), dtype=np.int64)
        for row, token in enumerate(tokens):
            parts = parse_token(token)
            for col, (name, symbol) in enumerate(zip(FIELDS, parts, strict=True)):
                out[row, col] = self.id_of(name, symbol)
        return out

    def encode_line(self, line: str) -> np.ndarray:
        """Encode a whitespace-separated token line; a leading ``<idx>\\t`` is ignored."""
        if "\t" in line:
            line = line.split("\t", 1)[1]
        return self.encode_tokens(line.split())

    def eos_ids(self) -> np.ndarray:
        """The trailing ``~`` row the reference appends (used only where the reference layout is needed)."""
        return np.array([self.id_of(name, EOS) for name in FIELDS], dtype=np.int64)


def parse_token(token: str) -> tuple[str, str, str, str, str, str]:
    """Split ``{sy$tone$flag$ws$emo$spk}`` into its six fields."""
    if not (token.startswith("{") and token.endswith("}")):
        raise SymbolError(f"token {token!r} is not of the form {{sy$tone$flag$ws$emo$spk}}")
    parts = token[1:-1].split("$")
    if len(parts) != len(FIELDS):
        raise SymbolError(f"token {token!r} has {len(parts)} fields, expected {len(FIELDS)}")
    return tuple(parts)  # type: ignore[return-value]


def format_token(sy: str, tone: str, flag: str, ws: str, emotion: str, speaker: str) -> str:
    return "{" + "$".join((sy, tone, flag, ws, emotion, speaker)) + "}"
