"""Open Chinese text frontend replacing ttsfrd: text/SSML → ttsfrd-format token units (spec §5).

``Frontend`` (jieba, pypinyin, the polyphone model) is imported on first use of the name, so importing the
package for its errors and unit types (the ingress does) loads no dictionaries.
"""

from typing import TYPE_CHECKING, Any

from engine.controls import Prosody
from engine.frontend.errors import FrontendError
from engine.frontend.units import Syllable, SynthesisUnit, unit_marks

if TYPE_CHECKING:
    from engine.frontend.frontend import Frontend

__all__ = ["Frontend", "FrontendError", "Prosody", "Syllable", "SynthesisUnit", "unit_marks"]


def __getattr__(name: str) -> Any:
    if name == "Frontend":
        from engine.frontend.frontend import Frontend

        return Frontend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
