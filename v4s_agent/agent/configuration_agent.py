"""Agent configuration: every knob of the closed-loop V4S agent, validated once in ``__post_init__``.

Why a dataclass: the rollout/evaluate CLIs, the tests and a user's own loop all build agents from the
same validated object, and ``asdict`` makes it trivially serialisable into ``summary.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..model.sampling import check_sampling

CONTEXT_SAMPLING = ("coverage", "stratified", "uniform", "contiguous", "views")
NAVIGATION_MODES = ("map", "plan")
WAYPOINT_MODES = ("auto", "context_match", "odometry")
STOP_RULES = ("basic", "verified", "fitted")
CROSSCHECK_MODES = ("off", "log", "override")
CONTEXT_MODES = ("memory", "none")
POSITION_MODES = ("tour_range", "source")


@dataclass
class V4SAgentConfig:
    """Configuration of :class:`v4s_agent.agent.agent.V4SAgent`.

    Args:
        replan_every: receding horizon; execute this many actions of a plan, then re-plan.
        num_context_frames: context frames per plan (``None``: the model config's ``num_context_frames``).
        context_sampling: how context frames are drawn from memory: ``"coverage"`` (retrieval by
            field-of-view overlap with the path ahead and scene coverage, ``context_retrieval.py``;
            needs poses, else even in time), ``"stratified"`` (sparse, sorted,
            one random frame per equal-length segment, the paper's non-contiguous sampling),
            ``"uniform"`` (evenly spaced, deterministic), ``"contiguous"`` (the last K frames) or
            ``"views"`` (the context the planner was trained with for its use: on the pose task the
            path's closest views, ``envs.scene_video.closest_views``; on the object task the coverage
            choice with up to ``GOAL_VIEWS`` of the detector's goal views of the scene video in it, the
            soonest reached from the agent's pose first, ``choose_goal_context``'s rule).
        context_mode: ``"memory"`` (tour + seen frames) or ``"none"`` (no context: the planner is given
            pure-noise context, the "planner without context" baseline).
        recent_context: how many of the most recently seen frames are always in the context (the current
            view is the target's first frame anyway).
        position_mode: RoPE positions of memory frames: ``"tour_range"`` (tour + seen frames squeezed into
            the tour's index range, where training put all context positions) or ``"source"`` (raw memory
            index; seen frames lie past the tour).
        memory_every: add every n-th observation to the context memory.
        memory_max_seen: cap on seen frames kept in memory (oldest are dropped first).
        stop_sd: the imagined goal box must be at most this SD (normalised centre distance) to stop.
        stop_box_confidence: minimal confidence of the red box read back from the auxiliary frames.
        stop_similarity: minimal similarity in [0, 1] of the current view to the imagined goal view.
        stop_idm_prob: ... or the IDM's STOP probability of the first imagined transition is at least this
            (the model imagines standing still: it thinks the goal view is reached).
        min_steps_before_stop: never stop before this many steps (avoids stopping on a first bad plan).
        pose_stop_distance: pose task: stop when odometry says the goal pose is this close (metres).
        pose_stop_yaw_deg: pose task: ... and the heading error is below this (degrees).
        crosscheck: OpenCV relative-pose cross-check of IDM actions: ``"off"``, ``"log"`` (count and log
            disagreements) or ``"override"`` (use the geometric action where it is confident and differs).
            Off by default: it costs about 0.2 s per executed transition on one CPU core, more than a plan.
        cv_min_inliers: minimal RANSAC inliers for the geometric estimate to count as confident.
        num_inference_steps: sampler steps (``None``: the model's, see ``v4s_agent.model.sampling``).
        guidance_scale: joint CFG scale, >= 1 (``None``: the model's).
        seed: seeds the context sampling and the diffusion noise (same seed, same episode).
        navigation: ``"map"``: the plan gives a waypoint and the depth + odometry map drives there without
            collisions (needs depth and odometry; else falls back); ``"plan"``: execute decoded actions.
        waypoint: where a plan points: ``"context_match"`` (pose of the context frame most like the
            imagined goal view), ``"odometry"`` (dead reckoning of the decoded actions) or ``"auto"``
            (the match when its similarity is at least ``match_similarity`` and stands 0.15 above the
            median frame's, else odometry).
        match_similarity: minimal similarity of the imagined goal view to a context frame to trust it.
        depart_similarity: re-plan early when the current view is less similar than this to the frame
            the plan imagined for this step (the world departed from the plan).
        context_viewpoints: also take goal viewpoints from the context video with the detector (the
            frames that show the goal centred, at their poses); off for the no-context row.
        stop_rule: the map stack's stop: ``"basic"`` (:class:`~.object_search.ObjectSearch`: the core
            detection centred and near, or a reproduced context-video view) or ``"verified"``
            (:class:`~.verified_search.VerifiedSearch`, the frontier baseline's: the whole box centred,
            seen from two standpoints). Basic by default: on 30 held-out episodes (500 steps) both reach
            18/30, verified stops short once instead of 6 times but wanders 11 times instead of 6, and
            the quick start gives 1/3 with it instead of 2/3 (docs/RESULTS_CLOSED_LOOP.md). ``"fitted"``:
            the basic stop that also needs the detector's own fitted box rule to see the goal centred
            (``ObjectSearch(fitted_stop=True)``).
        standpoint: a goal within the stop distance but too low in the pitched view to stop at is viewed
            again from a cell where its seen points are predicted centred (:mod:`.standpoints`); ``False``:
            the older final approach (turn in front of it until the patience runs out).
        scan_turns, scan_first: the map stack's look-around at the start (15-degree turns), and whether it
            also runs when the context video gave goal viewpoints (``ObjectSearch(scan_first=)``).
        reproduce_stop: the basic stop also accepts a reproduced context look-around view of the goal
            (``ObjectSearch(reproduce_stop=)``, the verified stop never does).
        stop_views, stop_parallax_m: the verified stop's evidence: the goal at the same place in the last
            ``stop_views`` frames and seen from a standpoint at least ``stop_parallax_m`` away.
    """

    replan_every: int = 8
    num_context_frames: int | None = None
    context_sampling: str = "coverage"
    context_mode: str = "memory"
    recent_context: int = 0
    position_mode: str = "tour_range"
    memory_every: int = 2
    memory_max_seen: int = 64
    stop_sd: float = 0.2
    stop_box_confidence: float = 0.3
    stop_similarity: float = 0.75
    stop_idm_prob: float = 0.5
    min_steps_before_stop: int = 1
    pose_stop_distance: float = 0.3
    pose_stop_yaw_deg: float = 7.5
    crosscheck: str = "off"
    cv_min_inliers: int = 12
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    navigation: str = "map"
    waypoint: str = "auto"
    match_similarity: float = 0.7
    depart_similarity: float = 0.4
    context_viewpoints: bool = True
    stop_rule: str = "basic"
    stop_views: int = 2
    stop_parallax_m: float = 0.5
    standpoint: bool = True
    reproduce_stop: bool = True
    scan_turns: int = 24
    scan_first: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1. Got {self.replan_every}")
        if self.num_context_frames is not None and self.num_context_frames < 1:
            raise ValueError(f"num_context_frames must be >= 1 or None. Got {self.num_context_frames}")
        if self.context_sampling not in CONTEXT_SAMPLING:
            raise ValueError(
                f"context_sampling must be one of {CONTEXT_SAMPLING}. Got {self.context_sampling!r}"
            )
        if self.context_mode not in CONTEXT_MODES:
            raise ValueError(f"context_mode must be one of {CONTEXT_MODES}. Got {self.context_mode!r}")
        if self.navigation not in NAVIGATION_MODES:
            raise ValueError(f"navigation must be one of {NAVIGATION_MODES}. Got {self.navigation!r}")
        if self.stop_views < 1 or self.stop_parallax_m < 0:
            raise ValueError(
                "stop_views must be >= 1 and stop_parallax_m >= 0. "
                f"Got {self.stop_views}, {self.stop_parallax_m}"
            )
        if self.scan_turns < 0:
            raise ValueError(f"scan_turns must be >= 0. Got {self.scan_turns}")
        if self.stop_rule not in STOP_RULES:
            raise ValueError(f"stop_rule must be one of {STOP_RULES}. Got {self.stop_rule!r}")
        if self.waypoint not in WAYPOINT_MODES:
            raise ValueError(f"waypoint must be one of {WAYPOINT_MODES}. Got {self.waypoint!r}")
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}. Got {self.position_mode!r}")
        if self.crosscheck not in CROSSCHECK_MODES:
            raise ValueError(f"crosscheck must be one of {CROSSCHECK_MODES}. Got {self.crosscheck!r}")
        if self.recent_context < 0:
            raise ValueError(f"recent_context must be >= 0. Got {self.recent_context}")
        if self.memory_every < 1:
            raise ValueError(f"memory_every must be >= 1. Got {self.memory_every}")
        if self.memory_max_seen < 0:
            raise ValueError(f"memory_max_seen must be >= 0. Got {self.memory_max_seen}")
        for name in (
            "stop_sd",
            "stop_box_confidence",
            "stop_similarity",
            "stop_idm_prob",
            "match_similarity",
            "depart_similarity",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]. Got {v}")
        if self.min_steps_before_stop < 0:
            raise ValueError(f"min_steps_before_stop must be >= 0. Got {self.min_steps_before_stop}")
        if self.pose_stop_distance <= 0 or self.pose_stop_yaw_deg <= 0:
            raise ValueError(
                f"pose_stop_distance and pose_stop_yaw_deg must be > 0. "
                f"Got {self.pose_stop_distance}, {self.pose_stop_yaw_deg}"
            )
        if self.cv_min_inliers < 4:
            raise ValueError(
                f"cv_min_inliers must be >= 4 (homography needs 4 points). Got {self.cv_min_inliers}"
            )
        check_sampling(self.num_inference_steps, self.guidance_scale)  # the sampler's rule; None: the model's

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view, written into rollout/evaluation summaries."""
        return asdict(self)
