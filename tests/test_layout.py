"""The shape of the house: public surfaces only, no cycles, a lazy plugin, one name per option."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import prune_core
from prune_core import PruningKeywords, PruningOptions

ROOT = Path(__file__).parents[1]
PUBLIC = {"prune_core", "prune_core.channels", "prune_core.finetune"}
OUTSIDE = ["sweeps", "analysis", "hydra_plugins", "benchmarks", "tests"]


def imports(path: Path) -> list[str]:
    """Every module a Python file imports (``from x import y`` gives ``x``)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
    return found


def test_nothing_outside_prune_core_imports_its_private_modules():
    reach_ins = [f"{path.relative_to(ROOT)}: {module}"
                 for folder in OUTSIDE for path in sorted((ROOT / folder).rglob("*.py"))
                 for module in imports(path) if module.startswith("prune_core") and module not in PUBLIC]
    assert reach_ins == []


def test_the_wings_never_import_the_top_or_each_other():
    for wing, other in (("channels", "finetune"), ("finetune", "channels")):
        for path in sorted((ROOT / "prune_core" / wing).glob("*.py")):
            for module in imports(path):
                assert not module.startswith(f"prune_core.{other}"), f"{path.name} imports {module}"
                assert module.startswith(f"prune_core.{wing}") or not module.startswith("prune_core"), (
                    f"{path.name} imports {module}, above its wing")


def test_the_plugin_scan_does_not_import_optuna():
    script = ("import sys\nfrom hydra.core.plugins import Plugins\nfrom hydra.plugins.sweeper import Sweeper\n"
              "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]\n"
              "print('OptunaSweeper' in names, 'optuna' in sys.modules)")
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
