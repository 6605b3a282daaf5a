"""The package layout (issue 9): the parts' imports follow the data flow, and the public API and CLIs stay.

envs -> training -> model -> agent -> evaluation / export: a part may import the parts before it, never
the ones after it. Checked statically on every module's imports (top-level and inside functions).
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
# part -> the parts it must never import
FORBIDDEN = {
    "v4s_agent.model": ("v4s_agent.agent", "v4s_agent.evaluation", "v4s_agent.envs"),
    "v4s_agent.agent": ("v4s_agent.evaluation",),
    "v4s_agent.envs": ("v4s_agent.model", "v4s_agent.agent", "v4s_agent.evaluation"),
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


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of everything ``module`` imports (relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{a.name}" for a in node.names)
    return names


def test_parts_exist_as_folders() -> None:
    for part in ("model", "agent", "evaluation"):
        assert (ROOT / "v4s_agent" / part / "__init__.py").is_file(), part
    flat = sorted(p.name for p in (ROOT / "v4s_agent").glob("*.py"))
    # the top level holds only the public API and the two CLIs
    assert flat == ["__init__.py", "evaluate.py", "rollout.py"], flat


def test_imports_follow_the_data_flow() -> None:
    mods = _modules()
    assert "v4s_agent.model.transformer_v4s" in mods and "v4s_agent.envs.nav_env" in mods
    bad = []
    for module, path in mods.items():
        for part, forbidden in FORBIDDEN.items():
            if module != part and not module.startswith(part + "."):
                continue
            for name in _imports(module, path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    bad.append(f"{module} imports {name}")
    assert not bad, "\n".join(bad)


def test_flow_check_catches_a_backward_import(tmp_path: Path) -> None:
    """The checker is not vacuous: a model module importing the agent is reported."""
    p = tmp_path / "m.py"
    p.write_text("from ..agent.planner import VideoPlanner\nimport v4s_agent.envs\n")
    names = _imports("v4s_agent.model.m", p)
    assert "v4s_agent.agent.planner" in names and "v4s_agent.envs" in names


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
            "v4s_agent.training.export",
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
