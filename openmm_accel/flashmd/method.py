"""FlashMD as a method of ``openmm-accel run``, ``train`` and ``bench`` (see :mod:`openmm_accel.method`)."""
from __future__ import annotations

from dataclasses import fields

from openmm import unit

from ..method import Command, Method, Option, positive_in
from ..threads import use_torch_threads
from ..validation import fail
from .benchmark import main as benchmark
from .integrator import FlashMDIntegrator
from .pipeline import TrainFlashMDConfig, run_training
from .pretrained import PAPER_FRICTION_PER_PS, measured_friction, resolve
from .training import open_model

OPTIONS = (
    Option("flashmd_model", "--flashmd-model", None, "model file from 'openmm-accel train flashmd', or a shipped "
           "model's name (default: the shipped model for --system and --model)"),
    Option("thermostat", "--thermostat", "langevin", "Langevin (BAOAB-like splitting) or stochastic velocity "
           "rescaling", choices=("langevin", "svr")),
)


def opened_model(config, setup):
    """The FlashMD model of ``config`` (a file, or the shipped default for its system and potential), refused
    unless it was trained on this system with this reference potential."""
    topology = setup.molecular.topology
    model = open_model(resolve(config.flashmd_model, config.system, config.model),
                       [atom.element.atomic_number for atom in topology.atoms()], setup.molecular.masses)
    for option, key, what in (("model", "reference", "reference potential"), ("system", "system", "system")):
        trained = getattr(model, "metadata", {}).get(key)
        if trained is not None and trained != getattr(config, option):
            raise fail(option, f"the {what} the FlashMD model was trained on ({trained!r})", getattr(config, option))
    return model


def build(config, setup, state, platform, model, paths):
    return FlashMDIntegrator(model, temperature=config.temperature_k * unit.kelvin, thermostat=config.thermostat,
                             friction=config.friction_per_ps / unit.picosecond, seed=config.seed), state


def describe(stats: dict) -> str:
    return (f"flashmd: {stats['strides']:.0f} strides, fallback fraction {stats['fallback_fraction']:.3f}, "
            f"mean rescaling factor {stats['mean_rescale_factor']:.4f}")


_d = TrainFlashMDConfig()
TRAIN_OPTIONS = (
    Option("system", "--system", _d.system, "standard system to learn"),
    Option("model", "--model", _d.model, "reference potential: 'mm' or a registered ML model"),
    Option("member", "--member", _d.member, "single ANI-1x network 0-7 as the reference", type=int),
    Option("hydrogen_mass_amu", "--hydrogen-mass", None, "hydrogen mass repartitioning, amu", type=float),
    Option("stride_fs", "--stride", _d.stride_fs, "fs", type=float),
    Option("temperature_k", "--temperature", _d.temperature_k, "K", type=float),
    Option("segments", "--segments", _d.segments, "independent NVE segments", type=int),
    Option("segment_steps", "--segment-steps", _d.segment_steps, "Verlet steps per segment", type=int),
    Option("record_every", "--record-every", _d.record_every, type=int),
    Option("timestep_fs", "--timestep", _d.timestep_fs, "Verlet step, fs", type=float),
    Option("decorrelation_steps", "--decorrelation-steps", _d.decorrelation_steps,
           "Langevin steps before each segment", type=int),
    Option("starts", "--starts", None, "trajectory of the system (e.g. a long MM run's DCD) whose frames, spread "
           "over the segments, start them: data covering its conformations"),
    Option("epochs", "--epochs", _d.epochs, type=int),
    Option("batch_size", "--batch-size", _d.batch_size, type=int),
    Option("learning_rate", "--learning-rate", _d.learning_rate, type=float),
    Option("energy_weight", "--energy-weight", _d.energy_weight, "weight of the energy-conservation loss "
           "((K' + V(q') - H) / N kT)^2 (0: off)", type=float),
    Option("kinetic_weight", "--kinetic-weight", _d.kinetic_weight, "weight of the per-element kinetic energy loss "
           "sum_e <(K_e' - K_e) / N_e kT>^2 (batch mean; 0: off), against the shrinkage of hard-to-predict momenta "
           "that leaves elements at unequal temperatures", type=float),
    Option("hidden", "--hidden", _d.hidden, type=int),
    Option("layers", "--layers", _d.layers, type=int),
    Option("cutoff_nm", "--cutoff", _d.cutoff_nm, "message-passing cutoff, nm", type=float),
    Option("force_inputs", "--no-force-inputs", True, "a model of positions and momenta only (by default it also "
           "sees the reference forces, which the energy rescaling evaluates anyway)", action="store_false"),
    Option("input_noise_nm", "--input-noise", _d.input_noise_nm, "nm: train on inputs displaced by this RMS "
           "(hydrogen; heavier atoms by sqrt(m_H/m)), with the reference forces recomputed there, so that the "
           "model corrects its own errors in a closed loop (about its one-stride hydrogen position error; 0: off)",
           type=float),
    Option("rollout", "--rollout", _d.rollout, "strides per training sample, each from the model's previous "
           "prediction (1: one-stride pairs); penalises errors that compound", type=int),
    Option("ema_decay", "--ema", None, "keep and save an exponential moving average of the weights with this "
           "decay per step (e.g. 0.999; validation scores the average)", type=float),
    Option("output", "--output", _d.output, "model file"),
    Option("resume", "--resume", False, "reuse OUTPUT.data.npz and OUTPUT.train.chk", action="store_true"),
    Option("overwrite", "--overwrite", False, "replace an earlier model, data and training checkpoint at OUTPUT "
           "(without it, or --resume, they are refused)", action="store_true"),
    Option("seed", "--seed", _d.seed, type=int),
    Option("threads", "--threads", 2, "torch intra-op threads", type=int),
    Option("progress", "--no-progress", None, action="store_false"),
)


