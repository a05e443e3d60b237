"""``openmm-accel``: the command-line front end (``run``, ``train``, ``bench``, ``data``, ``models``, ``systems``)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .benchmarks.models import BENCH as MODELS_BENCH
from .learning.reference import OPTIONS as DATA_OPTIONS, ReferenceConfig, generate
from .method import Option, add_options, commands, job_defaults, methods
from .models import available
from .simulate import COMMON_OPTIONS, RunConfig, run
from .systems import SYSTEMS
from .validation import InputError, SimulationError, count, fail


def _add_run_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a simulation (default: alanine dipeptide with ANI-1x)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_options(p, COMMON_OPTIONS, {name: method.options for name, method in methods().items() if method.options},
                lambda name: f"--method {name}: {methods()[name].help}")
    p.set_defaults(options=None)


JOB_HELP = {"train": "train a method's model",
            "bench": "benchmarks (not tests): measured side by side in one run; prints a table, optionally writes "
                     "JSON, Markdown and plots",
            "sample": "independent configurations from a method's generative model, as a trajectory"}


def _add_job_parser(subparsers, kind: str, jobs: dict, shared=()) -> None:
    """The ``train``, ``bench`` or ``sample`` parser: which job (``sample``: ``--method``), the shared options,
    each job's options in a group."""
    p = subparsers.add_parser(kind, help=JOB_HELP[kind], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                              allow_abbrev=False)
    described = "; ".join(f"{name}: {job.help}" for name, job in jobs.items())
    if kind == "sample":
        p.add_argument("--method", dest="which", choices=list(jobs), required=True, help=described)
    else:
        p.add_argument("which", choices=list(jobs), help=described)
    added = add_options(p, shared, {name: job.options for name, job in jobs.items()},
                        lambda name: f"{kind} {name}")
    p.set_defaults(options=added)


def _add_data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="reference MD for learned methods: seeded walkers in resumable chunks "
                              "(positions, forces, energies every frame)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_options(p, DATA_OPTIONS, {}, str)


def _jobs(kind: str) -> dict:
    return {**({"models": MODELS_BENCH} if kind == "bench" else {}), **commands(kind)}


def check_job(kind: str, args: argparse.Namespace, given: set) -> None:
    """Refuse ``train``/``bench`` options given for a job they do not apply to, and values out of range; the
    options the user left out get the chosen job's defaults."""
    own = {option.name: option for option in _jobs(kind)[args.which].options}
    job_defaults(args, own.values(), given)
    for name, (option, groups) in args.options.items():
        if groups and args.which not in groups:
            if name in given:
                raise fail(option.flag, f"it only with {kind} {' or '.join(groups)}", f"it with {kind} {args.which}")
            continue
        own.get(name, option).validate(getattr(args, name))  # the job's own check of an option several declare


def _check_threads(values, name) -> None:
    for threads in values:
        count(threads, name, "positive numbers of torch threads")


BENCH_SHARED = (Option("json", "--json", None, "write results to this JSON file (a Markdown table and plots "
                       "beside it)"),
                Option("threads", "--threads", [1, 2], "torch thread counts (lsd, flashmd: the first)", type=int,
                       nargs="+", check=_check_threads))


SAMPLE_SHARED = (Option("count", "-n", 1000, "configurations to draw", type=int, check=count),
                 Option("seed", "--seed", 1, type=int, check=count),
                 Option("output", "--output", "samples.dcd", "trajectory file (any format mdtraj writes; a DCD gets "
                        "its topology as OUTPUT.pdb)"),
                 Option("system", "--system", None, "the system whose shipped model draws, when no model file is "
                        "given (default: the method's default system)"))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="openmm-accel", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(subparsers)
    _add_job_parser(subparsers, "bench", _jobs("bench"), BENCH_SHARED)
    _add_job_parser(subparsers, "train", _jobs("train"))
    _add_job_parser(subparsers, "sample", _jobs("sample"), SAMPLE_SHARED)
    _add_data_parser(subparsers)
    subparsers.add_parser("models", help="list registered energy models")
    subparsers.add_parser("systems", help="list standard systems")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            options = {k: v for k, v in vars(args).items() if k not in ("command", "options")}
            summary = run(RunConfig(**options), given=given_options(parser, "run", argv))
            print(f"{summary['steps_run']} steps of {summary['system']} ({summary['atoms']} atoms) in "
                  f"{summary['wall_seconds']:.1f} s: {summary['ns_per_day']:.3f} ns/day; "
                  f"output in {args.output}/")
            method = methods()[args.method]
            if method.describe is not None and summary.get(method.statistics_key):
                print(method.describe(summary[method.statistics_key]))
        elif args.command == "data":
            summary = generate(ReferenceConfig(**{option.name: getattr(args, option.name) for option in DATA_OPTIONS}))
            print(f"{summary['sampled_ns']:g} ns sampled in {summary['chunks_written']} chunks"
                  + (f" ({summary['ns_per_day_per_walker']:.0f} ns/day per walker)"
                     if summary["ns_per_day_per_walker"] else "") + f"; data in {summary['output']}/")
        elif args.command in ("train", "bench", "sample"):
            check_job(args.command, args, given_options(parser, args.command, argv))
            line = _jobs(args.command)[args.which].run(args)
            if line:
                print(line)
        elif args.command == "models":
            print("\n".join(available()))
        elif args.command == "systems":
            print("\n".join(SYSTEMS))
    except (InputError, SimulationError) as error:
        print(f"openmm-accel: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, InputError) else 3
    except KeyboardInterrupt as interrupt:
        print(f"openmm-accel: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


def given_options(parser: argparse.ArgumentParser, command: str, argv: Optional[List[str]]) -> set:
    """Destinations of the options of ``command`` that appear on the command line (set by the user, even
    to their default value), so options that do not apply can be refused rather than ignored."""
    words = {word.split("=", 1)[0] for word in (sys.argv[1:] if argv is None else argv)}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest for action in subparsers.choices[command]._actions
            if any(option in words for option in action.option_strings)}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
