"""The V4S agent drives plans on its depth + odometry map (issue 21): a plan that keeps decoding
"forward" into a wall must not make the agent walk into it."""

from __future__ import annotations

import numpy as np

from v4s_agent.agent.action_decoding import MOVE_FORWARD
from v4s_agent.agent.agent import V4SAgent
from v4s_agent.agent.planner import Plan


class _ForwardPlanner:
    """The failure mode of the shipped planner: every plan imagines walking straight on."""

    num_context_frames, num_target_frames, num_box_frames, height, width = 2, 5, 0, 16, 16

    def __init__(self) -> None:
        self.calls = 0

    def with_settings(self, **_: object) -> _ForwardPlanner:
        return self

    def plan(self, context, observation, instruction, **_: object) -> Plan:  # noqa: ANN001
        self.calls += 1
        frames = np.repeat(np.asarray(observation)[None, :16, :16], 5, axis=0).astype(np.uint8)
        return Plan(
            frames=frames,
            num_trajectory_frames=5,
            box=None,
            box_confidence=0.0,
            box_sd=float("nan"),
            actions=np.full(4, MOVE_FORWARD),
            action_probs=np.tile(np.eye(4)[MOVE_FORWARD], (4, 1)),
        )


def test_forward_plans_do_not_walk_into_walls() -> None:
    from v4s_agent.evaluation.rollout import make_env

    env = make_env("object", None, None, (64, 64), ("rgb", "depth"), 80)
    planner = _ForwardPlanner()
    agent = V4SAgent(planner, replan_every=6)  # type: ignore[arg-type]
    obs, info = env.reset(seed=0)
    agent.reset(obs, info)
    assert agent.search is not None  # depth + odometry given: the map drives
    assert type(agent.search).__name__ == "ObjectSearch"  # the basic stop (default)
    verified = V4SAgent(planner, stop_rule="verified")  # type: ignore[arg-type]
    verified.reset(obs, info)
    assert type(verified.search).__name__ == "VerifiedSearch"  # the frontier baseline's stop
    collisions = steps = 0
    start = info["agent_pose"][[0, 2], 3]
    far = 0.0
    for _ in range(80):
        obs, _, term, trunc, info = env.step(agent.act(obs, info))
        steps += 1
        collisions += int(info["collided"])
        far = max(far, float(np.linalg.norm(info["agent_pose"][[0, 2], 3] - start)))
        if term or trunc:
            break
    env.close()
    assert planner.calls >= 3  # it kept planning on the horizon
    assert agent.stats["waypoints"]["odometry"] + agent.stats["waypoints"]["context_match"] == planner.calls
    assert collisions <= 0.1 * steps  # the old agent collided on ~70 % of its steps here
    assert far > 1.0  # and it did go somewhere
