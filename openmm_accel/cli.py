"""``openmm-accel``: the command-line front end (``run``, ``train``, ``sample``, ``bench``, ``data``, ``models``,
``systems``, ``doctor``), a thin layer over the Python API: each command's options come from its config dataclass
(:mod:`openmm_accel.options`), and the command runs with the config built from what was typed."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from typing import List, Optional

from .benchmarks import GPUBench, ModelsBench
from .doctor import DoctorConfig, report, text
from .learning.imported import ImportConfig, import_trajectories
from .learning.reference import ReferenceConfig, generate
from .method import BenchConfig, SampleConfig, jobs, methods
from .models import available
from .options import add_options, from_values, options_of
from .simulate import RunConfig, run, run_options
from .systems import SYSTEMS
from .validation import InputError, SimulationError, fail


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless the help already says it or the option is a switch
    (``--resume``, ``--no-progress``: its default is not to be given)."""

    def _get_help_string(self, action):
        if action.nargs == 0 or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_run_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="run a simulation (default: alanine dipeptide with ANI-1x)",
                              formatter_class=_DefaultsFormatter, allow_abbrev=False)
    common = [dataclasses.replace(option, choices=tuple(methods())) if option.name == "method" else option
              for option in run_options()]
    add_options(p, common, {name: run_options(method) for name, method in methods().items() if run_options(method)},
                lambda name: f"--method {name}: {methods()[name].help}")
    return p


JOB_HELP = {"train": "train a method's model",
            "bench": "benchmarks (not tests): measured side by side in one run; prints a table, optionally writes "
                     "JSON, Markdown and plots",
            "sample": "independent configurations from a method's generative model, as a trajectory"}
SHARED = {"bench": BenchConfig, "sample": SampleConfig}
#: The options of ``data --import`` alone.
IMPORT_ONLY = {option.name for option in options_of(ImportConfig)} - {option.name for option in
                                                                      options_of(ReferenceConfig)}
#: What Ctrl-C leaves behind, by command (``run`` says it itself).
AFTER_INTERRUPT = {"data": "the chunks written so far are kept: continue with --resume",
                   "train": "the training checkpoint of the last whole epoch is kept: continue with --resume",
                   "sample": "nothing was written (a partial file is removed)",
                   "bench": "no report was written"}


def _jobs(kind: str) -> dict:
    return {**({"models": ModelsBench(), "gpu": GPUBench()} if kind == "bench" else {}), **jobs(kind)}


def _add_job_parser(subparsers, kind: str) -> None:
    """The ``train``, ``bench`` or ``sample`` parser: which job (``sample``: ``--method``), the options every
    job of the kind shares, each job's own options in a group."""
    listed = _jobs(kind)
    p = subparsers.add_parser(kind, help=JOB_HELP[kind], formatter_class=_DefaultsFormatter,
                              allow_abbrev=False)
    described = "; ".join(f"{name}: {job.help}" for name, job in listed.items())
    if kind == "sample":
        p.add_argument("--method", dest="which", choices=list(listed), required=True, help=described)
    else:
        p.add_argument("which", choices=list(listed), help=described)
    shared = options_of(SHARED[kind]) if kind in SHARED else ()
    names = {option.name for option in shared}
    add_options(p, shared, {name: [option for option in job.options() if option.name not in names]
                            for name, job in listed.items()}, lambda name: f"{kind} {name}")


def _add_data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="reference MD for learned methods: seeded walkers in resumable chunks "
                              "(positions, forces, energies every frame), or a lab's own trajectories (--import)",
                              formatter_class=_DefaultsFormatter, allow_abbrev=False)
    sampling = options_of(ReferenceConfig)
    names = {option.name for option in sampling}
    add_options(p, sampling, {"import": [option for option in options_of(ImportConfig) if option.name not in names]},
                lambda _: "data --import: a lab's own trajectories as data (then --system, --temperature and "
                          "--frame-interval have no default; --system only with --label-forces)")


def _data(args: argparse.Namespace, given: set) -> str:
    """``data``: sample reference MD, or import trajectories (an option of sampling alone is refused)."""
    if not args.trajectories:
        summary = generate(from_values(ReferenceConfig, {name: value for name, value in vars(args).items()
                                                         if name not in IMPORT_ONLY}))
        return (f"{summary['sampled_ns']:g} ns sampled in {summary['chunks_written']} chunks"
                + (f" ({summary['ns_per_day_per_walker']:.0f} ns/day per walker)"
                   if summary["ns_per_day_per_walker"] else "") + f"; data in {summary['output']}/: "
                f"{summary['ns_per_walker']:g} ns per walker")
    own = {option.name for option in options_of(ImportConfig)}
    for option in options_of(ReferenceConfig):
        if option.name in given and option.name not in own:
            raise fail(f"{option.name} ({option.flag})", "it only when sampling (without --import)",
                       f"{getattr(args, option.name)!r} with --import")
    summary = import_trajectories(from_values(ImportConfig, {name: getattr(args, name) for name in own & given}))
    forces = {"labelled": "forces computed", "given": "forces given", None: "no forces"}[summary["forces"]]
    return (f"{summary['walkers']} trajectories imported ({summary['frames_per_walker']} frames, "
            f"{summary['ns_per_walker']:g} ns each; {forces}); data in {summary['output']}/")


