"""FlashMD models from the authors' tool chain (metatrain ``experimental.flashmd``, exported in the
metatomic format) inside OpenMM, and OpenMM-generated data for training them with metatrain.

Units: metatomic FlashMD models take and return positions in Angstrom and momenta in (eV u)^(1/2) (ASE's
momentum unit), with masses in u; OpenMM uses nm and amu nm/ps. Since 1 amu nm^2/ps^2 = 1 kJ/mol, a
momentum converts as p[(eV u)^(1/2)] = p[amu nm/ps] / sqrt(kJ/mol per eV).

Optional dependency: ``pip install openmm_accel[metatomic]`` (metatomic-torch and vesin; metatrain itself
only to train models).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..validation import InputError, fail
from .model import FlashMDModel

KJ_PER_MOL_PER_EV = 96.48533212331002
ANGSTROM_PER_NM = 10.0
MOMENTUM_TO_METATOMIC = 1.0 / np.sqrt(KJ_PER_MOL_PER_EV)  # amu nm/ps -> (eV u)^(1/2)


def _require():
    try:
        import metatomic.torch as mta
        from metatensor.torch import Labels, TensorBlock, TensorMap
        from vesin.metatomic import neighbor_lists_for_model
    except ImportError as error:
        raise InputError("metatomic FlashMD models need the optional dependencies: pip install "
                         f"'openmm_accel[metatomic]' ({error})") from None
    return mta, Labels, TensorBlock, TensorMap, neighbor_lists_for_model


class MetatomicFlashMD(FlashMDModel):
    """A metatrain FlashMD model (exported ``.pt``) as a :class:`FlashMDModel` for one system.

    Parameters
    ----------
    path : str
        The exported model file (``mtt export`` / ``mtt train`` output).
    atomic_numbers, masses : sequences
        The System's atoms and masses (amu); masses must equal those the model was trained with.
    stride : float, optional
        ps; read from the model when it records its time step (metatrain stores it), else required.
    """

    rotation_equivariant = False  # PET-based: only approximately equivariant, so rotate at random

    def __init__(self, path: str, atomic_numbers: Sequence[int], masses: Sequence[float],
                 stride: Optional[float] = None, extensions_directory: Optional[str] = None):
        mta, self._Labels, self._TensorBlock, self._TensorMap, neighbor_lists_for_model = _require()
        if not os.path.isfile(path):
            raise fail("path", "an exported metatomic FlashMD model file", path)
        try:
            model = mta.load_atomistic_model(path, extensions_directory=extensions_directory)
        except Exception as error:
            raise fail("path", "a metatomic model exported by metatrain", f"{path} ({error})") from None
        capabilities = model.capabilities()
        outputs = set(capabilities.outputs.keys())
        if not {"position", "momentum"} <= outputs:
            raise fail("path", "a FlashMD model (outputs 'position' and 'momentum')",
                       f"a model with outputs {sorted(outputs)}")
        recorded_stride, recorded_masses = self._recorded(model)
        if stride is None:
            if recorded_stride is None:
                raise fail("stride", "the model's stride (it does not record one)", None)
            stride = recorded_stride
        elif recorded_stride is not None and abs(stride - recorded_stride) > 1e-9 * stride:
            raise fail("stride", f"the model's stride ({recorded_stride * 1000:g} fs)", f"{stride * 1000:g} fs")
        super().__init__(stride, masses, atomic_numbers)
        unsupported = sorted(set(self.atomic_numbers) - set(int(t) for t in capabilities.atomic_types))
        if unsupported:
            raise fail("atomic_numbers", f"elements the model knows ({sorted(capabilities.atomic_types)})",
                       f"also {unsupported}")
        if recorded_masses is not None:
            expected = np.array([recorded_masses[z] for z in self.atomic_numbers])
            bad = np.flatnonzero(~np.isclose(expected, np.asarray(masses, dtype=float), rtol=1e-4))
            if len(bad):
                raise fail("masses", "the masses the model was trained with "
                           f"({ {z: recorded_masses[z] for z in sorted(set(self.atomic_numbers))} })",
                           f"different masses at particles {bad[:5].tolist()}")
        self.model = model
        self.dtype = getattr(torch, capabilities.dtype)
        self.length_unit = capabilities.length_unit
        if self.length_unit.lower() not in ("angstrom", "a"):
            raise fail("path", "a model in Angstrom (as metatrain exports FlashMD)", self.length_unit)
        self._neighbors = neighbor_lists_for_model("angstrom", model)
        self._outputs = {name: mta.ModelOutput(quantity=capabilities.outputs[name].quantity,
                                               unit=capabilities.outputs[name].unit, sample_kind="atom")
                         for name in ("position", "momentum")}
        self._evaluation = mta.ModelEvaluationOptions(length_unit="angstrom", outputs=self._outputs)
        self._mta = mta

    @staticmethod
    def _recorded(model) -> Tuple[Optional[float], Optional[dict]]:
        """(stride in ps, {Z: mass}) as metatrain's FlashMD stores them (buffers ``timestep`` in fs, ``masses``)."""
        module = getattr(model, "module", model)
        stride = masses = None
        try:
            timestep = float(module.timestep)
            stride = timestep * 1e-3 if np.isfinite(timestep) and timestep > 0 else None
        except Exception:
            pass
        try:
            table = module.masses.detach().cpu().numpy()
            masses = {z: float(m) for z, m in enumerate(table) if np.isfinite(m)}
        except Exception:
            pass
        return stride, masses

    def _system(self, x: Tensor, p: Tensor, box: Optional[Tensor]):
        Labels, TensorBlock, TensorMap = self._Labels, self._TensorBlock, self._TensorMap
        n = x.shape[0]
        cell = torch.zeros(3, 3, dtype=self.dtype) if box is None else (box * ANGSTROM_PER_NM).to(self.dtype)
        system = self._mta.System(types=torch.tensor(self.atomic_numbers, dtype=torch.int32),
                                  positions=(x * ANGSTROM_PER_NM).to(self.dtype), cell=cell,
                                  pbc=torch.tensor([box is not None] * 3))
        samples = Labels(["system", "atom"], torch.tensor([[0, a] for a in range(n)], dtype=torch.int32))
        xyz = [Labels(["xyz"], torch.arange(3, dtype=torch.int32).reshape(-1, 1))]

        def per_atom(values: Tensor, name: str, components):
            block = TensorBlock(values=values.to(self.dtype), samples=samples, components=components,
                                properties=Labels(name, torch.tensor([[0]], dtype=torch.int32)))
            return TensorMap(keys=Labels(["_"], torch.tensor([[0]], dtype=torch.int32)), blocks=[block])

        system.add_data("momentum", per_atom((p * MOMENTUM_TO_METATOMIC).unsqueeze(-1), "momentum", xyz))
        system.add_data("mass", per_atom(self.masses.unsqueeze(-1), "mass", []))
        for calculator in self._neighbors:
            calculator.add_neighbor_list([system])  # vesin: one system at a time
        return system

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        systems = [self._system(positions[b].double(), momenta[b].double(), None if box is None else box[b].double())
                   for b in range(positions.shape[0])]
        result = self.model(systems, self._evaluation, check_consistency=False)
        x = result["position"].block().values.reshape(len(systems), -1, 3).double() / ANGSTROM_PER_NM
        p = result["momentum"].block().values.reshape(len(systems), -1, 3).double() / MOMENTUM_TO_METATOMIC
        return x, p


def write_metatrain_dataset(path: str, data, stride: float, atomic_numbers: Sequence[int]) -> int:
    """Write the pairs of :class:`~openmm_accel.flashmd.training.Trajectories` one ``stride`` apart (with
    time reversals) as extended XYZ for metatrain: ``momenta``, ``future_positions`` and ``future_momenta``
    per atom, in Angstrom and (eV u)^(1/2). Returns the number of structures written."""
    try:
        import ase
        import ase.io
    except ImportError:
        raise InputError("writing metatrain data needs ase (pip install ase, or metatrain)") from None
    x0, p0, x1, p1, _, _ = data.pairs(stride)
    frames = []
    for a, b, c, d in zip(x0, p0, x1, p1):
        atoms = ase.Atoms(numbers=list(atomic_numbers), positions=a * ANGSTROM_PER_NM,
                          cell=None if data.box is None else np.asarray(data.box) * ANGSTROM_PER_NM,
                          pbc=data.box is not None)
        atoms.arrays["momenta"] = b * MOMENTUM_TO_METATOMIC
        atoms.arrays["future_positions"] = c * ANGSTROM_PER_NM
        atoms.arrays["future_momenta"] = d * MOMENTUM_TO_METATOMIC
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return len(frames)
