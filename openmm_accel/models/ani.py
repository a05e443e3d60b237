"""ANI-1x and ANI-1ccx (Smith et al. 2018, 2019; H, C, N, O) and ANI-2x (Devereux et al. 2020; H, C, N, O,
S, F, Cl) from the parameter files that ship inside the torchani 2.2.4 wheel.

``torchani.models.ANI1x()`` and its siblings may download their resources; the wheel already contains each
full 8-network ensemble under ``torchani/resources/``, so the models are assembled here from those files
with torchani's own NeuroChem readers, offline.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import torch
from openmm import app
from torch import Tensor, nn

from ..validation import InputError, fail
from .base import EnergyModel
from .registry import atomic_numbers_of

#: kJ/mol per Hartree (CODATA 2018, the value torchani.units uses).
HARTREE_TO_KJ_PER_MOL = 2625.499638755248
ANGSTROM_PER_NM = 10.0
ENSEMBLE_SIZE = 8


@dataclass(frozen=True)
class Flavour:
    """One ANI model: its display name, the folder and AEV constants of its files in torchani's resources."""

    title: str
    folder: str
    constants: str


#: The ANI models the wheel ships, by registered name.
FLAVOURS = {"ani1x": Flavour("ANI-1x", "ani-1x_8x", "rHCNO-5.2R_16-3.5A_a4-8.params"),
            "ani1ccx": Flavour("ANI-1ccx", "ani-1ccx_8x", "rHCNO-5.2R_16-3.5A_a4-8.params"),
            "ani2x": Flavour("ANI-2x", "ani-2x_8x", "rHCNOSFCl-5.1R_16-3.5A_a8-4.params")}


#: A folder holding NeuroChem resource folders (``ani-2x_8x``, ...) to use instead of torchani's own.
RESOURCES_VARIABLE = "OPENMM_ACCEL_ANI_RESOURCES"


def resource_dir(name: str = "ani1x") -> str:
    """Directory of the parameter files of ANI model ``name``: in ``$OPENMM_ACCEL_ANI_RESOURCES`` if set,
    else in torchani's wheel. The torchani 2.2.4 wheel ships ANI-1x complete but the ANI-1ccx and ANI-2x
    files as empty placeholders (0 bytes), which are refused with what to do."""
    flavour = FLAVOURS[name]
    root = os.environ.get(RESOURCES_VARIABLE)
    if root is None:
        import importlib.util
        spec = importlib.util.find_spec("torchani")
        if spec is None or spec.origin is None:
            raise InputError(f"model {name!r} needs torchani==2.2.4: pip install torchani==2.2.4")
        root = os.path.join(os.path.dirname(spec.origin), "resources")
    path = os.path.join(root, flavour.folder)
    needed = [os.path.join(path, "sae_linfit.dat"), os.path.join(path, flavour.constants)]
    if not all(os.path.isfile(f) and os.path.getsize(f) > 0 for f in needed):
        found = "empty placeholders" if all(os.path.isfile(f) for f in needed) else "missing"
        raise InputError(f"model: expected the {flavour.title} parameter files (NeuroChem, 8 networks) in {path}, "
                         f"got {found} (torchani 2.2.4 ships only ANI-1x's); put a complete {flavour.folder} "
                         f"folder in a directory and set {RESOURCES_VARIABLE} to it")
    return path


