"""The frontend's one documented exception type."""

from __future__ import annotations


class FrontendError(ValueError):
    """Bad frontend input (malformed SSML, unknown phone for a voice, over-long text, bad option).

    ``line``/``column`` (1-based) are set for SSML errors and say where the problem is.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        if line is not None:
            message = f"{message} (line {line}, column {column if column is not None else '?'})"
        super().__init__(message)
        self.message = message  # without any wrapper's prefix (Ray re-raises it as a RayTaskError subclass)
        self.line = line
        self.column = column