def _train(args) -> str:
    use_torch_threads(args.threads)
    names = {field.name for field in fields(TrainFlashMDConfig)}
    metadata = run_training(TrainFlashMDConfig(**{option.name: getattr(args, option.name) for option in TRAIN_OPTIONS
                                                  if option.name in names}))
    return (f"wrote {args.output}: stride {metadata['stride_fs']:g} fs, {metadata['samples']} samples of "
            f"{metadata['training']['rollout']} stride(s), data {metadata['data_seconds']:.0f} s, training "
            f"{metadata['training_seconds']:.0f} s, validation loss {metadata['final_validation_loss']:.3f} "
            "(free flight scores 2.0)")


def _bench(args) -> None:
    benchmark(json_path=args.json, models=args.models, duration_ps=args.duration, nve_ps=args.nve_duration,
              quick=args.quick, threads=args.threads[0], reference_ps=args.reference_duration,
              friction_per_ps=args.friction)


BENCH = Command(
    help="FlashMD vs plain dynamics: temperatures per element, structure, drift, ns/day; plots",
    options=(Option("quick", "--quick", False, "a smoke run", action="store_true"),
             Option("models", "--models", None, "model files or shipped names (default: all shipped models)",
                    nargs="+"),
             Option("duration", "--duration", 10.0, "ps of NVT per run", type=float, check=positive_in(unit.picosecond)),
             Option("nve_duration", "--nve-duration", 2.0, "ps of NVE per run", type=float,
                    check=positive_in(unit.picosecond)),
             Option("reference_duration", "--reference-duration", None, "ps of the reference runs (default: "
                    "--duration)", type=float, check=positive_in(unit.picosecond)),
             Option("friction", "--friction", PAPER_FRICTION_PER_PS, "Langevin friction (1/ps) of the reference and "
                    "FlashMD thermostats", type=float, check=positive_in(unit.picosecond**-1))),
    run=_bench)

TRAIN = Command(help="learn a long-stride propagator from NVE data of a reference potential", options=TRAIN_OPTIONS,
                run=_train)

METHOD = Method(name="flashmd", help="FlashMD: a learned model predicts positions and momenta a stride ahead, "
                "with energy rescaling and a thermostat by splitting (one step = one stride)", build=build,
                options=OPTIONS, prepare=opened_model,
                default_friction=lambda config: measured_friction(resolve(config.flashmd_model, config.system,
                                                                          config.model)),
                own_timestep=True,
                progress=lambda integrator: {"fallbacks": f"{integrator.statistics['fallback_fraction']:.2f}"},
                statistics_key="flashmd", describe=describe, train=TRAIN, bench=BENCH)
