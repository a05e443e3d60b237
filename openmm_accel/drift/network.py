"""The one-step generator of drifting: ``x = g(z)``, Gaussian noise to a conformation in one forward pass."""
from __future__ import annotations

from torch import Tensor, nn

from .features import centred


class Generator(nn.Module):
    """Conformations of ``N`` atoms in the data's aligned frame (normalised units) from noise ``z`` (B, 3N):
    the reference structure plus an MLP of ``z``, centred. Atoms are labelled (the output has a fixed atom
    order, as the data do), so no permutation symmetry is imposed; the aligned frame removes rotations."""

    def __init__(self, reference: Tensor, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.atoms, self.hidden, self.layers_count = reference.shape[0], hidden, layers
        self.latent = 3 * self.atoms
        sizes = [self.latent] + [hidden] * layers
        blocks = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.output = nn.Linear(hidden, self.latent)
        nn.init.zeros_(self.output.bias)
        self.register_buffer("reference", reference.clone())

    def config(self) -> dict:
        return {"atoms": self.atoms, "hidden": self.hidden, "layers": self.layers_count}

    def forward(self, z: Tensor) -> Tensor:
        z = z.to(self.reference.dtype)
        return centred(self.reference + self.output(self.body(z)).reshape(-1, self.atoms, 3))
