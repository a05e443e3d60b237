"""Make the tiny metatrain FlashMD model the adapter tests use (needs metatrain; not run by the tests).

    python tests/data/make_metatrain_flashmd.py [WORKDIR]

Alanine dipeptide in vacuum with amber14: NVE data from OpenMM (openmm_accel.flashmd.training.generate_nve),
pairs 4 fs apart written for metatrain, a deliberately small metatrain ``experimental.flashmd`` model
trained with ``mtt train``, exported to tests/data/metatrain-flashmd-ala2-4fs.pt.
"""
import os
import shutil
import subprocess
import sys
import time

from openmm_accel import systems
from openmm_accel.devices import Placement
from openmm_accel.flashmd.metatomic import write_metatrain_dataset
from openmm_accel.flashmd.training import generate_nve
from openmm_accel.learning.sampling import NVEPlan

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = """\
seed: 0
architecture:
  name: experimental.flashmd
  model:
    cutoff: 5.0
    d_pet: 32
    d_head: 32
    d_node: 64
    d_feedforward: 64
    num_heads: 2
    num_attention_layers: 1
    num_gnn_layers: 1
  training:
    timestep: 4.0
    masses: {MASSES}
    batch_size: 16
    num_epochs: {EPOCHS}
    learning_rate: 1.0e-3
    log_interval: 5
    checkpoint_interval: 1000
base_precision: 32
training_set:
  systems:
    read_from: pairs.xyz
    reader: ase
    length_unit: angstrom
  targets:
    position:
      quantity: position
      read_from: pairs.xyz
      reader: ase
      key: future_positions
      unit: A
      type: {{cartesian: {{rank: 1}}}}
      sample_kind: atom
      num_subtargets: 1
    momentum:
      quantity: momentum
      read_from: pairs.xyz
      reader: ase
      key: future_momenta
      unit: (eV*u)^(1/2)
      type: {{cartesian: {{rank: 1}}}}
      sample_kind: atom
      num_subtargets: 1
validation_set: 0.1
test_set: 0.0
"""


def main(workdir: str, epochs: int = 20) -> None:
    os.makedirs(workdir, exist_ok=True)
    ala2 = systems.load("alanine-dipeptide-vacuum")
    numbers = [a.element.atomic_number for a in ala2.topology.atoms()]
    masses = {z: float(m) for z, m in zip(numbers, ala2.masses)}
    data = generate_nve(ala2.system, ala2.positions, NVEPlan(300.0, segments=20, segment_steps=200, record_every=4,
                                                             decorrelation_steps=1000), Placement("cpu"))
    count = write_metatrain_dataset(os.path.join(workdir, "pairs.xyz"), data, 0.004, numbers)
    with open(os.path.join(workdir, "options.yaml"), "w") as handle:
        handle.write(OPTIONS.format(MASSES=masses, EPOCHS=epochs))
    began = time.perf_counter()
    # metatrain 2026.4.1 exports model.pt, then fails in its final evaluation ("'int' object has no attribute
    # 'lower'": it walks the hypers and meets the integer keys of `masses`), so the exit code is not used
    subprocess.run(["mtt", "train", "options.yaml", "-o", "model.pt"], cwd=workdir)
    if not os.path.isfile(os.path.join(workdir, "model.pt")):
        raise SystemExit("mtt train did not export model.pt")
    print(f"{count} pairs, mtt train took {time.perf_counter() - began:.0f} s")
    shutil.copy(os.path.join(workdir, "model.pt"), os.path.join(HERE, "metatrain-flashmd-ala2-4fs.pt"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "metatrain-flashmd-work")
