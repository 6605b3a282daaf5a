"""Issue 23, groups 1, 5, 6 and 8: ``--out`` never deletes foreign files, inputs are checked at the API edge
(observations, instructions, context, annotations, scene size, CLI arguments), JSON outputs are strict."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import make_tiny_checkpoint
from v4s_agent.envs.scenes import SceneError, load_gltf_scene

from v4s_agent.integrity import dumps_strict
from v4s_agent.outputs import MARKER, AtomicDir, OutputDirError, check_out_dir

ASSETS = Path(__file__).resolve().parents[1] / "envs" / "assets" / "habitat_test_assets"


def _strict(text: str):
    """Parse JSON rejecting the non-standard NaN/Infinity tokens (what a strict parser does)."""

    def bad(tok: str):
        raise ValueError(f"non-standard JSON token {tok}")

    return json.loads(text, parse_constant=bad)


# ------------------------------------------------------------------------------------ 1. output folders


def test_atomic_dir_refuses_a_foreign_folder_and_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "X"
    out.mkdir()
    (out / "f").write_text("keep")
    with pytest.raises(OutputDirError, match="--overwrite"), AtomicDir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
    assert (out / "f").read_text() == "keep" and sorted(p.name for p in out.iterdir()) == ["f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]  # no temp folder left


def test_atomic_dir_overwrite_merges_and_keeps_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "X"
    (out / "sub").mkdir(parents=True)
    (out / "f").write_text("keep")
    (out / "sub" / "g").write_text("keep too")
    (out / "summary.json").write_text("old")
    with AtomicDir(out, overwrite=True) as tmp:
        (tmp / "summary.json").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "plot.png").write_bytes(b"png")
    assert (out / "f").read_text() == "keep" and (out / "sub" / "g").read_text() == "keep too"
    assert (out / "summary.json").read_text() == "new" and (out / "sub" / "plot.png").read_bytes() == b"png"
    assert set(json.loads((out / MARKER).read_text())["files"]) == {"summary.json", "sub/plot.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]


def test_atomic_dir_replaces_its_own_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "X"
    with AtomicDir(out) as tmp:
        (tmp / "episode_001.mp4").write_bytes(b"1")
        (tmp / "summary.json").write_text("first")
    with AtomicDir(out) as tmp:  # a rerun into the same --out: ours to replace, no --overwrite needed
        (tmp / "summary.json").write_text("second")
    assert (out / "summary.json").read_text() == "second" and not (out / "episode_001.mp4").exists()
    (out / "notes.txt").write_text("mine")  # a user's file makes the folder foreign again
    with pytest.raises(OutputDirError, match="notes.txt"):
        check_out_dir(out)
    check_out_dir(tmp_path / "empty_new")  # absent: fine


def test_out_dir_under_a_file_or_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="which is a file"):
        check_out_dir(f / "sub" / "out")
    with pytest.raises(OutputDirError, match="is a file"):
        check_out_dir(f)


def test_rollout_out_keeps_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from v4s_agent.evaluation.rollout import main

    out = tmp_path / "X"
    out.mkdir()
    (out / "f").write_text("keep")
    args = ["--agent", "random", "--episodes", "1", "--max-steps", "5", "--no-video", "--resolution", "32",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    assert "did not write" in capsys.readouterr().err and not (out / "summary.json").exists()
    assert main([*args, "--overwrite"]) == 0
    assert (out / "f").read_text() == "keep"
    s = _strict((out / "summary.json").read_text())  # strict JSON: a missing number is null
    assert s["episodes"] == 1 and (s["mean_final_sd"] is None or math.isfinite(s["mean_final_sd"]))
    assert "NaN" not in (out / "summary.json").read_text()


def test_rollout_out_under_a_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from v4s_agent.evaluation.rollout import main

    (tmp_path / "file").write_text("x")
    rc = main(["--agent", "random", "--episodes", "1", "--no-video", "--out", str(tmp_path / "file" / "o")])
    assert rc == 2 and "is a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--sections", "bogus"], "--sections: unknown ['bogus']"),
        (["--sections", ""], "--sections"),
        (["--baselines", "nope"], "--baselines: unknown ['nope']"),
        (["--closed-episodes", "0"], "--closed-episodes"),
        (["--agent-option", "nope=1"], "--agent-option 'nope=1': expected KEY=VALUE"),
        (["--agent-option", "stop_rule=x"], "stop_rule must be one of"),
    ],
)
def test_evaluate_refuses_arguments_that_give_empty_results(tmp_path, capsys, args, msg) -> None:
    from v4s_agent.evaluation.evaluate import main

    out = tmp_path / "ev"
    assert main([*args, "--checkpoint", str(tmp_path / "never_loaded"), "--out", str(out)]) == 2
    assert msg in capsys.readouterr().err and not out.exists()


def test_agent_options_parse_to_config_values() -> None:
    from v4s_agent.evaluation.evaluate import agent_options

    opts = agent_options(["stop_rule=basic", "stop_views=1", "stop_parallax_m=0.25"])
    assert opts == {"stop_rule": "basic", "stop_views": 1, "stop_parallax_m": 0.25}


def test_evaluate_out_keeps_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from v4s_agent.evaluation.evaluate import main

    out = tmp_path / "X"
    out.mkdir()
    (out / "f").write_text("keep")
    assert main(["--quick", "--out", str(out)]) == 2  # refused before the planner loads
    assert "--overwrite" in capsys.readouterr().err and (out / "f").read_text() == "keep"
    assert main(["--quick", "--out", str(out / "f" / "sub")]) == 2  # --out under a file
    assert "which is a file" in capsys.readouterr().err


def test_strict_json_writes_null_for_nan() -> None:
    from v4s_agent.evaluation.rollout import summarize

    text = dumps_strict({"empty": summarize([]), "x": np.float32("nan"), "a": np.array([1.0, np.inf])})
    d = _strict(text)
    assert d["empty"]["success_rate"] is None and d["x"] is None and d["a"] == [1.0, None]


# ------------------------------------------------------------------------------------ 5. planner inputs


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory):
    from v4s_agent.agent.planner import VideoPlanner

    return VideoPlanner.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt")), device="cpu")


@pytest.mark.parametrize(
    "obs, msg",
    [
        (np.full((32, 32, 3), 0.5, np.float32), r"float32 values.*\* 255"),
        (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
        (np.zeros((32, 32), np.uint8), "grayscale"),
        (np.zeros((3, 32, 32), np.uint8), "channels-first"),
        (np.zeros((32, 32, 4), np.uint8), "RGBA"),
        (np.full((32, 32, 3), 300, np.int64), "outside 0..255"),
    ],
)
def test_plan_rejects_bad_observations(planner, obs, msg) -> None:
    ctx = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=msg):
        planner.plan(ctx, obs, "Find the chair.")


def test_plan_rejects_bad_instruction_and_context(planner) -> None:
    obs = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="instruction must be a string"):
        planner.plan(None, obs, None)
    with pytest.raises(ValueError, match="0 frames"):
        planner.plan(np.zeros((0, 32, 32, 3), np.uint8), obs, "Find the chair.")
    with pytest.raises(ValueError, match="'frames' entry"):
        planner.plan({"poses": np.zeros((2, 4, 4))}, obs, "Find the chair.")
    with pytest.raises(ValueError, match="context frames.*float"):
        planner.plan(np.zeros((4, 32, 32, 3), np.float64), obs, "Find the chair.")
    plan = planner.plan(None, obs.astype(np.int64), "Find the chair.")  # integer 0..255 is fine
    assert plan.frames.dtype == np.uint8


# --------------------------------------------------------------------------------- 8. env and agent API


def test_env_step_after_close_and_bad_options() -> None:
    from v4s_agent.envs import V4SNavEnv

    env = V4SNavEnv(task="pose", resolution=(32, 32), context_video="none")
    with pytest.raises(TypeError, match="must be a dict"):
        env.reset(seed=0, options="x")
    env.reset(seed=0)
    env.step(1)
    env.close()
    with pytest.raises(RuntimeError, match="after close"):
        env.step(1)


def test_agent_act_before_reset(planner) -> None:
    from v4s_agent.agent.agent import V4SAgent

    with pytest.raises(RuntimeError, match="before reset"):
        V4SAgent(planner).act(np.zeros((32, 32, 3), np.uint8))


# ----------------------------------------------------------------------------------------- 6. scenes


def _chair_ann() -> dict:
    return json.loads((ASSETS / "chair_in_stage.semantic.json").read_text())


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda o: o.update(node="no_such_node"), "names node 'no_such_node'"),
        (lambda o: o.update(instance_id="one"), "'instance_id' must be an integer"),
        (lambda o: o.update(category=5), "'category' must be a non-empty string"),
        (lambda o: (o.pop("node"), o.update(center="x")), "'center' as 3 finite numbers"),
        (lambda o: (o.pop("node"), o.update(center=[99.0, 99.0, 99.0])), "selects no triangles"),
    ],
)
def test_annotation_schema_errors_name_the_entry(edit, msg) -> None:
    ann = _chair_ann()
    edit(ann["objects"][0])
    with pytest.raises(SceneError, match=msg) as e:
        load_gltf_scene(ASSETS / "chair_in_stage.glb", annotation=ann)
    assert "objects[0]" in str(e.value)


def test_annotation_top_level_types() -> None:
    with pytest.raises(SceneError, match="'objects' must be a list"):
        load_gltf_scene(ASSETS / "chair_in_stage.glb", annotation={"objects": {"a": 1}})
    ann = _chair_ann()
    ann["objects"][1]["instance_id"] = ann["objects"][0]["instance_id"]
    with pytest.raises(SceneError, match="used twice"):
        load_gltf_scene(ASSETS / "chair_in_stage.glb", annotation=ann)


def test_goal_category_not_in_scene_names_what_is() -> None:
    from v4s_agent.envs import V4SNavEnv

    env = V4SNavEnv(task="object", scene=str(ASSETS / "chair_in_stage.glb"), goal_category="bed",
                    resolution=(32, 32), context_video="none")  # fmt: skip
    with pytest.raises(ValueError, match="'bed' is not present") as e:
        env.reset(seed=0)
    assert "6 annotated objects" in str(e.value) and "chair" in str(e.value)
    env.close()


def test_stage_scale_guard_hints_at_units(tmp_path: Path) -> None:
    glb = tmp_path / "room.glb"
    shutil.copy(ASSETS / "simple_room.glb", glb)
    cfg = json.loads((ASSETS / "simple_room.stage_config.json").read_text())
    (tmp_path / "room.stage_config.json").write_text(json.dumps({**cfg, "scale": [20, 20, 20]}))
    with pytest.raises(SceneError, match=r"larger than the 200 m.*centimetres"):
        load_gltf_scene(glb)
    (tmp_path / "room.stage_config.json").write_text(json.dumps({**cfg, "scale": "big"}))
    with pytest.raises(SceneError, match="'scale' must be a positive number"):
        load_gltf_scene(glb)


def test_scene_without_a_floor_is_refused(tmp_path: Path) -> None:
    import trimesh
    from v4s_agent.envs import V4SNavEnv

    glb = tmp_path / "box.glb"
    trimesh.Scene([trimesh.creation.box(extents=(0.4, 1.0, 0.4))]).export(glb)
    env = V4SNavEnv(task="pose", scene=str(glb), resolution=(32, 32), context_video="none", cache_dir=False)
    with pytest.raises(SceneError, match="walkable floor"):
        env.reset(seed=0)
    env.close()


# ------------------------------------------------------------------------------------------ 8. export CLI


def test_export_cli_bad_components_and_opset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from v4s_agent.export.__main__ import main

    out = tmp_path / "onnx"
    assert main(["onnx", "--config", "tiny", "--opset", "5", "--out", str(out)]) == 2
    assert "opset must be >= 18" in capsys.readouterr().err and not out.exists()
    assert main(["onnx", "--config", "tiny", "--components", "nope", "--out", str(out)]) == 2
    assert "unknown components ['nope']" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
