"""Independent constrained molecules in harmonic wells: test systems for integrators with constraints.

Each molecule is a heavy atom (12 amu) with two light ones (1 amu) held at 0.1 nm by distance
constraints; every atom sits in its own harmonic well (wells placed so the constraints fit them), so
molecules vibrate, rotate and bend. Even-numbered molecules have two constraints (the light atoms share
the heavy one: a coupled cluster), odd-numbered ones a third, light-light constraint (a rigid triangle,
like rigid water). Molecules do not interact: each is an independent replica for statistics.
"""
import numpy as np
import openmm
import torch

from openmm_accel.models.base import EnergyModel

BOND = 0.1  # nm
WELL = 1000.0  # kJ/mol/nm^2
MASSES = (12.0, 1.0, 1.0)
_ANGLE = np.deg2rad(109.5)
SITES = np.array([[0.0, 0.0, 0.0], [BOND, 0.0, 0.0], [BOND * np.cos(_ANGLE), BOND * np.sin(_ANGLE), 0.0]])
SPACING = 1.0  # nm between molecules (they do not interact anyway)


def anchors(n_molecules: int) -> np.ndarray:
    """Well centres (3 n, 3): the sites of each molecule, molecules spaced along x."""
    return np.concatenate([SITES + [SPACING * m, 0.0, 0.0] for m in range(n_molecules)])


def constraint_pairs(n_molecules: int):
    """(i, j, length) of every constraint."""
    pairs = []
    for m in range(n_molecules):
        c, h1, h2 = 3 * m, 3 * m + 1, 3 * m + 2
        pairs += [(c, h1, BOND), (c, h2, BOND)]
        if m % 2:
            pairs.append((h1, h2, float(np.linalg.norm(SITES[1] - SITES[2]))))
    return pairs


def rigid_molecules(n_molecules: int, well=WELL) -> openmm.System:
    """The System: wells as one CustomExternalForce, the constraints, no other force."""
    system = openmm.System()
    force = openmm.CustomExternalForce(f"0.5*{well!r}*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    for index, site in enumerate(anchors(n_molecules)):
        system.addParticle(MASSES[index % 3])
        force.addParticle(index, list(site))
    system.addForce(force)
    for i, j, length in constraint_pairs(n_molecules):
        system.addConstraint(i, j, length)
    return system


class WellModel(EnergyModel):
    """The wells of :func:`rigid_molecules` as a torch model, plus an optional bond spring
    ``bond_k/2 (|r| - bond_rest)^2`` on every heavy-light pair: a force purely along the constraints."""

    def __init__(self, n_molecules: int, well=WELL, bond_k=0.0, bond_rest=BOND):
        super().__init__(3 * n_molecules)
        self.well, self.bond_k, self.bond_rest = float(well), float(bond_k), float(bond_rest)
        self.register_buffer("anchors", torch.tensor(anchors(n_molecules), dtype=torch.float64))

    def forward(self, positions, box=None):
        self.check_batch(positions)
        x = positions.to(torch.float64)
        energy = 0.5 * self.well * ((x - self.anchors) ** 2).sum(dim=(1, 2))
        if self.bond_k:
            heavy = x[:, 0::3]
            for light in (x[:, 1::3], x[:, 2::3]):
                length = torch.linalg.norm(light - heavy, dim=-1)
                energy = energy + 0.5 * self.bond_k * ((length - self.bond_rest) ** 2).sum(dim=1)
        return energy


def trajectory(integrator, n_molecules: int, steps: int, seed: int, equilibration: int = 200):
    """Positions and velocities (steps, 3 n, 3) after ``equilibration`` steps from the wells' centres,
    velocities drawn with ``seed`` (the integrator's own seed is the caller's)."""
    context = openmm.Context(rigid_molecules(n_molecules), integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(anchors(n_molecules))
    context.applyConstraints(1e-12)
    context.setVelocitiesToTemperature(300.0, seed)
    context.applyVelocityConstraints(1e-12)
    integrator.step(equilibration)
    xs, vs = [], []
    for _ in range(steps):
        integrator.step(1)
        state = context.getState(getPositions=True, getVelocities=True)
        xs.append(state.getPositions(asNumpy=True)._value)
        vs.append(state.getVelocities(asNumpy=True)._value)
    return np.array(xs), np.array(vs)


def observables(xs, vs, well=WELL):
    """Per-molecule time averages (molecules, ) by name: potential and kinetic energy, lag-1 velocity
    autocovariance, and the light-heavy-light angle's cosine (flexible molecules only: rigid ones have
    a fixed angle)."""
    frames, n_atoms = xs.shape[:2]
    per_molecule = lambda values: values.reshape(values.shape[0], n_atoms // 3, 3).sum(axis=-1)  # noqa: E731
    masses = np.tile(MASSES, n_atoms // 3)
    heavy, one, two = xs[:, 0::3], xs[:, 1::3], xs[:, 2::3]
    cosine = np.einsum("tmd,tmd->tm", one - heavy, two - heavy) / (
        np.linalg.norm(one - heavy, axis=-1) * np.linalg.norm(two - heavy, axis=-1))
    return {"potential energy": per_molecule(0.5 * well * ((xs - anchors(n_atoms // 3)) ** 2).sum(-1)).mean(0),
            "kinetic energy": per_molecule(0.5 * masses * (vs**2).sum(-1)).mean(0),
            "velocity lag-1 covariance": per_molecule((vs[1:] * vs[:-1]).sum(-1)).mean(0),
            "angle cosine": np.where(np.arange(n_atoms // 3) % 2, np.nan, cosine.mean(0))}


def two_sample_z(first, second):
    """z of the difference of per-molecule means, per observable and molecule kind (flexible, rigid):
    standard errors from the spread across molecules of one kind (independent replicas)."""
    out = {}
    for name in first:
        for kind, label in enumerate(("flexible", "rigid")):
            a, b = first[name][kind::2], second[name][kind::2]
            if np.isnan(a).any():
                continue
            out[f"{name} ({label})"] = (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return out


def max_violation(xs, n_molecules: int) -> float:
    """Largest relative constraint violation over all frames."""
    pairs = np.array([(i, j) for i, j, _ in constraint_pairs(n_molecules)])
    lengths = np.array([d for _, _, d in constraint_pairs(n_molecules)])
    actual = np.linalg.norm(xs[:, pairs[:, 0]] - xs[:, pairs[:, 1]], axis=-1)
    return float(np.max(np.abs(actual / lengths - 1)))
