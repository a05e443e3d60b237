"""openmm_accel: machine-learning acceleration of molecular dynamics inside OpenMM."""
import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
version = {}
with open(os.path.join(here, "openmm_accel", "_version.py")) as handle:
    exec(handle.read(), version)

install_requires = [
    # 8.5 introduced openmm.PythonForce, the no-TorchScript route of forces.to_openmm_force.
    "openmm>=8.5,<9",
    # 1.5 is the newest released TorchForce; it breaks with torch >= 2.10 ("set_stride is not allowed on a
    # Tensor created from .data") and its wheel links the CUDA 12 libraries that torch 2.9 brings.
    "openmmtorch==1.5",
    # Held below 2.10 by openmmtorch 1.5 (above). The PyPI wheel is a CUDA 12.8 build that also runs on CPU.
    "torch>=2.9,<2.10",
    # The last torchani whose wheel ships the ANI-1x 8-network parameter files (models/ani.py builds the
    # model from them offline); newer releases download parameters at run time.
    "torchani==2.2.4",
    # torchani 2.2.4 imports pkg_resources, which setuptools 80 dropped from the default install path.
    "setuptools<80",
    # Ships the alanine-dipeptide structure used by openmm_accel.systems.
    "openmmtools>=0.23",
    "mdtraj>=1.9.9",
    # Builds capped dipeptides other than alanine by mutation (systems.capped_dipeptide); openmmtools needs it too.
    "pdbfixer>=1.9",
    # Reads Amber topologies in the format before Amber 7, which OpenMM does not (structures.py), e.g. the
    # trpzip2 files openmmtools ships.
    "parmed>=4",
    # timeseries.statistical_inefficiency: the standard errors of correlated samples (analysis.py)
    "pymbar>=4",
    "numpy>=1.24",
    "scipy>=1.10",
    "tqdm>=4.60",
    "matplotlib>=3.6",
]

setup(
    name="openmm_accel",
    version=version["__version__"],
    description=__doc__,
    long_description=open(os.path.join(here, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # cuda_kernels: the Triton kernels the package runs on CUDA tensors (their torch references are in openmm_accel)
    packages=find_packages(include=["openmm_accel", "openmm_accel.*", "cuda_kernels"]),
    # pretrained FlashMD models made by `openmm-accel train flashmd` (commands in their metadata)
    package_data={"openmm_accel": ["data/flashmd/*.pt", "data/score/*.npz", "data/drift/*.npz"]},
    install_requires=install_requires,
    extras_require={
        # NVIDIA GPUs: OpenMM's CUDA platform and openmm-torch's CUDA kernels for the pinned versions, built for
        # CUDA 12 like the torch 2.9 wheel (openmm-accel doctor checks what loaded).
        "cuda": ["openmm[cuda12]>=8.5,<9", "openmmtorch[cuda12]==1.5"],
        # Ray drives the distributed speculative scheduler (later issue); not needed for the core.
        "ray": ["ray>=2.40"],
        # FlashMD models exported by metatrain (flashmd/metatomic.py); 0.1.17 is what metatrain 2026.4 needs.
        # Their wheels work with torch 2.9; metatrain itself (and ase) only for training such models.
        "metatomic": ["metatomic-torch>=0.1.17,<0.2", "vesin>=0.6.1,<0.7"],
        # MACE potentials from local model files (models/mace.py); 0.3.16 runs on torch 2.9 (e3nn 0.4.4)
        "mace": ["mace-torch==0.3.16"],
        # openmm-ml: openmmml.MLPotential("ani1x") finds the package's ANI-1x (openmmml_plugin.py)
        "openmmml": ["openmmml==1.8"],
        # wheel: the packaging test builds the wheel without build isolation (no download)
        # pytest-xdist: make test runs two workers (4.6 instead of 8.4 minutes on 2 cores)
        "test": ["pytest>=7", "pytest-xdist>=3", "wheel", "ray>=2.40", "metatomic-torch>=0.1.17,<0.2",
                 "vesin>=0.6.1,<0.7", "mace-torch==0.3.16", "openmmml==1.8"],
    },
    entry_points={
        "console_scripts": ["openmm-accel = openmm_accel.cli:main"],
        # Energy models by name (models.create); other packages may add their own in this group.
        "openmm_accel.models": [
            "ani1x = openmm_accel.models.ani:create_ani1x",
            "ani1ccx = openmm_accel.models.ani:create_ani1ccx",
            "ani2x = openmm_accel.models.ani:create_ani2x",
            "amber14 = openmm_accel.models.classical:create_amber14",
            "amber99sbildn = openmm_accel.models.classical:create_amber99sbildn",
            "harmonic = openmm_accel.models.analytic:create_harmonic",
            "double_well = openmm_accel.models.analytic:create_double_well",
        ],
        # openmm-ml's own group: the potentials openmm-ml lacks (its ani2x, ani1ccx and mace stay its own)
        "openmmml.potentials": [
            "ani1x = openmm_accel.openmmml_plugin:PotentialImplFactory",
        ],
        # Sources of systems named PREFIX:REST (systems.load, --system); other packages may add their own.
        "openmm_accel.sources": [
            "openmmtools = openmm_accel.systems:openmmtools_system",
        ],
        # Methods of `openmm-accel run/train/bench --method NAME` (openmm_accel.method); other packages may
        # add their own in this group.
        "openmm_accel.methods": [
            "plain = openmm_accel.integrators.plain:METHOD",
            "lsd = openmm_accel.speculative.method:METHOD",
            "flashmd = openmm_accel.flashmd.method:METHOD",
            "score = openmm_accel.score.method:METHOD",
            "drift = openmm_accel.drift.method:METHOD",
        ],
    },
)
