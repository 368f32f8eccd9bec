"""Inference over exported artifacts: ``load`` one, then classify, restore or score images."""

from enfold.runtime.images import load_images
from enfold.runtime.session import InferenceSession, load

__all__ = ["InferenceSession", "load", "load_images"]
