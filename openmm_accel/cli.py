"""``openmm-accel``: the command-line front end (``run``, ``train``, ``bench``, ``models``, ``systems``)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from openmm import unit

from .validation import InputError, SimulationError


def _add_run_parser(subparsers) -> None:
    from .simulate import METHODS, RunConfig
    from .systems import SYSTEMS
    d = RunConfig()
    p = subparsers.add_parser("run", help="run a simulation (default: alanine dipeptide with ANI-1x)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--system", default=d.system, help=f"standard system: {', '.join(SYSTEMS)}")
    p.add_argument("--model", default=d.model,
                   help="potential: a registered model (see 'openmm-accel models') on the solute, or 'mm' "
                        "for the system's own force field")
    p.add_argument("--member", type=int, default=d.member, help="single ANI-1x network 0-7 instead of the ensemble")
    p.add_argument("--backend", default=d.backend, choices=["torchforce", "pythonforce"])
    p.add_argument("--method", default=d.method, choices=METHODS)
    p.add_argument("--steps", type=int, default=d.steps, help="total steps (including any already in a checkpoint)")
    p.add_argument("--timestep", type=float, default=d.timestep_fs, dest="timestep_fs", help="fs")
    p.add_argument("--temperature", type=float, default=d.temperature_k, dest="temperature_k", help="K")
    p.add_argument("--friction", type=float, default=d.friction_per_ps, dest="friction_per_ps",
                   help="Langevin friction, 1/ps (default: 1; with --method flashmd the friction its model was "
                   "measured at, 10 unless the shipped model's table in the README says otherwise)")
    p.add_argument("--hydrogen-mass", type=float, default=None, dest="hydrogen_mass_amu",
                   help="hydrogen mass repartitioning, amu")
    p.add_argument("--report-interval", type=int, default=d.report_interval)
    p.add_argument("--checkpoint-interval", type=int, default=d.checkpoint_interval)
    p.add_argument("--output", default=d.output, help="output directory")
    p.add_argument("--platform", default=d.platform,
                   help="OpenMM platform (default: CUDA/OpenCL if present, else CPU, or Reference for torchforce)")
    p.add_argument("--threads", type=int, default=d.torch_threads, dest="torch_threads",
                   help="torch intra-op threads (1 is fastest for small molecules on 2 cores)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-minimize", action="store_false", dest="minimize")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.chk (verified first)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in OUTPUT "
                   "(without it, or --resume, such a folder is refused)")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=None)
    lsd = p.add_argument_group("speculative dynamics (--method lsd)")
    lsd.add_argument("--draft", default=d.draft, choices=["distilled", "member", "mm"],
                     help="draft: force-matched to the target along a short run, one ANI-1x network, or MM")
    lsd.add_argument("--draft-member", type=int, default=d.draft_member)
    lsd.add_argument("--scheduler", default=d.scheduler, choices=["batched", "ray"])
    lsd.add_argument("--workers", type=int, default=d.workers, help="Ray target workers")
    lsd.add_argument("--window", type=int, default=d.window, help="initial drafts per batched round")
    lsd.add_argument("--no-error-correction", action="store_false", dest="error_correction")
    lsd.add_argument("--online", action="store_true", help="keep refining the distilled draft during the run")
    lsd.add_argument("--distill-steps", type=int, default=d.distill_steps)
    fmd = p.add_argument_group("FlashMD (--method flashmd; one step = one stride of the model)")
    fmd.add_argument("--flashmd-model", default=None, help="model file from 'openmm-accel train flashmd'")
    fmd.add_argument("--thermostat", default=d.thermostat, choices=["langevin", "svr"])


def _add_train_parser(subparsers) -> None:
    from .flashmd.pipeline import TrainFlashMDConfig
    d = TrainFlashMDConfig()
    p = subparsers.add_parser("train", help="train a model (flashmd: a long-stride propagator)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("which", choices=["flashmd"])
    p.add_argument("--system", default=d.system)
    p.add_argument("--model", default=d.model, help="reference potential: 'mm' or a registered ML model")
    p.add_argument("--member", type=int, default=d.member)
    p.add_argument("--hydrogen-mass", type=float, default=None, dest="hydrogen_mass_amu")
    p.add_argument("--stride", type=float, default=d.stride_fs, dest="stride_fs", help="fs")
    p.add_argument("--temperature", type=float, default=d.temperature_k, dest="temperature_k", help="K")
    p.add_argument("--segments", type=int, default=d.segments, help="independent NVE segments")
    p.add_argument("--segment-steps", type=int, default=d.segment_steps, help="Verlet steps per segment")
    p.add_argument("--record-every", type=int, default=d.record_every)
    p.add_argument("--timestep", type=float, default=d.timestep_fs, dest="timestep_fs", help="Verlet step, fs")
    p.add_argument("--decorrelation-steps", type=int, default=d.decorrelation_steps,
                   help="Langevin steps before each segment")
    p.add_argument("--starts", default=None, help="trajectory of the system (e.g. a long MM run's DCD) whose "
                   "frames, spread over the segments, start them: data covering its conformations")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--energy-weight", type=float, default=d.energy_weight,
                   help="weight of the energy-conservation loss ((K' + V(q') - H) / N kT)^2 (0: off)")
    p.add_argument("--kinetic-weight", type=float, default=d.kinetic_weight,
                   help="weight of the per-element kinetic energy loss sum_e <(K_e' - K_e) / N_e kT>^2 (batch mean; 0: "
                   "off), against the shrinkage of hard-to-predict momenta that leaves elements at unequal "
                   "temperatures")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--cutoff", type=float, default=d.cutoff_nm, dest="cutoff_nm", help="message-passing cutoff, nm")
    p.add_argument("--no-force-inputs", action="store_false", dest="force_inputs",
                   help="a model of positions and momenta only (by default it also sees the reference forces, "
                   "which the energy rescaling evaluates anyway)")
    p.add_argument("--input-noise", type=float, default=d.input_noise_nm, dest="input_noise_nm",
                   help="nm: train on inputs displaced by this RMS (hydrogen; heavier atoms by sqrt(m_H/m)), "
                   "with the reference forces recomputed there, so that the model corrects its own errors "
                   "in a closed loop (about its one-stride hydrogen position error; 0: off)")
    p.add_argument("--rollout", type=int, default=d.rollout, help="strides per training sample, each "
                   "from the model's previous prediction (1: one-stride pairs); penalises errors that compound")
    p.add_argument("--output", default=d.output, help="model file")
    p.add_argument("--resume", action="store_true", help="reuse OUTPUT.data.npz and OUTPUT.train.chk")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier model, data and training "
                   "checkpoint at OUTPUT (without it, or --resume, they are refused)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=None)


def _add_bench_parser(subparsers) -> None:
    from .flashmd.pretrained import PAPER_FRICTION_PER_PS
    p = subparsers.add_parser("bench", help="benchmarks (not tests); prints a table, optionally writes JSON",
                              allow_abbrev=False)
    p.add_argument("which", choices=["models", "lsd", "flashmd"],
                   help="models: ANI-1x/MM cost per evaluation vs batch size; lsd: speculative vs plain dynamics; "
                   "flashmd: FlashMD vs plain dynamics (temperatures, Ramachandran, drift, ns/day; plots)")
    p.add_argument("--json", default=None, help="write results to this JSON file")
    p.add_argument("--repeats", type=int, default=20, help="models: timing repeats")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (lsd: the first)")
    p.add_argument("--steps", type=int, default=1000, help="lsd: committed steps per run")
    p.add_argument("--quick", action="store_true", help="lsd, flashmd: a smoke run")
    p.add_argument("--models", nargs="+", default=None, help="flashmd: model files or shipped names "
                   "(default: all shipped models)")
    p.add_argument("--duration", type=float, default=10.0, help="flashmd: ps of NVT per run")
    p.add_argument("--nve-duration", type=float, default=2.0, help="flashmd: ps of NVE per run")
    p.add_argument("--reference-duration", type=float, default=None, help="flashmd: ps of the reference "
                   "runs (default: --duration)")
    p.add_argument("--friction", type=float, default=PAPER_FRICTION_PER_PS, help="flashmd: Langevin friction "
                   "(1/ps) of the reference and FlashMD thermostats")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="openmm-accel", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(subparsers)
    _add_bench_parser(subparsers)
    _add_train_parser(subparsers)
    subparsers.add_parser("models", help="list registered energy models")
    subparsers.add_parser("systems", help="list standard systems")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from .simulate import RunConfig, run
            options = {k: v for k, v in vars(args).items() if k != "command"}
            summary = run(RunConfig(**options), given=given_options(parser, "run", argv))
            print(f"{summary['steps_run']} steps of {summary['system']} ({summary['atoms']} atoms) in "
                  f"{summary['wall_seconds']:.1f} s: {summary['ns_per_day']:.3f} ns/day; "
                  f"output in {args.output}/")
            if summary["speculative"]:
                stats = summary["speculative"]
                print(f"speculative: acceptance {stats['acceptance_rate']:.3f} (predicted from force errors "
                      f"{stats['predicted_acceptance']:.3f}), {stats['mean_streak']:.2f} steps per round, "
                      f"{stats['draft_calls']} draft and {stats['target_calls']} target calls")
            if summary["flashmd"]:
                stats = summary["flashmd"]
                print(f"flashmd: {stats['strides']:.0f} strides, fallback fraction {stats['fallback_fraction']:.3f}, "
                      f"mean rescaling factor {stats['mean_rescale_factor']:.4f}")
        elif args.command == "train":
            from .flashmd.pipeline import TrainFlashMDConfig, run_training
            from .threads import use_torch_threads
            use_torch_threads(args.threads)
            options = {k: v for k, v in vars(args).items() if k not in ("command", "which", "threads")}
            metadata = run_training(TrainFlashMDConfig(**options))
            print(f"wrote {args.output}: stride {metadata['stride_fs']:g} fs, {metadata['samples']} samples of "
                  f"{metadata['training']['rollout']} stride(s), data "
                  f"{metadata['data_seconds']:.0f} s, training {metadata['training_seconds']:.0f} s, validation "
                  f"loss {metadata['final_validation_loss']:.3f} (free flight scores 2.0)")
        elif args.command == "bench":
            check_bench(args, given_options(parser, "bench", argv))
            if args.which == "models":
                from .benchmarks.models import main as bench_models
                bench_models(json_path=args.json, repeats=args.repeats, thread_counts=args.threads)
            elif args.which == "flashmd":
                from .benchmarks.flashmd import main as bench_flashmd
                bench_flashmd(json_path=args.json, models=args.models, duration_ps=args.duration,
                              nve_ps=args.nve_duration, quick=args.quick, threads=args.threads[0],
                              reference_ps=args.reference_duration, friction_per_ps=args.friction)
            else:
                from .benchmarks.lsd import main as bench_lsd
                bench_lsd(json_path=args.json, steps=args.steps, quick=args.quick, threads=args.threads[0])
        elif args.command == "models":
            from .models import available
            print("\n".join(available()))
        elif args.command == "systems":
            from .systems import SYSTEMS
            print("\n".join(SYSTEMS))
    except (InputError, SimulationError) as error:
        print(f"openmm-accel: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, InputError) else 3
    except KeyboardInterrupt as interrupt:
        print(f"openmm-accel: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


#: ``bench`` options and the benchmarks they apply to (the others refuse them rather than ignore them).
BENCH_OPTIONS = {"repeats": ("models",), "steps": ("lsd",), "quick": ("lsd", "flashmd"), "models": ("flashmd",),
                 "duration": ("flashmd",), "nve_duration": ("flashmd",), "reference_duration": ("flashmd",),
                 "friction": ("flashmd",)}


def check_bench(args: argparse.Namespace, given: set) -> None:
    """Refuse ``bench`` options out of range, or given for a benchmark they do not apply to."""
    from .validation import count, fail, positive
    for name, applies in BENCH_OPTIONS.items():
        if name in given and args.which not in applies:
            raise fail(f"--{name.replace('_', '-')}", f"it only with bench {' or '.join(applies)}",
                       f"it with bench {args.which}")
    count(args.repeats, "repeats")
    count(args.steps, "steps")
    for threads in args.threads:
        count(threads, "threads", "positive numbers of torch threads")
    for name in ("duration", "nve_duration", "friction") + (("reference_duration",) if args.reference_duration
                                                            is not None else ()):
        positive(getattr(args, name), unit.picosecond if name != "friction" else unit.picosecond**-1, name)


def given_options(parser: argparse.ArgumentParser, command: str, argv: Optional[List[str]]) -> set:
    """Destinations of the options of ``command`` that appear on the command line (set by the user, even
    to their default value), so options that do not apply can be refused rather than ignored."""
    words = {word.split("=", 1)[0] for word in (sys.argv[1:] if argv is None else argv)}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest for action in subparsers.choices[command]._actions
            if any(option in words for option in action.option_strings)}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
