"""Training data: Materials Project (mp-api with a local cache, or a local folder), converted into the crystal space."""

from aloop.data.convert import PROPERTIES, Conversion, Entries, to_training_set
from aloop.data.local import LocalDataError, read_local
from aloop.data.mp import MPError, MPQuery, PullReport, load_cache, pull
from aloop.data.training import TARGETS, TrainingSet

__all__ = [
    "PROPERTIES",
    "TARGETS",
    "Conversion",
    "Entries",
    "LocalDataError",
    "MPError",
    "MPQuery",
    "PullReport",
    "TrainingSet",
    "load_cache",
    "pull",
    "read_local",
    "to_training_set",
]
