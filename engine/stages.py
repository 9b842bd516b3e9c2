"""The stage operations on loaded models, shared by the local stages (:mod:`engine.synthesizer`) and the Serve
deployments (``deployments/``), so both compute exactly the same thing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np

from engine.messages import MelChunk, SynthesisRequest, VocodeRequest, VocoderInfo
from engine.steps import Steps, finish

if TYPE_CHECKING:
    from engine.frontend import Frontend, SynthesisUnit
    from engine.hifigan import Vocoder
    from engine.modeldir import ModelDirectory
    from engine.sambert import AcousticStream

__all__ = ["frontend_units", "mel_chunks", "vocode_request", "vocode_request_steps", "vocoder_info"]


def frontend_units(
    frontend: Frontend, directory: ModelDirectory, request: SynthesisRequest
) -> list[SynthesisUnit]:
    """The request's units: its text in the chosen voice's vocabulary, with every control handed over."""
    return frontend.process(
        request.text,
        directory.voice(request.voice).vocab,
        emotion=request.emotion,
        speaker=request.speaker,
        prosody=request.prosody,
        emotion_intensity=request.emotion_intensity,
    )


def vocoder_info(models: Mapping[str, Vocoder], default: str) -> VocoderInfo:
    """Rate, hop, whether chunks can carry state, and the mel context a stateless window needs."""
    model = models[default]
    radius = int(model.model.receptive_radius_frames())
    causal = bool(model.causal)
    return VocoderInfo(
        sample_rate=int(model.sample_rate),
        hop_length=int(model.hop_length),
        # causal: the exact reach on the left (what the engine's spans split by); non-causal: split it
        left_context=int(model.model.left_context_frames()) if causal else radius,
        lookahead=0 if causal else radius,
        stateful_stream=int(causal and all(m.causal for m in models.values())),
    )


def vocode_request(model: Vocoder, req: VocodeRequest) -> np.ndarray:
    """Waveform of a whole mel, or only of frames ``[start, end)`` of a mel window."""
    return finish(vocode_request_steps(model, req))


def vocode_request_steps(model: Vocoder, req: VocodeRequest) -> Steps[np.ndarray]:
    """:func:`vocode_request` as pausable steps (:mod:`engine.steps`)."""
    audio = yield from model.vocode_steps(np.asarray(req.mel, dtype=np.float32))
    audio = np.asarray(audio, dtype=np.float32)
    if req.start is None and req.end is None:
        return audio
    hop = int(model.hop_length)
    end = req.end if req.end is not None else req.mel.shape[0]
    return audio[(req.start or 0) * hop : end * hop]


def mel_chunks(stream: AcousticStream) -> Iterator[MelChunk]:
    """An acoustic stream as messages: first ``durations``/``pitch`` (no frames), then the mel chunks."""
    yield MelChunk(
        mel=np.zeros((0, 80), np.float32),
        durations=np.asarray(stream.durations),
        pitch=np.asarray(stream.pitch),
        num_frames=int(stream.num_frames),
    )
    for chunk in stream:
        yield MelChunk(mel=np.asarray(chunk, dtype=np.float32))
