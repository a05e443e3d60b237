"""The layout shows the architecture: imports point only down the layers, and no method folder imports
another (ARCHITECTURE.md). Checked by parsing every import of the package, inside functions too."""
import ast
import os
import re

from conftest import ROOT, run_python

PACKAGE = os.path.join(ROOT, "openmm_accel")

#: Bottom to top. A module may import from lower layers and from its own unit (module or subpackage);
#: units of one layer do not import each other (so neither method folder imports the other).
LAYERS = [
    {"_version", "_plugins", "validation"},
    {"threads", "registry", "options", "progress"},
    {"storage", "analysis", "geometry", "molecular", "devices"},  # molecular: the one value for a system (and its
    # recipe); devices: the one home of platform and device names
    {"method"},                      # the method template and its registry
    {"models"},                      # batched energy models and their registry
    {"forces"},                      # models as OpenMM Forces
    {"structures"},                  # systems from a lab's own files (PDB, mmCIF, Amber, GROMACS, CHARMM, XML)
    {"systems", "integrators", "potentials", "openmmml_plugin"},  # standard systems with a potential; generic
    # integrators; MLPotential; the package's potentials in openmm-ml
    {"harness", "learning", "reporters"},  # what every method shares: benchmark harness; data, trainer, model
    # files; OpenMM reporters (progress, guards, checkpoints, per-element temperatures)
    {"speculative", "flashmd", "score", "drift"},  # the methods, one folder each
    {"simulate"},
    {"benchmarks", "doctor"},        # bench models; the installation check
    {"cli"},
    {"__init__"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}

def unit_of(module: str) -> str:
    """'openmm_accel.speculative.engine' -> 'speculative'; 'openmm_accel' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: str, module: str):
    """Absolute names of the package modules ``path`` imports (relative imports resolved; in a module that
    calls ``import_module``, every string naming a package module counts as imported)."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    dynamic = any(isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) ==
                  "import_module" for node in ast.walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                if node.module:
                    yield ".".join(base + [node.module])
                else:  # from . import systems
                    yield from (".".join(base + [alias.name]) for alias in node.names)
            elif node.module and node.module.startswith("openmm_accel"):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("openmm_accel"))
        elif dynamic and isinstance(node, ast.Constant) and str(node.value).startswith("openmm_accel."):
            if all(part.isidentifier() for part in node.value.split(".")):
                yield node.value


def package_modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
                dotted = "openmm_accel." + relative[:-3].replace("/", ".")
                yield path, relative, dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted


def test_every_unit_has_a_layer():
    units = {unit_of(module) for _, _, module in package_modules()}
    assert units <= set(LAYER), f"add {sorted(units - set(LAYER))} to LAYERS"


def test_imports_point_only_down():
    wrong = []
    for path, relative, module in package_modules():
        own = unit_of(module)
        for imported in imports(path, module):
            other = unit_of(imported)
            if other == own:
                continue
            if LAYER[other] >= LAYER[own]:
                wrong.append(f"{relative} ({own}, layer {LAYER[own]}) imports {imported} (layer {LAYER[other]})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """Power: a planted upward import (a model importing the main job) is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from ..simulate import run\n")
    found = list(imports(str(planted), "openmm_accel.models.planted"))
    assert found == ["openmm_accel.simulate"] and LAYER[unit_of(found[0])] > LAYER["models"]


#: Modules that train models or run benchmarks: the main job and the integrators import none of them.
HEAVY = re.compile(r"^openmm_accel\.(.*\.)?(training|trainer|pipeline|benchmark|benchmarks)(\.|$)")


def loaded_modules(code: str) -> list:
    """The package's modules loaded after running ``code`` in a fresh interpreter."""
    shown = run_python(["-c", code + "\nimport sys\nprint('\\n'.join(m for m in sys.modules if m.startswith("
                        "'openmm_accel')))"])
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.split()


def test_the_main_job_and_the_integrators_load_no_training_or_benchmark_code():
    loaded = loaded_modules("import openmm_accel.simulate\nfrom openmm_accel.method import methods\nmethods()\n"
                            "from openmm_accel.speculative import SpeculativeLangevinIntegrator\n"
                            "from openmm_accel.flashmd import FlashMDIntegrator")
    assert "openmm_accel.speculative.method" in loaded and "openmm_accel.flashmd.integrator" in loaded
    assert not [module for module in loaded if HEAVY.match(module)]


def test_the_check_sees_training_code():
    """Power: a job's implementation, once loaded, is seen."""
    loaded = loaded_modules("import openmm_accel.score.training")
    heavy = {module for module in loaded if HEAVY.match(module)}
    assert {"openmm_accel.score.training", "openmm_accel.learning.trainer"} <= heavy


def long_signatures(path: str, limit: int = 8) -> list:
    """Public functions and constructors of ``path`` with more than ``limit`` parameters (self and cls aside)."""
    found = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith("_") and node.name != "__init__":
                continue
            names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            names = names[1:] if names[:1] in (["self"], ["cls"]) else names
            if len(names) > limit:
                found.append(f"{path}:{node.lineno} {node.name} takes {len(names)}")
    return found


def test_no_public_function_takes_more_than_eight_parameters():
    """Parameters travel in small named objects (a Langevin, a Verification, a config ...), not long lists."""
    assert not [line for path, _, _ in package_modules() for line in long_signatures(path)]


def test_the_signature_check_sees_a_long_one(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f(a, b, c, d, e, f, g, h, i):\n    pass\n\n\ndef _g(a, b, c, d, e, f, g, h, i):\n    pass\n")
    assert [line.split()[-3] for line in long_signatures(str(planted))] == ["f"]


#: What only the command line (a user's choice) and openmm_accel.devices (what follows from --device) may name.
PLATFORM_AND_DEVICE_NAMES = {"Reference", "CPU", "CUDA", "OpenCL", "HIP", "Metal", "cpu", "cuda", "mps"}


def named_platforms(path: str) -> list:
    """String constants of ``path`` (docstrings aside) that name an OpenMM platform or a torch device."""
    tree = ast.parse(open(path).read(), path)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [f"{path}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and (node.value in PLATFORM_AND_DEVICE_NAMES or re.fullmatch(r"cuda:\d+", node.value))]


def test_no_module_below_the_command_line_names_a_platform_or_device():
    """Every module takes a device and asks openmm_accel.devices where that runs (issue: one --device option)."""
    allowed = {"cli.py", "devices.py"}
    assert not [line for path, relative, _ in package_modules() if relative not in allowed
                for line in named_platforms(path)]


def test_the_platform_check_sees_a_named_platform(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('"""Runs on "CPU" (a docstring may say so)."""\nimport openmm\n\n\ndef f():\n'
                       '    return openmm.Platform.getPlatformByName("Reference"), "cuda:1", "CPU platform"\n')
    assert sorted(line.split()[-1] for line in named_platforms(str(planted))) == ["'Reference'", "'cuda:1'"]
