"""HiFi-GAN vocoder: KAN-TTS generator (causal/non-causal), jik876 generators, batched and streaming."""

from .generator import Generator
from .jik876 import Jik876Generator, load_jik876
from .vocoder import StreamingVocoder, Vocoder, VocoderError, VocoderState, generator_state_dict

__all__ = [
    "Generator",
    "Jik876Generator",
    "StreamingVocoder",
    "Vocoder",
    "VocoderError",
    "VocoderState",
    "generator_state_dict",
    "load_jik876",
]
