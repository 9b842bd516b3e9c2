"""Open Chinese text frontend replacing ttsfrd: text/SSML → ttsfrd-format token units (spec §5)."""

from engine.frontend.errors import FrontendError
from engine.frontend.frontend import Frontend, Prosody, Syllable, SynthesisUnit

__all__ = ["Frontend", "FrontendError", "Prosody", "Syllable", "SynthesisUnit"]
