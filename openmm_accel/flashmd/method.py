"""FlashMD as a method of ``openmm-accel run``, ``train`` and ``bench`` (see :mod:`openmm_accel.method`)."""
from __future__ import annotations

from openmm import unit

from ..devices import torch_device
from ..method import Job, Method, Start
from ..learning.model_file import check_recipe, recipe_of
from .config import FlashMDBenchConfig, FlashMDRunConfig, TrainFlashMDConfig
from .integrator import FlashMDIntegrator, Thermostat
from .pretrained import measured_friction, resolve, shipped


class FlashMDTraining(Job):
    help = "learn a long-stride propagator from NVE data of a reference potential"
    Config = TrainFlashMDConfig

    def run(self, config: TrainFlashMDConfig) -> str:
        from .pipeline import run_training
        metadata = run_training(config)
        return (f"wrote {config.output}: stride {metadata['stride_fs']:g} fs, {metadata['samples']} samples of "
                f"{metadata['training']['rollout']} stride(s), data {metadata['data_seconds']:.0f} s, training "
                f"{metadata['training_seconds']:.0f} s, validation loss {metadata['final_validation_loss']:.3f} "
                "(free flight scores 2.0)")


class FlashMDBench(Job):
    help = "FlashMD vs plain dynamics: temperatures per element, structure, drift, ns/day; plots"
    Config = FlashMDBenchConfig

    def run(self, config: FlashMDBenchConfig) -> None:
        from .benchmark import main
        main(config)


class FlashMD(Method):
    name = "flashmd"
    help = ("FlashMD: a learned model predicts positions and momenta a stride ahead, with energy rescaling and a "
            "thermostat by splitting (one step = one stride)")
    Config = FlashMDRunConfig
    brings_timestep = True
    statistics_key = "flashmd"
    output_files = reported_files = ("element_temperatures.csv",)
    train = FlashMDTraining()
    bench = FlashMDBench()

    def default_friction(self, run) -> float:
        return measured_friction(resolve(run.options.flashmd_model, run.system, run.model))

    def prepare(self, run, molecular):
        """The FlashMD model of ``run`` (a file, or the shipped default for its system and potential), refused
        unless it was trained on this system with this reference potential."""
        from .training import open_model
        topology = molecular.topology
        model = open_model(resolve(run.options.flashmd_model, run.system, run.model),
                           [atom.element.atomic_number for atom in topology.atoms()], molecular.masses)
        check_recipe(recipe_of(getattr(model, "metadata", {})), molecular.recipe, "FlashMD model")
        return model.to(torch_device(run.device))

    def load_model(self, path):
        from .training import load
        return None if path is None else load(shipped.find(path))

    def save_model(self, path, model) -> None:
        from .training import save
        save(path, model, model.metadata)

    def integrator(self, run, start: Start):
        thermostat = Thermostat(run.options.thermostat, friction=run.friction_per_ps / unit.picosecond)
        return FlashMDIntegrator(start.prepared, temperature=run.temperature_k * unit.kelvin, thermostat=thermostat,
                                 seed=run.seed, metropolis=run.options.metropolis), start.state

    def reporters(self, run, molecular, paths, integrator) -> list:
        """Every element's kinetic temperature (``element_temperatures.csv``), which a learned map can get wrong
        while the total energy stays right."""
        from ..reporters import ElementTemperatureReporter
        symbols = [atom.element.symbol for atom in molecular.topology.atoms()]
        return [ElementTemperatureReporter(paths["element_temperatures.csv"], run.report_interval, symbols,
                                           molecular.masses, run.temperature_k, integrator.remove_com_motion,
                                           append=run.resume)]

    def progress(self, integrator) -> dict:
        statistics = integrator.statistics
        if integrator.metropolis:
            return {"acceptance": f"{statistics['acceptance_rate']:.2f}"}
        return {"fallbacks": f"{statistics['fallback_fraction']:.2f}"}

    def describe(self, statistics: dict) -> str:
        strides = f"{statistics['strides']:.0f} strides"
        if "acceptance_rate" in statistics:
            line = f"flashmd (Metropolis): {strides}, acceptance {statistics['acceptance_rate']:.3f}"
        else:
            line = (f"flashmd: {strides}, fallback fraction {statistics['fallback_fraction']:.3f}, "
                    f"mean rescaling factor {statistics['mean_rescale_factor']:.4f}")
        temperatures = statistics.get("element_temperatures")
        if temperatures and temperatures["reports"]:
            line += "; T - T_bath per element: " + ", ".join(
                f"{element} {t['deviation_k']:+.1f}" + ("" if t["standard_error_k"] is None else
                                                         f" +- {t['standard_error_k']:.1f}") + " K"
                for element, t in temperatures["elements"].items())
        return line


METHOD = FlashMD()
