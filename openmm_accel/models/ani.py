"""ANI-1x (Smith et al. 2017/2018) from the parameter files that ship inside the torchani 2.2.4 wheel.

``torchani.models.ANI1x()`` tries to download its resources; the wheel already contains the full
8-network ensemble under ``torchani/resources/ani-1x_8x``, so the model is assembled here from those
files with torchani's own NeuroChem readers. Supports H, C, N and O.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..validation import InputError, fail
from .base import EnergyModel
from .registry import atomic_numbers_of

#: kJ/mol per Hartree (CODATA 2018, the value torchani.units uses).
HARTREE_TO_KJ_PER_MOL = 2625.499638755248
ANGSTROM_PER_NM = 10.0
ENSEMBLE_SIZE = 8
_ELEMENTS = {1: "H", 6: "C", 7: "N", 8: "O"}


def resource_dir() -> str:
    """Directory of the bundled ANI-1x files; a clear error if torchani or its files are missing."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("torchani")
    except ImportError:  # pragma: no cover
        spec = None
    if spec is None or spec.origin is None:
        raise InputError("model 'ani1x' needs torchani==2.2.4: pip install torchani==2.2.4")
    path = os.path.join(os.path.dirname(spec.origin), "resources", "ani-1x_8x")
    if not os.path.isfile(os.path.join(path, "sae_linfit.dat")):
        raise InputError(f"ANI-1x parameter files not found at {path}; reinstall torchani==2.2.4")
    return path


@lru_cache(maxsize=None)
def _load_parts(member: Optional[int]):
    """AEV computer, networks (one member or the ensemble) and self energies, read once per process."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchani warns about its optional CUDA extension
        from torchani import AEVComputer, neurochem
    path = resource_dir()
    constants = neurochem.Constants(os.path.join(path, "rHCNO-5.2R_16-3.5A_a4-8.params"))
    shifter = neurochem.load_sae(os.path.join(path, "sae_linfit.dat"))
    if member is None:
        networks = neurochem.load_model_ensemble(constants.species, os.path.join(path, "train"), ENSEMBLE_SIZE)
    else:
        networks = neurochem.load_model(constants.species, os.path.join(path, f"train{member}", "networks"))
    return constants, AEVComputer(**constants), networks, shifter


class ANIModel(EnergyModel):
    """ANI-1x energy model for a fixed list of atoms (batched, TorchScript-able).

    Parameters
    ----------
    atomic_numbers : sequence of int
        Elements of the atoms (H, C, N, O only).
    member : int, optional
        Use only network ``member`` (0-7) of the ensemble: 8x cheaper, a natural speculative draft.
        ``None`` (default) averages all eight networks, the published ANI-1x model.
    periodic : bool
        Apply periodic boundary conditions with the box passed to ``forward``.
    """

    def __init__(self, atomic_numbers: Sequence[int], member: Optional[int] = None, periodic: bool = False):
        super().__init__(len(atomic_numbers), atomic_numbers, periodic)
        unsupported = sorted({z for z in self.atomic_numbers if z not in _ELEMENTS})
        if unsupported:
            raise fail("topology", "only H, C, N and O atoms for ANI-1x", f"atomic numbers {unsupported}")
        if member is not None and not (isinstance(member, int) and 0 <= member < ENSEMBLE_SIZE):
            raise fail("member", f"an integer 0-{ENSEMBLE_SIZE - 1} or None (the ensemble)", member)
        self.member = member
        constants, aev, networks, shifter = _load_parts(member)
        import copy
        self.aev_computer = copy.deepcopy(aev)
        self.networks = copy.deepcopy(networks)
        index = {symbol: i for i, symbol in enumerate(constants.species)}
        self.register_buffer("species", torch.tensor([index[_ELEMENTS[z]] for z in self.atomic_numbers]))
        # Sum of atomic self energies, kept in float64 whatever the networks' dtype.
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.kj_per_hartree = HARTREE_TO_KJ_PER_MOL
        self.offset = float(shifter.self_energies.double()[self.species].sum()) * HARTREE_TO_KJ_PER_MOL

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        batch = positions.shape[0]
        dtype = self.aev_computer.ShfR.dtype
        coordinates = positions.to(dtype) * self.angstrom_per_nm
        species = self.species.unsqueeze(0).expand(batch, -1)
        if self.periodic:
            if box is None:
                raise RuntimeError("ANI-1x: periodic model called without box vectors")
            pbc = torch.ones(3, dtype=torch.bool, device=positions.device)
            energies = []
            for i in range(batch):  # torchani takes one cell per call
                aev = self.aev_computer((species[i:i + 1], coordinates[i:i + 1]),
                                        cell=box[i].to(dtype) * self.angstrom_per_nm, pbc=pbc)
                energies.append(self.networks(aev).energies)
            hartree = torch.cat(energies)
        else:
            hartree = self.networks(self.aev_computer((species, coordinates))).energies
        return hartree.double() * self.kj_per_hartree + self.offset


def create_ani1x(topology, atoms: Optional[Sequence[int]] = None, member: Optional[int] = None,
                 dtype: str = "float32", periodic: bool = False) -> ANIModel:
    """Registered factory for ``models.create("ani1x", topology, ...)``.

    ``atoms`` restricts the model to those topology atoms (an ML region); ``dtype`` is ``"float32"``
    (fast, the default) or ``"float64"`` (for tests and gradient checks).
    """
    model = ANIModel(atomic_numbers_of(topology, atoms), member=member, periodic=periodic)
    if dtype not in ("float32", "float64"):
        raise fail("dtype", "'float32' or 'float64'", dtype)
    return model.to(getattr(torch, dtype))
