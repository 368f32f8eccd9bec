"""enfold: one vision transformer as an energy model and its own decoder."""

__version__ = "0.1.0"
