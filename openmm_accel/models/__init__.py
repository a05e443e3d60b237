"""Batched energy models: the contract (:class:`EnergyModel`), the registry and the built-in models."""
from .base import EnergyModel
from .registry import atomic_numbers_of, available, create

__all__ = ["EnergyModel", "atomic_numbers_of", "available", "create"]
