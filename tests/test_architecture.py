"""The one-way import rule, read from the source with ``ast`` (every ``import``, lazy ones inside functions too).

    pipeline.py                     -> anything (the composition root)
    cli.py, commands/, settings.py, stages.py -> anything but pipeline (commands never import the pipeline)
    export/                         -> train/, device/, core/
    device/                         -> core/  (and of third parties only numpy and the backends: the device install)
    train/, imagedata/, evaluate/   -> core/
    core/                           -> nothing of the project (and of third parties only numpy)
    no stage imports pipeline, cli, commands, settings or stages; no import cycle between the modules of a package
    a command line (argparse, ``if __name__ == "__main__"``) only in cli.py, pipeline.py and commands/
    pipeline.py: at most 200 lines, every project import at module level

Each checker is a pure function of ``{module name: source}``, so the tests below also feed it crafted sources
that break each rule: the rule test on the tree can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edge_encoder"
STAGES = ("core", "device", "train", "export", "evaluate", "imagedata")
COMPOSERS = ("pipeline", "cli", "commands", "settings", "stages")
COMMAND_LINE = ("pipeline", "cli", "commands")  # where argparse and __main__ entry points may live
PIPELINE_MAX_LINES = 200
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "train": {"core"},
    "imagedata": {"core"},
    "evaluate": {"core"},
    "export": {"train", "core", "device"},
    "device": {"core"},
}
# What the code a device runs may import besides the standard library and the project (issue 16: the base install is
# numpy + the backend at hand; TensorRT's CUDA calls go through ctypes over libcudart, as Polygraphy's cuda module does).
DEVICE_LAYERS = ("device", "core")
DEVICE_THIRD_PARTY = {"numpy", "onnxruntime", "tensorrt"}
# Top-level names that are the project's when imported bare (pre-namespace style); never right in a module.
PROJECT_NAMES = set(STAGES) | set(COMPOSERS)


def project_sources(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """``{"edge_encoder.export.bundle": source, ...}`` for every module the wheel installs (pyproject's mapping:
    each stage folder and ``commands/`` is a subpackage, the root's ``pipeline.py``/``cli.py`` are modules)."""
    sources = {f"{PACKAGE}.{path.stem}": path.read_text() for path in sorted(root.glob("*.py"))}
    for folder in (*STAGES, "commands"):
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((PACKAGE, *parts))
            sources[name.removesuffix(".__init__")] = path.read_text()
    return sources


def imported_modules(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute dotted name)`` of every import in ``source``, at any depth: ``import a.b`` as ``a.b``,
    ``from a import b`` as ``a.b`` (``b`` may be a submodule or an attribute), relative imports resolved against
    ``module`` (a package's own ``__init__`` when ``is_package``), and ``importlib.import_module("...")`` /
    ``__import__("...")`` with a literal name. Sorted by line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(f"{module}.") for other in sources)


def layer_of(name: str) -> str | None:
    """The project layer (``"export"``, ``"pipeline"``...) a dotted module name belongs to, or None (third party)."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        return parts[1] if len(parts) > 1 else PACKAGE
    return None


def rule_violations(sources: dict[str, str]) -> list[str]:
    """One line per import that breaks the one-way rule (module docstring)."""
    problems = []
    for module, source in sources.items():
        layer = layer_of(module)
        for line, name in imported_modules(module, source, _is_package(module, sources)):
            target = layer_of(name)
            where = f"{module}:{line} imports {name}"
            if target is None:
                if name.split(".")[0] in PROJECT_NAMES:
                    problems.append(f"{where}: import the project as {PACKAGE}.{name}, not as a top-level name")
                continue
            if target == layer or layer == "pipeline":
                continue
            if target == "pipeline":
                problems.append(f"{where}: nothing imports the pipeline (the composition root)")
            elif layer in COMPOSERS:
                continue
            elif target in COMPOSERS:
                problems.append(f"{where}: only pipeline, cli, commands, settings and stages may import the composers")
            elif target == PACKAGE or target not in ALLOWED.get(layer, set()):
                allowed = sorted(ALLOWED.get(layer, set())) or "nothing of the project"
                problems.append(f"{where}: {layer}/ may import {allowed}")
    return problems


def import_cycles(sources: dict[str, str]) -> list[list[str]]:
    """Import cycles between the modules of ``sources`` (lazy imports count: they are edges at run time too).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of ``sources``, else to ``pkg``. A
    module importing its own package (``edge_encoder.export.bundle`` -> ``edge_encoder.export``) is not an edge:
    the package's ``__init__`` re-exporting its modules would make every such pair a cycle."""
    graph: dict[str, set[str]] = {module: set() for module in sources}
    for module, source in sources.items():
        for _, name in imported_modules(module, source, _is_package(module, sources)):
            target = name if name in sources else name.rsplit(".", 1)[0] if "." in name else None
            if target in sources and target != module and not module.startswith(f"{target}."):
                graph[module].add(target)
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def script_violations(path_name: str, source: str) -> list[str]:
    """A script run by path (benchmark, test worker) must import the installed package: no ``sys.path`` edits
    and no private (``_name``) project names."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("insert", "append", "extend") and ast.unparse(node.func.value) == "sys.path":
            problems.append(f"{path_name}:{node.lineno}: edits sys.path (import the installed {PACKAGE} instead)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private or any(part.startswith("_") for part in (node.module or "").split(".")):
                problems.append(f"{path_name}:{node.lineno}: imports private {node.module} {private}")
    return sorted(problems, key=lambda p: int(p.split(":")[1]))


def command_line_violations(sources: dict[str, str]) -> list[str]:
    """One line per command line outside ``COMMAND_LINE``: an ``argparse`` import or an
    ``if __name__ == "__main__":`` block in a stage, ``settings`` or ``stages``."""
    problems = []
    for module, source in sources.items():
        if layer_of(module) in COMMAND_LINE:
            continue
        tree = ast.parse(source)
        for line, name in imported_modules(module, source):
            if name.split(".")[0] == "argparse":
                problems.append(f"{module}:{line} imports argparse: command lines live in commands/")
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
                problems.append(f"{module}:{node.lineno} has a __main__ entry point: command lines live in commands/")
    return problems


def function_level_project_imports(module: str, source: str) -> list[str]:
    """One line per project import inside a function of ``source`` (the composition root imports at the top)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = ast.Module(body=node.body, type_ignores=[])
            for line, name in imported_modules(module, ast.unparse(body)):
                if name.split(".")[0] == PACKAGE:
                    problems.append(f"{module}: function {node.name} imports {name}")
    return problems


def third_party_violations(sources: dict[str, str]) -> list[str]:
    """One line per import, in ``device/`` or ``core/``, of a package that the device install does not have."""
    import sys

    problems = []
    for module, source in sources.items():
        if layer_of(module) not in DEVICE_LAYERS:
            continue
        for line, name in imported_modules(module, source, _is_package(module, sources)):
            top = name.split(".")[0]
            if top in (PACKAGE, "__future__") or top in sys.stdlib_module_names or top in DEVICE_THIRD_PARTY:
                continue
            problems.append(f"{module}:{line} imports {name}: the device install has only the standard library, "
                            f"{sorted(DEVICE_THIRD_PARTY)}")
    return problems


# ------------------------------------------------------------------------------------------------ the tree


def test_the_tree_keeps_the_one_way_import_rule() -> None:
    sources = project_sources()
    assert {f"{PACKAGE}.{s}" for s in STAGES} <= set(sources) and f"{PACKAGE}.pipeline" in sources
    assert rule_violations(sources) == []


def test_the_device_code_imports_only_what_the_device_install_has() -> None:
    assert third_party_violations(project_sources()) == []


def test_command_lines_live_in_commands_only() -> None:
    sources = project_sources()
    assert {f"{PACKAGE}.settings", f"{PACKAGE}.stages", f"{PACKAGE}.evaluate.compare"} <= set(sources)
    assert command_line_violations(sources) == []


@pytest.mark.parametrize("module, source, expected", [
    ("edge_encoder.evaluate.compare", "import argparse\n", "imports argparse"),
    ("edge_encoder.device.verify", "def main():\n    pass\nif __name__ == '__main__':\n    main()\n", "__main__"),
    ("edge_encoder.stages", "from argparse import Namespace\n", "imports argparse"),
])
def test_command_line_checker_finds_an_entry_point_outside_commands(module: str, source: str, expected: str) -> None:
    problems = command_line_violations({module: source})
    assert len(problems) == 1 and expected in problems[0], problems
    assert command_line_violations({"edge_encoder.commands.verify": source, "edge_encoder.pipeline": source}) == []


def test_pipeline_is_a_short_composition_root_with_module_level_imports() -> None:
    source = (PROJECT_ROOT / "pipeline.py").read_text()
    assert len(source.splitlines()) <= PIPELINE_MAX_LINES
    assert function_level_project_imports(f"{PACKAGE}.pipeline", source) == []
    crafted = "import os\ndef run():\n    from edge_encoder.train.loop import train_moco\n"
    assert function_level_project_imports(f"{PACKAGE}.pipeline", crafted) == [
        "edge_encoder.pipeline: function run imports edge_encoder.train.loop.train_moco"]


@pytest.mark.parametrize("module, source", [
    ("edge_encoder.device.tensorrt", "def f():\n    import torch\n"),
    ("edge_encoder.device.verify", "import onnx\n"),
    ("edge_encoder.core.files", "from sklearn import metrics\n"),
])
def test_third_party_checker_names_each_training_import_on_the_device(module: str, source: str) -> None:
    problems = third_party_violations({module: source})
    assert len(problems) == 1 and "the device install has only" in problems[0], problems
    assert third_party_violations({module: "import numpy\nimport tensorrt\nimport ctypes\n"}) == []


@pytest.mark.parametrize("package", STAGES)
def test_no_import_cycle_between_the_modules_of_a_stage(package: str) -> None:
    """export/ in particular: engines <-> tensorrt was a cycle (issue 10); ``open_engine`` left engines.py."""
    sources = {m: s for m, s in project_sources().items() if layer_of(m) == package}
    assert import_cycles(sources) == []


def test_benchmarks_and_worker_scripts_import_the_installed_package() -> None:
    scripts = sorted((PROJECT_ROOT / "benchmarks").glob("*.py")) + sorted((PROJECT_ROOT / "tests").rglob("*worker*.py"))
    assert len(scripts) > 5
    problems = [p for path in scripts for p in script_violations(str(path.relative_to(PROJECT_ROOT)), path.read_text())]
    assert problems == []


# ------------------------------------------------------------------------------------------------ the checkers fail


@pytest.mark.parametrize("module, source, expected", [
    ("edge_encoder.evaluate.knn", "def f():\n    from edge_encoder.train.loop import train_moco\n",
     "edge_encoder.evaluate.knn:2 imports edge_encoder.train.loop.train_moco: evaluate/ may import ['core']"),
    ("edge_encoder.evaluate.knn", "import edge_encoder.export.engines as e\n", "evaluate/ may import ['core']"),
    ("edge_encoder.train.loop", "from edge_encoder.imagedata import FolderImages\n", "train/ may import ['core']"),
    ("edge_encoder.imagedata.folder", "from edge_encoder.evaluate.knn import x\n", "imagedata/ may import ['core']"),
    ("edge_encoder.export.bundle", "from edge_encoder.evaluate import suite\n", "export/ may import ['core', 'device', 'train']"),
    ("edge_encoder.core.files", "from edge_encoder.train import config\n", "core/ may import nothing of the project"),
    ("edge_encoder.device.verify", "from edge_encoder.export.bundle import x\n", "device/ may import ['core']"),
    ("edge_encoder.device.engines", "from edge_encoder.evaluate.knn import x\n", "device/ may import ['core']"),
    ("edge_encoder.core.files", "from edge_encoder import train\n", "core/ may import nothing of the project"),
    ("edge_encoder.export.bundle", "from edge_encoder import pipeline\n", "nothing imports the pipeline"),
    ("edge_encoder.commands.train", "from edge_encoder import pipeline\n", "nothing imports the pipeline"),
    ("edge_encoder.commands.run", "def f():\n    from edge_encoder.pipeline import run\n", "nothing imports the pipeline"),
    ("edge_encoder.stages", "import edge_encoder.pipeline\n", "nothing imports the pipeline"),
    ("edge_encoder.train.loop", "import importlib\nimportlib.import_module('edge_encoder.cli')\n",
     "only pipeline, cli, commands, settings and stages"),
    ("edge_encoder.export.config", "from edge_encoder.settings import Settings\n", "only pipeline, cli, commands"),
    ("edge_encoder.evaluate.suite", "from ..train.loop import train_moco\n", "evaluate/ may import ['core']"),
    ("edge_encoder.train.loop", "import evaluate.knn\n", "not as a top-level name"),
])
def test_rule_checker_names_each_forbidden_import(module: str, source: str, expected: str) -> None:
    problems = rule_violations({module: source})
    assert len(problems) == 1 and expected in problems[0], problems


def test_rule_checker_allows_what_the_rule_allows() -> None:
    allowed = {
        "edge_encoder.export.bundle": "import numpy\nfrom edge_encoder.train.checkpoint import load_backbone\n"
                                      "from edge_encoder.core.files import atomic_write\nfrom . import engines\n",
        "edge_encoder.pipeline": "from edge_encoder.evaluate import suite\nfrom edge_encoder.export import bundle\n"
                                 "from edge_encoder.commands.run import prepare_run\n",
        "edge_encoder.commands.train": "from edge_encoder import stages\nfrom edge_encoder.settings import Settings\n",
        "edge_encoder.core.config": "import dataclasses\nfrom edge_encoder.core import files\n",
    }
    assert rule_violations(allowed) == []


def test_cycle_checker_finds_a_lazy_cycle() -> None:
    sources = {
        "edge_encoder.export.engines": "def open_engine():\n    from edge_encoder.export.tensorrt import TensorRTEngine\n",
        "edge_encoder.export.tensorrt": "from edge_encoder.export.engines import Engine\n",
        "edge_encoder.export.bundle": "from edge_encoder.export import engines\n",
        "edge_encoder.export": "from edge_encoder.export.bundle import export_bundle\n",
    }
    assert import_cycles(sources) == [["edge_encoder.export.engines", "edge_encoder.export.tensorrt",
                                       "edge_encoder.export.engines"]]
    del sources["edge_encoder.export.tensorrt"]
    assert import_cycles(sources) == []


def test_script_checker_finds_path_edits_and_private_names() -> None:
    source = ("import sys\nsys.path.insert(0, '..')\nfrom edge_encoder.evaluate.linear_probe import _standardize\n"
              "from edge_encoder.evaluate.knn import exact_search\n")
    problems = script_violations("benchmarks/x.py", source)
    assert len(problems) == 2 and "x.py:2: edits sys.path" in problems[0] and "_standardize" in problems[1]
