"""The energy ViT and its restoration."""

from enfold.model.backbone import FlatLinear, PatchifyLinear, build_backbone, create_vit
from enfold.model.energy_vit import EnergyViT, build_energy_model
from enfold.model.heads import build_energy_head

__all__ = [
    "EnergyViT",
    "FlatLinear",
    "PatchifyLinear",
    "build_backbone",
    "build_energy_head",
    "build_energy_model",
    "create_vit",
]
