"""The package layout (issues 9, 22): the parts' imports follow the floors, and the public API and CLIs stay.

Floors: (shared leaf utilities) -> envs -> model -> agent -> training / evaluation / export. A part may
import its own modules and the parts on lower floors, never a part on its own floor or above (training,
evaluation and export are siblings), never the package root ``v4s_agent`` (the public API above every
floor, which wires the parts together), and never another part's private (``_``-prefixed) names.
Checked statically on every module's imports: top-level, inside functions, and
``importlib.import_module("...")`` with a constant name.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# package folder in the repo -> dotted package it installs as
PACKAGES = {
    ROOT / "v4s_agent": "v4s_agent",
    ROOT / "envs": "v4s_agent.envs",
    ROOT / "training": "v4s_agent.training",
    ROOT / "export": "v4s_agent.export",
}
# shared leaf utilities (floor -1): every part may import them, they import nothing of v4s_agent
BASE = {"v4s_agent.integrity": -1, "v4s_agent.outputs": -1}
# part -> its floor
FLOORS = {
    **BASE,
    "v4s_agent.envs": 0,
    "v4s_agent.model": 1,
    "v4s_agent.agent": 2,
    "v4s_agent.training": 3,
    "v4s_agent.evaluation": 3,
    "v4s_agent.export": 3,
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, dotted in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder.name == "v4s_agent" and parts and parts[0] in {"envs", "training", "export"}:
                continue
            out[".".join([dotted, *parts])] = path
    return out


def _imports(module: str, source: str, is_pkg: bool = False) -> set[str]:
    """Absolute dotted names of everything ``module`` imports (relative imports resolved).

    ``from X import y`` gives ``X.y`` (a submodule or a name in ``X``), so ``from .. import envs`` is an
    import of ``v4s_agent.envs``, not of the package root.
    """
    package = module if is_pkg else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.update(f"{prefix}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            names.add(node.args[0].value)
    return names


def _part(name: str) -> str | None:
    """The part ``name`` lies in, ``"root"`` for the package root and its own modules, ``None`` outside."""
    if name != "v4s_agent" and not name.startswith("v4s_agent."):
        return None
    import v4s_agent

    moved = next(
        (new for old, new in v4s_agent._MOVED.items() if name == old or name.startswith(old + ".")), None
    )
    if moved is not None:  # an old module name is an alias of the moved module
        name = moved
    return next((p for p in FLOORS if name == p or name.startswith(p + ".")), "root")


def back_edges(module: str, names: set[str]) -> list[str]:
    """Every import in ``names`` by ``module`` that climbs back against the floors (empty: none)."""
    own = _part(module)
    if own in (None, "root"):
        return []  # the package root and its CLIs sit above every floor
    bad = []
    for name in sorted(names):
        target = _part(name)
        if target is None or target == own:
            continue
        if target == "root":
            bad.append(f"{module} imports the package root ({name})")
        elif FLOORS[target] >= FLOORS[own]:
            bad.append(
                f"{module} ({own}, floor {FLOORS[own]}) imports {name} ({target}, floor {FLOORS[target]})"
            )
        elif name.rsplit(".", 1)[-1].startswith("_") and not name.endswith("__"):
            bad.append(f"{module} reaches into the private name {name}")
    return bad


def test_parts_exist_as_folders() -> None:
    for part in ("model", "agent", "evaluation"):
        assert (ROOT / "v4s_agent" / part / "__init__.py").is_file(), part
    flat = sorted(p.name for p in (ROOT / "v4s_agent").glob("*.py"))
    # the top level holds only the public API, the two CLIs and the shared leaf utilities
    base = [m.rsplit(".", 1)[1] + ".py" for m in BASE]
    assert flat == sorted(["__init__.py", "evaluate.py", "rollout.py", *base]), flat


def test_imports_follow_the_floors() -> None:
    mods = _modules()
    assert {"v4s_agent.model.transformer_v4s", "v4s_agent.envs.nav_env", "v4s_agent.export.graphs"} <= set(
        mods
    )
    assert {_part(m) for m in mods} == {*FLOORS, "root"}, "every part is on a floor"
    bad = []
    for module, path in mods.items():
        bad += back_edges(module, _imports(module, path.read_text(), path.name == "__init__.py"))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # the three back-edges issue 22 removed, as they were written
        ("v4s_agent.agent.planner", "from .. import export as _export\n", ["imports v4s_agent.export"]),
        ("v4s_agent.envs.vector", "def f():\n    import v4s_agent\n", ["imports the package root"]),
        ("v4s_agent.evaluation.evaluate", "from ..agent.planner import _resize\n", ["private name"]),
        # a lower floor importing a higher one, lazily and by name
        (
            "v4s_agent.model.m",
            "def f():\n    from ..agent.planner import VideoPlanner\n"
            "    importlib.import_module('v4s_agent.evaluation.metrics')\n",
            ["imports v4s_agent.agent.planner", "imports v4s_agent.evaluation.metrics"],
        ),
        (
            "v4s_agent.evaluation.m",
            "from v4s_agent.training.dataset import X\n",
            ["imports v4s_agent.training"],
        ),
        (
            "v4s_agent.envs.m",
            "from v4s_agent.planner import VideoPlanner\n",
            ["(v4s_agent.agent, floor 2)"],
        ),  # old alias
        ("v4s_agent.integrity", "from .model.bbox import draw_red_box\n", ["imports v4s_agent.model.bbox"]),
        # allowed: down the floors, within a part, the root's own wiring, other packages
        ("v4s_agent.export.graphs", "from v4s_agent.agent.inverse_dynamics import IDMConfig\n", []),
        ("v4s_agent.agent.m", "from ._private import x\nfrom ..envs import geometry\nimport numpy\n", []),
        ("v4s_agent", "from .export import load_runtime_pipeline\n", []),
    ],
)
def test_floor_check_catches_a_back_edge(module: str, source: str, expected: list[str]) -> None:
    """The checker is not vacuous: each synthetic back-edge is reported, each allowed import is not."""
    bad = back_edges(module, _imports(module, source, is_pkg=module == "v4s_agent"))
    assert len(bad) == len(expected), bad
    for want, got in zip(expected, bad, strict=True):
        assert want in got, (want, got)


def test_env_id_agrees_with_the_vector_entry_point() -> None:
    """``envs.vector`` names the id the root registers (it must not import the root to read it)."""
    from v4s_agent.envs import vector

    import v4s_agent

    assert vector.ENV_ID == v4s_agent.ENV_ID


def test_every_documented_name_imports() -> None:
    import v4s_agent.envs as envs

    import v4s_agent

    for name in v4s_agent.__all__:
        assert getattr(v4s_agent, name) is not None, name
    for name in envs.__all__:
        assert getattr(envs, name) is not None, name
    import gymnasium

    assert "V4SNav-v0" in gymnasium.registry


def test_old_module_names_resolve_to_the_moved_modules() -> None:
    import v4s_agent

    for old, new in v4s_agent._MOVED.items():
        a, b = importlib.import_module(old), importlib.import_module(new)
        assert a is b and b.__spec__.name == new, old


def test_shipped_checkpoint_names_resolvable_classes() -> None:
    index = json.loads((ROOT / "v4s_agent/checkpoints/default/pipeline/model_index.json").read_text())
    for key, val in index.items():
        if isinstance(val, list) and val[0]:
            lib, cls = val
            assert hasattr(importlib.import_module(lib), cls), (key, lib, cls)


def _cli_commands() -> list[list[str]]:
    py = sys.executable
    cmds = [
        [py, "-m", m, "--help"]
        for m in (
            "v4s_agent.rollout",
            "v4s_agent.evaluate",
            "v4s_agent.evaluation.evaluator_detector",
            "v4s_agent.training.generate_data",
            "v4s_agent.training.train",
            "v4s_agent.training.train_idm",
            "v4s_agent.training.package",
            "v4s_agent.training.export",  # the old name of training.package
            "v4s_agent.export",
        )
    ]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, func = target.split(":")
        cmds.append([py, "-c", f"import sys; from {module} import {func}; sys.exit({func}(['--help']))"])
    return cmds


def test_every_cli_answers_help() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        (c, subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
        for c in _cli_commands()
    ]
    failed = []
    for cmd, p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode != 0 or "usage" not in out.lower():
            failed.append(f"{' '.join(cmd[1:])}: rc={p.returncode}\n{out[-800:]}")
    assert not failed, "\n\n".join(failed)


@pytest.mark.parametrize("folder", ["model", "agent", "evaluation"])
def test_readme_points_at_new_paths(folder: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"v4s_agent/{folder}/" in readme


def test_moved_modules_still_find_their_files() -> None:
    """Paths computed from ``__file__`` moved with their modules: the shipped folders must resolve."""
    from v4s_agent.agent.planner import DEFAULT_CHECKPOINT
    from v4s_agent.evaluation.evaluate import HABITAT_ASSETS
    from v4s_agent.evaluation.evaluator_detector import DEFAULT_DETECTOR

    assert (DEFAULT_CHECKPOINT / "pipeline" / "model_index.json").is_file(), DEFAULT_CHECKPOINT
    assert (DEFAULT_DETECTOR / "model.safetensors").is_file(), DEFAULT_DETECTOR
    import v4s_agent.envs as envs_pkg

    assert Path(envs_pkg.__file__).resolve().parent / "assets" / "habitat_test_assets" == HABITAT_ASSETS
    assert (HABITAT_ASSETS / "chair_in_stage.glb").is_file(), HABITAT_ASSETS