def _job_config(kind: str, args: argparse.Namespace, given: set):
    """The chosen job's config from the options given (the others keep the job's own defaults); an option of
    another job of the kind is refused by name."""
    listed = _jobs(kind)
    job = listed[args.which]
    own = {option.name for option in job.options()}
    for name, other in listed.items():
        for option in other.options():
            if option.name in given and option.name not in own:
                declaring = [n for n, j in listed.items() if option.name in {o.name for o in j.options()}]
                raise fail(option.flag, f"it only with {kind} {' or '.join(declaring)}", f"it with {kind} {args.which}")
    return from_values(job.Config, {name: getattr(args, name) for name in own & given})


def _run_config(args: argparse.Namespace, given: set) -> RunConfig:
    """The run's config: the common options and the chosen method's (an option of another method is refused)."""
    method = methods()[args.method]
    own = {option.name for option in run_options(method)}
    for name, other in methods().items():
        for option in run_options(other):
            if option.name in given and option.name not in own:
                raise fail(f"{option.name} ({option.flag})", f"it only with --method {name}, where it has an "
                           f"effect", f"{getattr(args, option.name)!r} with --method {args.method}")
    options = from_values(method.Config, {name: getattr(args, name) for name in own & given})
    return from_values(RunConfig, {**{name: getattr(args, name) for name in vars(args)}, "options": options})


def _warning_line(message, category, *_, **__) -> str:
    """A warning as the command line shows it: one line, without the source line that raised it."""
    return f"openmm-accel: warning: {message}\n"


def main(argv: Optional[List[str]] = None) -> int:
    warnings.formatwarning = _warning_line
    parser = argparse.ArgumentParser(prog="openmm-accel", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(subparsers)
    for kind in ("bench", "train", "sample"):
        _add_job_parser(subparsers, kind)
    _add_data_parser(subparsers)
    subparsers.add_parser("models", help="list registered energy models")
    subparsers.add_parser("systems", help="list standard systems")
    doctor = subparsers.add_parser("doctor", help="versions, OpenMM platforms and plugins, torch devices and "
                                   "threads, and a force agreement check on every platform and device",
                                   formatter_class=_DefaultsFormatter)
    add_options(doctor, options_of(DoctorConfig), {}, str)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            given = given_options(parser, "run", argv)
            summary = run(_run_config(args, given), given=given)
            print(f"{summary['steps_run']} steps of {summary['system']} ({summary['atoms']} atoms) in "
                  f"{summary['wall_seconds']:.1f} s: {summary['ns_per_day']:.3f} ns/day; "
                  f"output in {args.output}/")
            method = methods()[args.method]
            if method.statistics_key and summary.get(method.statistics_key):
                line = method.describe(summary[method.statistics_key])
                if line:
                    print(line)
        elif args.command == "data":
            print(_data(args, given_options(parser, "data", argv)))
        elif args.command in ("train", "bench", "sample"):
            config = _job_config(args.command, args, given_options(parser, args.command, argv))
            line = _jobs(args.command)[args.which](config)
            if line:
                print(line)
        elif args.command == "models":
            print("\n".join(available()))
        elif args.command == "systems":
            print("\n".join(SYSTEMS))
        elif args.command == "doctor":
            found = report(from_values(DoctorConfig, vars(args)))
            print(text(found))
            return 0 if all(check["passed"] for check in found["checks"]) else 1
    except (InputError, SimulationError) as error:
        print(f"openmm-accel: error: {with_flag(str(error), parser, args.command)}", file=sys.stderr)
        return 2 if isinstance(error, InputError) else 3
    except KeyboardInterrupt as interrupt:
        print(f"openmm-accel: {str(interrupt) or 'interrupted; ' + AFTER_INTERRUPT.get(args.command, '')}",
              file=sys.stderr)
        return 130
    return 0


def with_flag(message: str, parser: argparse.ArgumentParser, command: str) -> str:
    """An error naming an argument as the Python API does (``count: expected ...``) names the command-line
    flag too (``count (-n): expected ...``), so a user of either finds what to change."""
    name, colon, rest = message.partition(":")
    if not colon or " " in name:
        return message
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in subparsers.choices[command]._actions:
        flag = next((option for option in action.option_strings if option.startswith("--")),
                    action.option_strings[0] if action.option_strings else None)
        if flag and name in (action.dest, flag.lstrip("-").replace("-", "_")) and flag != "--help":
            return f"{name} ({flag}):{rest}"
    return message


def given_options(parser: argparse.ArgumentParser, command: str, argv: Optional[List[str]]) -> set:
    """Destinations of the options of ``command`` that appear on the command line (set by the user, even
    to their default value), so options that do not apply can be refused rather than ignored."""
    words = {word.split("=", 1)[0] for word in (sys.argv[1:] if argv is None else argv)}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest for action in subparsers.choices[command]._actions
            if any(option in words for option in action.option_strings)}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
