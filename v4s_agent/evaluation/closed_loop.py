"""Closed-loop evaluation rows, optionally spread over worker processes (``evaluate --workers N``).

Why rows are specs and not objects: a worker process must rebuild its agent from something picklable
(GL contexts and torch modules do not cross processes), so a row is a :class:`RowSpec` (agent kind,
checkpoint, agent options) and each worker keeps its own planner/detector cache. Episodes are split by
seed into contiguous chunks, so a row's results do not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import mean_interval, wilson_interval
from .rollout import ExpertAgent, RandomAgent, make_env, run_episode, scene_key, set_threads, summarize

KINDS = ("v4s", "v4s_no_context", "v4s_wrong_context", "random", "expert", "frontier")
OBS_KEYS = ("rgb", "depth")  # every row gets the same sensors: RGB, depth, odometry (info), instruction


@dataclass
class RowSpec:
    """One closed-loop row: which agent, from which checkpoint, with which options."""

    row: str
    kind: str
    checkpoint: str | None = None
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    planner_kwargs: dict[str, Any] = field(default_factory=dict)
    detector: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown agent kind {self.kind!r}; choose from {KINDS}")


_PLANNERS: dict[Any, Any] = {}
_DETECTORS: dict[Any, Any] = {}


def _planner(spec: RowSpec) -> Any:
    from ..agent.planner import VideoPlanner

    key = (spec.checkpoint, tuple(sorted(spec.planner_kwargs.items())))
    if key not in _PLANNERS:
        _PLANNERS[key] = VideoPlanner.from_pretrained(spec.checkpoint, **spec.planner_kwargs)
    return _PLANNERS[key]


def _detector(path: str | None, env: Any = None) -> Any:
    """The learned detector at ``path`` (cached; ``None``: the shipped goal detector), or with
    ``path="oracle"`` the diagnostic :class:`~.oracle_detector.OracleGoalDetector` on ``env`` over it."""
    from .evaluator_detector import load_goal_detector
    from .oracle_detector import ORACLE, OracleGoalDetector

    if path == ORACLE:
        return OracleGoalDetector(_detector(None), env)
    if path not in _DETECTORS:
        _DETECTORS[path] = load_goal_detector(path)
    return _DETECTORS[path]


class WrongContextAgent:
    """The planner agent given **another scene's** tour instead of its own (the wrong-context row).

    The other scene is the env split's episode ``seed' = offset + k`` for the first ``k`` whose tour differs
    from the episode's own, read from a second env so the evaluated episode is untouched.
    """

    def __init__(self, agent: Any, env_kwargs: dict[str, Any], offset: int = 50_000) -> None:
        self.agent, self.env_kwargs, self.offset = agent, env_kwargs, offset
        self._ctx_env: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        if self._ctx_env is None:
            self._ctx_env = make_env(**self.env_kwargs)
        own = scene_key(info["context"])
        start = self.offset + int.from_bytes(own[:2], "little")
        for k in range(16):
            _, other = self._ctx_env.reset(seed=start + k)
            if scene_key(other["context"]) != own:
                self.agent.reset(obs, {**info, "context": other["context"]})
                return
        raise RuntimeError("could not find another scene's context (does the split have one scene only?)")

    def act(self, obs: Any, info: dict[str, Any] | None = None) -> int:
        return self.agent.act(obs, info)

    def close(self) -> None:
        if self._ctx_env is not None:
            self._ctx_env.close()
            self._ctx_env = None


def build_policy(spec: RowSpec, env: Any, env_kwargs: dict[str, Any]) -> Any:
    """The policy of a row, for one env (planners and detectors are cached per process)."""
    if spec.kind == "random":
        return RandomAgent(seed=int(spec.agent_kwargs.get("seed", 0)))
    if spec.kind == "expert":
        return ExpertAgent(env)
    if spec.kind == "frontier":
        from .baselines import FrontierAgent

        return FrontierAgent(_detector(spec.detector, env), **spec.agent_kwargs)
    from ..agent.agent import V4SAgent

    kw = dict(spec.agent_kwargs)
    if spec.kind == "v4s_no_context":
        kw["context_mode"] = "none"
    # the same detector as the frontier row: goal map and a verified stop under the plan's waypoints
    agent = V4SAgent(_planner(spec), detector=_detector(spec.detector, env), **kw)
    if spec.kind == "v4s_wrong_context":
        return WrongContextAgent(agent, env_kwargs)
    return agent


def _run_chunk(job: tuple[RowSpec, dict[str, Any], list[int], int | None]) -> list[Any]:
    spec, env_kwargs, seeds, threads = job
    set_threads(threads)
    env = make_env(**env_kwargs)
    policy = None
    try:
        policy = build_policy(spec, env, env_kwargs)
        return [run_episode(env, policy, s) for s in seeds]  # EpisodeResults (no frames: they pickle)
    finally:
        if hasattr(policy, "close"):
            policy.close()
        env.close()


def with_intervals(summary: dict[str, Any], per_episode: list[dict[str, Any]]) -> dict[str, Any]:
    """Add 95 % intervals (Wilson for the success rate, normal for SPL) to a closed-loop summary."""
    n = len(per_episode)
    k = int(round(sum(float(e["success"]) for e in per_episode)))
    summary["ci95"] = {
        "success_rate": wilson_interval(k, n),
        "spl": mean_interval([float(e["spl"]) for e in per_episode]),
    }
    return summary


def run_rows(
    specs: list[RowSpec],
    env_kwargs: dict[str, Any],
    seeds: list[int],
    workers: int = 1,
    threads: int | None = 1,
    progress: Any = None,
) -> dict[str, dict[str, Any]]:
    """Every row on the same episode seeds; ``workers`` processes share the (row, chunk) jobs."""
    env_kwargs = {"obs_keys": OBS_KEYS, **env_kwargs}
    n_chunks = max(1, min(len(seeds), workers))
    chunks = [list(c) for c in np.array_split(np.asarray(seeds), n_chunks) if len(c)]
    jobs = [(s, env_kwargs, [int(x) for x in c], threads) for s in specs for c in chunks]
    results: list[Any] = []
    if workers <= 1:
        for j in jobs:
            try:
                results.append(_run_chunk(j))
            except Exception as e:  # a row that cannot run is reported, the others go on
                results.append(e)
            if progress is not None:
                progress()
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_run_chunk, j) for j in jobs]
            for f in futures:
                try:
                    results.append(f.result())
                except Exception as e:
                    results.append(e)
                if progress is not None:
                    progress()
    out: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(specs):
        parts = results[i * len(chunks) : (i + 1) * len(chunks)]
        err = next((p for p in parts if isinstance(p, Exception)), None)
        if err is not None:
            out[spec.row] = {"error": f"{type(err).__name__}: {err}"}
            continue
        results_ep = [e for p in parts for e in p]
        per_ep = [e.to_dict() for e in results_ep]
        s = summarize(results_ep)
        s["per_episode"] = per_ep
        out[spec.row] = with_intervals(s, per_ep)
    return out
