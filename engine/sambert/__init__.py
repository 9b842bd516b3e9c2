"""SAmBERT acoustic model: the released checkpoint's module tree and fast batched / streaming inference."""

from engine.sambert.infer import AcousticInput, AcousticModel, AcousticOutput, AcousticStream
from engine.sambert.model import ConfigError, KanTtsSAMBERT, WeightsError, load_am_state

__all__ = [
    "AcousticInput",
    "AcousticModel",
    "AcousticOutput",
    "AcousticStream",
    "ConfigError",
    "KanTtsSAMBERT",
    "WeightsError",
    "load_am_state",
]
