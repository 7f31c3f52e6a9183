"""The shape of the house: public surfaces only, no cycles, the app above its layout and below the
analysis, a generic plugin that Hydra's scan loads cheaply, one name per option."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx

import prune_core
from prune_core import PruningKeywords, PruningOptions

ROOT = Path(__file__).parents[1]
PUBLIC = {"prune_core", "prune_core.channels", "prune_core.finetune"}
OUTSIDE = ["sweeps", "analysis", "optuna_sweep", "hydra_plugins", "benchmarks", "tests"]
FIRST_PARTY = ["prune_core", "sweeps", "analysis", "optuna_sweep", "hydra_plugins"]


def imports(path: Path) -> list[str]:
    """Every module a Python file imports, at its top or inside a function (``from x import y``: ``x.y``
    when that is a module, else ``x``)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [
                f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}") else node.module
                for alias in node.names
            ]
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """First-party modules and who imports whom (an import of ``a.b.c`` that is no module counts as ``a.b``)."""
    graph = nx.DiGraph()
    for package in FIRST_PARTY:
        for path in sorted((ROOT / package).rglob("*.py")):
            me = module_name(path)
            graph.add_node(me)
            for name in imports(path):
                while name and not _is_module(name):
                    name = name.rpartition(".")[0]
                if name.split(".")[0] in FIRST_PARTY and name != me:
                    graph.add_edge(me, name)
    return graph


def collapsed(graph: nx.DiGraph, depth: int) -> nx.DiGraph:
    """The graph of packages: each module as its first ``depth`` name parts (``sweeps.tracking``, ``sweeps.layout``)."""
    packages = nx.DiGraph()
    for a, b in graph.edges:
        a, b = (".".join(name.split(".")[:depth]) for name in (a, b))
        if a != b:
            packages.add_edge(a, b)
    return packages


def test_no_import_cycles_between_files_or_packages():
    graph = import_graph()
    assert "sweeps.tracking.study_run" in graph and "analysis.choice" in graph
    assert list(nx.simple_cycles(graph)) == [], "cycles between files"
    for depth in (1, 2):
        assert list(nx.simple_cycles(collapsed(graph, depth))) == [], f"package cycles at depth {depth}"


def test_the_analysis_sits_above_the_app_and_both_read_one_neutral_layout():
    graph = import_graph()
    app = [name for name in graph if name.startswith("sweeps")]
    assert [(a, b) for a in app for b in graph.successors(a) if b.startswith("analysis")] == []
    below_layout = nx.descendants(graph, "sweeps.layout")
    assert not any(name.startswith(("sweeps", "analysis", "optuna_sweep", "hydra_plugins")) for name in below_layout)
    script = (
        "import sys\nimport sweeps.layout\nprint('optuna' in sys.modules, 'hydra' in sys.modules)\n"
        "import analysis\nprint('optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr


def test_the_sweeper_plugin_knows_nothing_of_the_app():
    app_words = re.compile(
        r"\b(sweeps\.|prune_core|analysis|mlflow|latency_|onnx_|validation_|reduction)|"
        r"taylorprune\["
    )
    for package in ("optuna_sweep", "hydra_plugins"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found = [line for line in path.read_text().splitlines() if app_words.search(line)]
            assert found == [], f"{path.relative_to(ROOT)} names the app: {found[:3]}"


def test_nothing_outside_prune_core_imports_its_private_modules():
    reach_ins = [
        f"{path.relative_to(ROOT)}: {module}"
        for folder in OUTSIDE
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in imports(path)
        if module.startswith("prune_core") and module not in PUBLIC
    ]
    assert reach_ins == []


# Leaves of prune_core that import nothing of it: the wings may use them.
FOUNDATION = {"prune_core.checks"}


def test_the_wings_never_import_the_top_or_each_other():
    for leaf in FOUNDATION:
        path = ROOT / f"{leaf.replace('.', '/')}.py"
        assert [m for m in imports(path) if m.startswith("prune_core")] == [], f"{leaf} imports prune_core"
    for wing, other in (("channels", "finetune"), ("finetune", "channels")):
        for path in sorted((ROOT / "prune_core" / wing).glob("*.py")):
            for module in imports(path):
                assert not module.startswith(f"prune_core.{other}"), f"{path.name} imports {module}"
                assert (
                    module.startswith(f"prune_core.{wing}")
                    or not module.startswith("prune_core")
                    or module in FOUNDATION
                ), f"{path.name} imports {module}, above its wing"


def test_the_plugin_scan_does_not_import_optuna():
    script = (
        "import sys\nfrom hydra.core.plugins import Plugins\nfrom hydra.plugins.sweeper import Sweeper\n"
        "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]\n"
        "print('OptunaSweeper' in names, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_the_keyword_form_lists_exactly_the_options():
    assert list(PruningKeywords.__annotations__) == [f.name for f in dataclasses.fields(PruningOptions)]


def test_the_public_api_is_importable_and_documented():
    for name in prune_core.__all__:
        value = getattr(prune_core, name)
        assert value is not None
        if callable(value) and not isinstance(value, type(prune_core.CRITERIA)):
            assert value.__doc__, f"prune_core.{name} has no docstring"


def test_prune_core_runs_on_its_core_dependencies_alone():
    """``pip install taylorprune`` gives torch, numpy, pandas and tqdm: prune_core must not need the extras."""
    script = '''
import importlib.abc, importlib.machinery, sys
EXTRAS = ("matplotlib", "seaborn", "hydra", "omegaconf", "optuna", "mlflow", "sklearn", "scipy", "plotly",
          "psutil", "filelock", "mnist1d", "sweeps", "analysis", "hydra_plugins")
class Refuse(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Extras look absent: a spec without origin (what probing sees), whose import fails."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not a core dependency")
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Refuse())
import torch, prune_core
from torch import nn
net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
x, y = torch.randn(32, 1, 8), torch.randint(0, 2, (32,))
opts = prune_core.TrainingOptions("adam", max_epochs=1, mini_batch_size=16)
print(prune_core.compress_network(net, x, y, "crossentropy", opts, goal=0.5, increment=0.25)[1].stop_reason)
try:
    prune_core.PruningOptions(plots="pruning-progress")
except ValueError as exc:
    print(exc)
'''
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Learnables reduction goal reached." in out.stdout
    assert "plots='pruning-progress' needs matplotlib" in out.stdout
