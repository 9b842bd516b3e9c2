"""Open Chinese text frontend replacing ttsfrd: text/SSML → ttsfrd-format token units (spec §5)."""

from engine.controls import Prosody
from engine.frontend.errors import FrontendError
from engine.frontend.frontend import Frontend, Syllable, SynthesisUnit, unit_marks

__all__ = ["Frontend", "FrontendError", "Prosody", "Syllable", "SynthesisUnit", "unit_marks"]