@lru_cache(maxsize=None)
def _load_parts(path: str, constants_file: str, member: Optional[int]):
    """AEV computer, networks (one member or the ensemble) and self energies of the ANI model in ``path``,
    read once per process."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchani warns about its optional CUDA extension
        from torchani import AEVComputer, neurochem
    constants = neurochem.Constants(os.path.join(path, constants_file))
    shifter = neurochem.load_sae(os.path.join(path, "sae_linfit.dat"))
    if member is None:
        networks = neurochem.load_model_ensemble(constants.species, os.path.join(path, "train"), ENSEMBLE_SIZE)
    else:
        networks = neurochem.load_model(constants.species, os.path.join(path, f"train{member}", "networks"))
    return constants, AEVComputer(**constants), networks, shifter


class StackedLinear(nn.Module):
    """``K`` linear layers of the same shape evaluated together: ``(K or 1, M, in) -> (K, M, out)``."""

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers])[:, None, :].contiguous())

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x.expand(self.weight.shape[0], -1, -1), self.weight)


class ElementNetworks(nn.Module):
    """One element's networks of all ensemble members, stacked layer by layer, for that element's atoms of a
    fixed molecule: each layer is one batched matrix product over members and atoms."""

    def __init__(self, sequentials: Sequence[nn.Sequential], atoms: Sequence[int]):
        super().__init__()
        shapes = {tuple(type(m).__name__ + str(getattr(m, "weight", torch.empty(0)).shape) for m in s)
                  for s in sequentials}
        if len(shapes) != 1:
            raise ValueError("ensemble members with different architectures cannot be stacked")
        stages = []
        for position, module in enumerate(sequentials[0]):
            stages.append(StackedLinear([s[position] for s in sequentials]) if isinstance(module, nn.Linear)
                          else copy.deepcopy(module))  # the activation (CELU), the same for every member
        self.stages = nn.Sequential(*stages)
        self.register_buffer("atoms", torch.as_tensor(list(atoms), dtype=torch.long))

    def forward(self, aev: Tensor) -> Tensor:
        """``aev`` (B, N, D) -> summed atomic energies of this element, per member ``(K, B)``."""
        batch = aev.shape[0]
        x = aev.index_select(1, self.atoms).reshape(1, -1, aev.shape[2])
        return self.stages(x).reshape(-1, batch, self.atoms.shape[0]).sum(2)


class FusedEnsemble(nn.Module):
    """torchani's per-member, per-element networks for a fixed molecule, fused: the members' weights stacked
    so that each layer of each element is one ``baddbmm`` (4 elements x 4 layers of products instead of
    8 members x 4 elements x 4 layers); the same energies (mean over members, Hartree) as the modules."""

    def __init__(self, networks, species: Tensor, names: Sequence[str]):
        super().__init__()
        members = list(networks) if isinstance(networks, nn.ModuleList) else [networks]
        self.elements = nn.ModuleList([
            ElementNetworks([member[name] for member in members], torch.nonzero(species == index).flatten().tolist())
            for index, name in enumerate(names) if bool((species == index).any())])

    def forward(self, aev: Tensor) -> Tensor:
        total = torch.zeros(1, dtype=aev.dtype, device=aev.device)
        for element in self.elements:
            total = total + element(aev)
        return total.mean(0)


class ModuleEnsemble(nn.Module):
    """torchani's network modules (one member or the ensemble) for a fixed molecule, called like
    :class:`FusedEnsemble`: AEVs ``(B, N, D)`` -> energies ``(B,)`` (Hartree)."""

    def __init__(self, networks, species: Tensor):
        super().__init__()
        self.members = networks
        self.register_buffer("species", species.clone())

    def forward(self, aev: Tensor) -> Tensor:
        return self.members((self.species.unsqueeze(0).expand(aev.shape[0], -1), aev)).energies


class ANIModel(EnergyModel):
    """An ANI energy model (ANI-1x by default; ``name``: a key of :data:`FLAVOURS`) for a fixed list of atoms
    (batched, TorchScript-able).

    Parameters
    ----------
    atomic_numbers : sequence of int
        Elements of the atoms (H, C, N, O only).
    member : int, optional
        Use only network ``member`` (0-7) of the ensemble: 8x cheaper, a natural speculative draft.
        ``None`` (default) averages all eight networks, the published ANI-1x model.
    periodic : bool
        Apply periodic boundary conditions with the box passed to ``forward``.
    fused : bool, optional
        Evaluate the networks as :class:`FusedEnsemble` (the same energies) instead of torchani's modules
        (what openmm-ml builds, the baseline of ``bench models``). Default: fused for the ensemble (1.7x
        faster at batch 1 on a CPU), the modules for one member (nothing to stack; they are faster there).
    """

    def __init__(self, atomic_numbers: Sequence[int], member: Optional[int] = None, periodic: bool = False,
                 fused: Optional[bool] = None, name: str = "ani1x"):
        super().__init__(len(atomic_numbers), atomic_numbers, periodic)
        if name not in FLAVOURS:
            raise fail("name", f"one of {', '.join(FLAVOURS)}", name)
        if member is not None and not (isinstance(member, int) and 0 <= member < ENSEMBLE_SIZE):
            raise fail("member", f"an integer 0-{ENSEMBLE_SIZE - 1} or None (the ensemble)", member)
        self.member, self.flavour = member, name
        constants, aev, networks, shifter = _load_parts(resource_dir(name), FLAVOURS[name].constants, member)
        title = FLAVOURS[name].title
        symbols = [app.element.Element.getByAtomicNumber(z).symbol for z in self.atomic_numbers]
        unsupported = sorted(set(symbols) - set(constants.species))
        if unsupported:
            raise fail("model", f"a potential for every element of its atoms ({title}: "
                       f"{', '.join(constants.species)})", f"{title} on atoms with {', '.join(unsupported)}")
        self.aev_computer = copy.deepcopy(aev)
        index = {symbol: i for i, symbol in enumerate(constants.species)}
        self.register_buffer("species", torch.tensor([index[symbol] for symbol in symbols]))
        if fused is None:
            fused = member is None
        if not isinstance(fused, bool):
            raise fail("fused", "True, False or None (fused for the ensemble only)", fused)
        self.fused = fused
        self.networks = (FusedEnsemble(networks, self.species, constants.species) if fused  # stacks copies
                         else ModuleEnsemble(copy.deepcopy(networks), self.species))
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
                raise RuntimeError("ANI: periodic model called without box vectors")
            pbc = torch.ones(3, dtype=torch.bool, device=positions.device)
            aevs = []
            for i in range(batch):  # torchani takes one cell per call
                aevs.append(self.aev_computer((species[i:i + 1], coordinates[i:i + 1]),
                                              cell=box[i].to(dtype) * self.angstrom_per_nm, pbc=pbc).aevs)
            aev = torch.cat(aevs)
        else:
            aev = self.aev_computer((species, coordinates)).aevs
        hartree = self.networks(aev)
        return hartree.double() * self.kj_per_hartree + self.offset


def _factory(name: str):
    def create(topology, atoms: Optional[Sequence[int]] = None, member: Optional[int] = None,
               dtype: str = "float32", periodic: bool = False, fused: Optional[bool] = None) -> ANIModel:
        if dtype not in ("float32", "float64"):
            raise fail("dtype", "'float32' or 'float64'", dtype)
        model = ANIModel(atomic_numbers_of(topology, atoms), member=member, periodic=periodic, fused=fused,
                         name=name)
        return model.to(getattr(torch, dtype))
    create.__name__ = f"create_{name}"
    create.__doc__ = f"""Registered factory for ``models.create("{name}", topology, ...)`` ({FLAVOURS[name].title}).

    ``atoms`` restricts the model to those topology atoms (an ML region); ``dtype`` is ``"float32"``
    (fast, the default) or ``"float64"`` (for tests and gradient checks); ``fused``: stacked networks
    (default for the ensemble) or torchani's modules (``False``; default for one member)."""
    return create


create_ani1x = _factory("ani1x")
create_ani1ccx = _factory("ani1ccx")
create_ani2x = _factory("ani2x")
