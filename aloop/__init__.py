"""aloop: an active-learning loop for inorganic crystal discovery."""

__version__ = "0.1.0"
