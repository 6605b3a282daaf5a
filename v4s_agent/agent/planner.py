"""The visual planner: context video + current view + instruction -> imagined video -> goal box + actions.

Why a separate object from the agent: the planner is stateless (one call, one plan) so it can be used by
anyone's own loop, benchmarked for latency, and swapped between backends (PyTorch, ONNX Runtime,
TensorRT); the agent adds memory, the receding horizon and the stop rule on top.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..envs.geometry import decode_relative_poses, encode_relative_pose
from ..envs.goal_metrics import sd_from_box
from ..model.sampling import check_sampling
from .action_decoding import CVMotion, decode_actions, estimate_motion, idm_probs
from .runtimes import RuntimeLoader, load_runtime

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"


class CheckpointError(ValueError):
    """The checkpoint folder is missing or cannot be read."""


class BackendUnavailableError(RuntimeError):
    """The requested inference backend is not installed on this machine."""


@dataclass
class Plan:
    """One imagined plan.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` at the model resolution: frame 0 is the current observation,
            frames ``1..num_trajectory_frames-1`` the imagined trajectory (one frame per action), then
            the auxiliary frames in which the model marks the goal with a red box.
        num_trajectory_frames: how many of ``frames`` are the trajectory (the rest are auxiliary).
        box: the goal box read back from the auxiliary frames, pixel ``(x0, y0, x1, y1)`` at the model
            resolution, or ``None``.
        box_confidence: the red-box reader's confidence in ``box`` (0 when none).
        box_sd: SD of ``box`` (``nan`` when none).
        actions: int ``(num_trajectory_frames-1,)`` decoded actions (never STOP; the agent decides that).
        action_probs: float ``(num_trajectory_frames-1, 4)`` inverse-dynamics probabilities.
        cv_motion: the OpenCV relative-pose estimate of each imagined transition (empty if off).
        cv_disagreements: transitions where the confident geometric action differs from the IDM's.
        latency_ms: wall time of the whole ``plan`` call; ``generation_ms`` of the diffusion part.
        context_positions: the source indices of the context frames used.
        instruction: the instruction the plan was made for.
    """

    frames: np.ndarray
    num_trajectory_frames: int
    box: Box | None
    box_confidence: float
    box_sd: float
    actions: np.ndarray
    action_probs: np.ndarray
    cv_motion: list[CVMotion] = field(default_factory=list)
    cv_disagreements: int = 0
    latency_ms: float = 0.0
    generation_ms: float = 0.0
    context_positions: np.ndarray | None = None
    instruction: str = ""

    @property
    def trajectory(self) -> np.ndarray:
        """The observation followed by the imagined trajectory frames."""
        return self.frames[: self.num_trajectory_frames]

    @property
    def aux_frames(self) -> np.ndarray:
        """The auxiliary goal frames (with the red box drawn by the model)."""
        return self.frames[self.num_trajectory_frames :]

    @property
    def goal_frame(self) -> np.ndarray:
        """The frame the goal box was read from (last trajectory frame when there are no aux frames)."""
        aux = self.aux_frames
        return aux[0] if len(aux) else self.frames[self.num_trajectory_frames - 1]


def sample_context_indices(
    n: int, k: int, mode: str = "stratified", rng: np.random.Generator | None = None, recent: int = 0
) -> np.ndarray:
    """Sorted indices of ``k`` context frames out of ``n`` (with repeats only when ``n < k``).

    ``stratified`` is the paper's sparse non-contiguous sample: one random index per equal segment;
    ``uniform`` is evenly spaced; ``contiguous`` is the last ``k``. ``recent`` indices at the end of
    the memory are always included (the agent's latest views).
    """
    if n <= 0 or k <= 0:
        raise ValueError(f"need n > 0 and k > 0. Got n={n}, k={k}")
    rng = rng if rng is not None else np.random.default_rng(0)
    if n <= k:
        return np.sort(np.concatenate([np.arange(n), np.linspace(0, n - 1, k - n).round().astype(int)]))
    if mode == "contiguous":
        return np.arange(n - k, n)
    recent = min(recent, k - 1)
    tail = np.arange(n - recent, n)
    m, kk = n - recent, k - recent
    if mode == "uniform":
        head = np.linspace(0, m - 1, kk).round().astype(int)
    elif mode == "stratified":
        edges = np.linspace(0, m, kk + 1)
        lo, hi = np.floor(edges[:-1]).astype(int), np.maximum(np.floor(edges[1:]).astype(int), 1)
        hi = np.maximum(hi, lo + 1)
        head = np.minimum(rng.integers(lo, hi), m - 1)
    else:
        raise ValueError(f"unknown context sampling mode {mode!r}")
    return np.sort(np.concatenate([head, tail]))  # head < m <= tail: disjoint, sorted


def check_rgb(frames: Any, name: str = "observation", ndim: int = 3) -> np.ndarray:
    """``frames`` as uint8 RGB with ``ndim`` dimensions (``(H, W, 3)``, or ``(N, H, W, 3)`` for 4), or a
    ValueError that says what is wrong and how to convert it.

    Why: a float image in [0, 1] used to be cast to uint8 (an all-black plan), NaN went through, and
    grayscale or channels-first images failed deep inside the pipeline.
    """
    a = np.asarray(frames)
    shape = "(H, W, 3)" if ndim == 3 else "(N, H, W, 3)"
    if a.dtype == np.uint8:
        pass
    elif a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(
            f"{name} must be uint8 RGB in 0..255 {shape}; got {a.dtype} with values outside 0..255"
        )
    elif a.dtype.kind in "iu":
        a = a.astype(np.uint8)
    elif a.dtype.kind == "f":
        bad = "NaN/inf values" if a.size and not np.isfinite(a).all() else f"{a.dtype} values"
        raise ValueError(
            f"{name} must be uint8 RGB in 0..255 {shape}; got {bad}. Convert a float image in [0, 1] with "
            "(img * 255).round().clip(0, 255).astype(np.uint8)"
        )
    else:
        raise ValueError(f"{name} must be uint8 RGB in 0..255 {shape}; got dtype {a.dtype}")
    hint = ""
    if a.ndim == ndim - 1 or (a.ndim == ndim and a.shape[-1] == 1):
        hint = ": it looks grayscale; repeat it to 3 channels (np.repeat(img[..., None], 3, axis=-1))"
    elif a.ndim == ndim and a.shape[-1] == 4:
        hint = ": it looks RGBA; drop alpha with img[..., :3]"
    elif a.ndim == ndim and a.shape[-3] == 3 and a.shape[-1] != 3:
        hint = ": it looks channels-first; use img.transpose(1, 2, 0) (HWC)"
    if a.ndim != ndim or a.shape[-1] != 3 or min(a.shape[-3:-1], default=0) < 1:
        raise ValueError(f"{name} must be uint8 RGB {shape}; got shape {a.shape}{hint}")
    return a


def resize_frames(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize uint8 ``(..., H, W, 3)`` frames to ``(h, w)`` (area filter when shrinking); public because the
    evaluation compares real frames with imagined ones at the planner's resolution."""
    import cv2

    frames = np.asarray(frames)
    if frames.shape[-3:-1] == (h, w):
        return frames.astype(np.uint8, copy=False)
    flat = frames.reshape(-1, *frames.shape[-3:])
    interp = cv2.INTER_AREA if flat.shape[1] > h else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in flat])
    return out.reshape(*frames.shape[:-3], h, w, 3).astype(np.uint8)


def _cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


class VideoPlanner:
    """Context-guided video diffusion as a visual planner (Video4Spatial).

    Args:
        pipeline: a callable with the ``Video4SpatialPipeline`` call contract (see docs/INTERFACES.md),
            e.g. the PyTorch pipeline or an ONNX Runtime / TensorRT runtime from ``v4s_agent.export``.
        idm: an ``InverseDynamicsModel`` (``None``: decode actions by OpenCV geometry only).
        device: torch device for the IDM (and the pipeline when it is a torch module).
        num_inference_steps: sampler steps per plan (``None``: the model's, see ``v4s_agent.model.sampling``).
        guidance_scale: joint classifier-free guidance scale, >= 1 (``None``: the model's).
        crosscheck: ``"off"``, ``"log"`` or ``"override"``, see :class:`V4SAgentConfig`.
        cv_min_inliers: RANSAC inliers needed for a confident geometric estimate.
        seed: default seed of the diffusion noise when ``plan`` is not given one.
        backend: the backend name, for reports.
        model_config: H, W, K, T, ... when the pipeline object does not carry them.
        cfg_mode: guidance mode passed to the pipeline (``"joint"``, ``"text_only"``; ``None``: its default).
        bf16: run the PyTorch pipeline under bfloat16 autocast (faster on CPUs with AVX512-BF16 and on GPUs).
    """

    def __init__(
        self,
        pipeline: Any,
        idm: Any | None = None,
        device: str = "cpu",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        crosscheck: str = "log",
        cv_min_inliers: int = 12,
        seed: int = 0,
        backend: str = "torch",
        model_config: dict[str, Any] | None = None,
        cfg_mode: str | None = None,
        bf16: bool = False,
    ) -> None:
        check_sampling(num_inference_steps, guidance_scale, cfg_mode)  # None: the model's own setting
        self.pipeline = pipeline
        self.idm = idm
        self.device = device
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.crosscheck = crosscheck
        self.cv_min_inliers = cv_min_inliers
        self.seed = seed
        self.backend = backend
        self.cfg_mode = cfg_mode
        self.bf16 = bf16
        self.crosscheck_steps: int | None = None  # cross-check only the transitions that get executed
        self._calls = 0
        cfg = model_config or self._read_model_config(pipeline)
        self.height = int(cfg["height"])
        self.width = int(cfg["width"])
        self.num_context_frames = int(cfg["num_context_frames"])
        self.num_target_frames = int(cfg["num_target_frames"])
        self.num_box_frames = int(cfg.get("num_box_frames", 0))
        self.model_config = cfg

    _SETTINGS = (
        "num_inference_steps",
        "guidance_scale",
        "cfg_mode",
        "crosscheck",
        "cv_min_inliers",
        "crosscheck_steps",
        "seed",
        "bf16",
    )

    def with_settings(self, **settings: Any) -> VideoPlanner:
        """A planner sharing this one's pipeline and IDM with some settings changed; this one is unchanged.

        Why: an agent tunes sampling and cross-check settings for itself, while the planner it was given
        may be shared with other agents or the caller's own loop. Sampling settings follow the one rule of
        :func:`v4s_agent.model.sampling.check_sampling` (``None``: the model's own).
        """
        unknown = sorted(set(settings) - set(self._SETTINGS))
        if unknown:
            raise ValueError(f"unknown planner settings {unknown}; choose from {list(self._SETTINGS)}")
        check_sampling(*(settings.get(k) for k in ("num_inference_steps", "guidance_scale", "cfg_mode")))
        new = copy.copy(self)
        for name, value in settings.items():
            setattr(new, name, value)
        return new

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _read_model_config(pipeline: Any) -> dict[str, Any]:
        """Find H, W, K, T and the number of aux frames on whatever pipeline object we were given."""
        keys = ("height", "width", "num_context_frames", "num_target_frames", "num_box_frames")
        for src in (
            getattr(pipeline, "model_config", None),
            getattr(pipeline, "v4s_config", None),
            getattr(pipeline, "config", None),
            getattr(getattr(pipeline, "transformer", None), "config", None),
        ):
            if src is None:
                continue
            vals = {k: _cfg_get(src, k) for k in keys}
            if all(vals[k] is not None for k in keys[:4]):
                vals["num_box_frames"] = vals["num_box_frames"] or 0
                full = dict(src) if isinstance(src, dict) else {}
                return {**full, **vals}
        raise ValueError(
            "cannot find height/width/num_context_frames/num_target_frames on the pipeline; pass "
            "model_config={...} to VideoPlanner"
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        backend: str = "torch",
        device: str | None = None,
        idm_path: str | Path | None = None,
        runtime_loader: RuntimeLoader | None = None,
        **kwargs: Any,
    ) -> VideoPlanner:
        """Load a planner checkpoint folder (``pipeline/`` + ``idm/``); no ``path``: the shipped default.

        ``backend="onnxruntime"`` / ``"tensorrt"`` build the runtime with ``runtime_loader`` (default: the
        one ``import v4s_agent`` registers, ``v4s_agent.export.load_runtime_pipeline``).

        Raises:
            CheckpointError: the folder or one of its parts is missing or unreadable.
            BackendUnavailableError: ``backend`` is not installed.
            ValueError: unknown ``backend``.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}. Got {backend!r}")
        root = Path(path) if path is not None else DEFAULT_CHECKPOINT
        if not root.is_dir():
            hint = " (the shipped default checkpoint is not installed yet)" if path is None else ""
            raise CheckpointError(f"checkpoint folder not found: {root}{hint}")
        pipe_dir = root / "pipeline" if (root / "pipeline").is_dir() else root
        idm_dir = Path(idm_path) if idm_path is not None else root / "idm"
        if device is None:
            device = _default_device(backend)
        pipe = load_pipeline(pipe_dir, backend=backend, device=device, runtime_loader=runtime_loader)
        idm = load_idm(idm_dir, device=device) if idm_dir.exists() or idm_path is not None else None
        if idm is None:
            logger.warning("no inverse-dynamics model at %s: actions come from OpenCV geometry only", idm_dir)
        return cls(pipe, idm, device=device, backend=backend, **kwargs)

    # ------------------------------------------------------------------ planning
    def prepare_context(
        self,
        context: dict[str, np.ndarray] | np.ndarray | None,
        context_positions: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        sampling: str = "stratified",
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Bring a tour (``{"frames", ...}`` dict or uint8 array) to K sorted frames + source positions."""
        frames, positions, _ = self._select_context(context, context_positions, rng, sampling)
        return frames, positions

    def _select_context(
        self,
        context: dict[str, np.ndarray] | np.ndarray | None,
        context_positions: np.ndarray | None,
        rng: np.random.Generator | None,
        sampling: str,
        path: np.ndarray | None = None,
        context_poses: np.ndarray | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``prepare_context`` plus the indices of the chosen frames in ``context`` (for their poses).

        ``sampling="views"`` needs the wanted camera ``path`` ``(T, 4, 4)`` in the context's world frame and
        the context's poses: each path pose's closest view, the rest random (``closest_views``)."""
        if context is None:
            return None, None, None
        if isinstance(context, dict) and "frames" not in context:
            raise ValueError(
                f"a context dict needs a 'frames' entry (info['context']); got keys {sorted(context)}"
            )
        frames = context["frames"] if isinstance(context, dict) else context
        frames = check_rgb(frames, "context frames", ndim=4)
        n = len(frames)
        if n == 0:
            raise ValueError("context has 0 frames: pass context=None to plan without context, or >= 1 frame")
        positions = np.arange(n) if context_positions is None else np.asarray(context_positions).reshape(-1)
        if len(positions) != n:
            raise ValueError(f"context_positions has {len(positions)} entries for {n} frames")
        idx = np.arange(n)
        if sampling == "views":
            from ..envs.scene_video import closest_views

            poses = _context_poses(context, context_poses)
            if path is None or poses is None:
                raise ValueError(
                    "sampling='views' needs a camera path (camera=..., with observation_pose=...) and the "
                    "context's poses (info['context']['poses'] or context_poses=...)"
                )
            if len(poses) != n:
                raise ValueError(f"context has {n} frames but {len(poses)} poses")
            rng = rng if rng is not None else np.random.default_rng(0)
            idx = closest_views(np.asarray(poses), path, self.num_context_frames, rng)
            frames, positions = frames[idx], positions[idx]
        elif n != self.num_context_frames:
            idx = sample_context_indices(n, self.num_context_frames, sampling, rng)
            frames, positions = frames[idx], positions[idx]
        return resize_frames(frames, self.height, self.width), positions.astype(np.float32), idx

    def context_camera(
        self,
        context: dict[str, np.ndarray] | np.ndarray | None,
        idx: np.ndarray | None,
        observation_pose: np.ndarray | None,
        context_poses: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """``(K, 12)`` poses of the context frames ``idx`` relative to the observation, for models with
        ``context_pose``: from ``context_poses`` or the tour dict's ``"poses"`` and the agent's odometry.
        ``None`` when the model does not use them or a pose is unknown."""
        if not self.model_config.get("context_pose", False) or idx is None or observation_pose is None:
            return None
        poses = _context_poses(context, context_poses)
        if poses is None:
            return None
        poses = np.asarray(poses, dtype=np.float64)
        ref = np.asarray(observation_pose, dtype=np.float64)
        return np.stack([encode_relative_pose(ref, poses[i]) for i in idx]).astype(np.float32)

    def plan(
        self,
        context: dict[str, np.ndarray] | np.ndarray | None,
        observation: np.ndarray,
        instruction: str,
        camera: np.ndarray | None = None,
        context_positions: np.ndarray | None = None,
        seed: int | None = None,
        sampling: str = "stratified",
        observation_pose: np.ndarray | None = None,
        context_poses: np.ndarray | None = None,
    ) -> Plan:
        """Imagine the video of following ``instruction`` from ``observation`` and decode it to actions.

        Args:
            context: the scene video: ``info["context"]`` (dict with ``"frames"``), uint8 ``(N, H, W, 3)``
                (sub-sampled to the model's K when N differs) or ``None`` (no context: the context is
                replaced by pure noise, the joint-CFG null condition).
            observation: the current view, uint8 ``(H, W, 3)`` (resized to the model resolution).
            instruction: e.g. ``"... Finally, it focuses on a chair in the center of the frame."``
            camera: pose task: float ``(T, 12)`` relative camera poses of the wanted path.
            context_positions: source indices of ``context`` frames in the tour (default ``0..N-1``).
            seed: noise seed (default: the planner seed plus a call counter, reproducible per instance).
            sampling: how a longer context is sub-sampled (``"stratified"``, ``"uniform"``, ``"contiguous"``;
                ``"views"`` for a camera path: each path pose's closest context view, the rest random,
                as the model was trained for path plans; needs ``observation_pose`` and the context's
                poses).
            observation_pose: the agent's pose (odometry, ``info["agent_pose"]``); with the context's poses
                (the tour dict's ``"poses"`` or ``context_poses``, one per context frame) it gives models
                trained with ``context_pose`` where each context frame was taken.
            context_poses: ``(N, 4, 4)`` poses of ``context`` frames when it is a plain array.
        """
        t0 = time.perf_counter()
        if not isinstance(instruction, str):
            raise ValueError(
                f"instruction must be a string (e.g. 'Find the chair.'); got {type(instruction).__name__}"
            )
        observation = check_rgb(observation, "observation")
        seed = self.seed + self._calls if seed is None else seed
        self._calls += 1
        rng = np.random.default_rng(seed)
        if camera is not None:
            camera = np.asarray(camera, dtype=np.float32)
            if camera.ndim != 2 or camera.shape[1] != 12:
                raise ValueError(f"camera must be float (T, 12). Got shape {camera.shape}")
        path = None
        if camera is not None and observation_pose is not None:
            rows = camera[np.abs(camera).sum(axis=1) > 0]  # all-zero rows: the red-box frames, no pose
            path = decode_relative_poses(observation_pose, rows) if len(rows) else None
        ctx, pos, idx = self._select_context(context, context_positions, rng, sampling, path, context_poses)
        obs = resize_frames(observation, self.height, self.width)
        ctx_cam = self.context_camera(context, idx, observation_pose, context_poses)
        frames, box_pipe = self._generate(ctx, pos, obs, instruction, camera, seed, ctx_cam)
        t_gen = time.perf_counter()
        n_traj = self.num_target_frames - self.num_box_frames
        box, conf = self.read_goal_box(frames[n_traj:])
        if box is None and box_pipe is not None:
            box, conf = box_pipe, 0.0
        traj = frames[:n_traj]
        probs, actions, motions, disagree = self.decode(traj)
        t1 = time.perf_counter()
        return Plan(
            frames=frames,
            num_trajectory_frames=n_traj,
            box=box,
            box_confidence=float(conf),
            box_sd=sd_from_box(box, self.height, self.width),
            actions=actions,
            action_probs=probs,
            cv_motion=motions,
            cv_disagreements=disagree,
            latency_ms=1000.0 * (t1 - t0),
            generation_ms=1000.0 * (t_gen - t0),
            context_positions=pos,
            instruction=instruction,
        )

    def _generate(
        self,
        ctx: np.ndarray | None,
        pos: np.ndarray | None,
        obs: np.ndarray,
        instruction: str,
        camera: np.ndarray | None,
        seed: int,
        context_camera: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Box | None]:
        """One pipeline call -> uint8 ``(T, H, W, 3)`` frames (+ the pipeline's own box, if any)."""
        kwargs: dict[str, Any] = {"observation": obs, "prompt": instruction, "output_type": "np"}
        if self.num_inference_steps is not None:
            kwargs["num_inference_steps"] = self.num_inference_steps
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if camera is not None:
            kwargs["camera"] = camera
        if context_camera is not None and ctx is not None:
            kwargs["context_camera"] = context_camera
        if self.cfg_mode is not None:
            kwargs["cfg_mode"] = self.cfg_mode
        if ctx is None:
            # no context: the joint-CFG null condition is pure noise in place of the context
            noise = np.random.default_rng(seed).integers(
                0, 256, (self.num_context_frames, self.height, self.width, 3)
            )
            ctx, pos = noise.astype(np.uint8), np.arange(self.num_context_frames)
            kwargs["drop_context"] = True
        kwargs["context"], kwargs["context_positions"] = ctx, pos
        kwargs["generator"] = _make_generator(seed, self.backend, self.device)
        try:
            with self._autocast():
                out = self.pipeline(**kwargs)
        except TypeError as e:
            if "drop_context" not in kwargs or "drop_context" not in str(e):
                raise
            kwargs.pop("drop_context")  # pipeline has no explicit switch: pixel noise stands in
            out = self.pipeline(**kwargs)
        frames = out.frames if hasattr(out, "frames") else out[0]
        frames = np.asarray(frames)
        if frames.ndim == 5:
            frames = frames[0]
        if frames.dtype != np.uint8:
            frames = _to_uint8(frames)
        box = getattr(out, "box", None)
        if (
            isinstance(box, list | tuple)
            and len(box)
            and isinstance(box[0], list | tuple | np.ndarray | type(None))
        ):
            box = box[0]
        box = tuple(float(v) for v in box) if box is not None else None
        return frames, box  # type: ignore[return-value]

    def _autocast(self) -> Any:
        """bfloat16 autocast for the torch backend when ``bf16`` (a no-op context otherwise)."""
        import contextlib

        if not self.bf16 or self.backend != "torch":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cuda" if str(self.device).startswith("cuda") else "cpu", dtype=torch.bfloat16)

    @staticmethod
    def read_goal_box(aux_frames: np.ndarray) -> tuple[Box | None, float]:
        """The most confident red box over the auxiliary frames (``(None, 0)`` when none)."""
        from ..model.bbox import read_red_box

        best: tuple[Box | None, float] = (None, 0.0)
        for f in aux_frames:
            box, conf = read_red_box(np.ascontiguousarray(f))
            if box is not None and conf > best[1]:
                best = (tuple(float(v) for v in box), float(conf))  # type: ignore[assignment]
        return best

    def decode(self, trajectory: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[CVMotion], int]:
        """Imagined trajectory -> (IDM probs, actions, OpenCV motions, disagreements)."""
        n = len(trajectory) - 1
        motions: list[CVMotion] = []
        if self.crosscheck != "off" or self.idm is None:
            m = n if self.idm is None or self.crosscheck_steps is None else min(n, self.crosscheck_steps)
            motions = [
                estimate_motion(trajectory[i], trajectory[i + 1], self.cv_min_inliers) for i in range(m)
            ]
        if self.idm is not None:
            probs = idm_probs(self.idm, trajectory, self.device)
            actions = decode_actions(probs)
        else:
            probs = np.zeros((n, 4), dtype=np.float32)
            for i, m in enumerate(motions):
                probs[i, m.action if m.action not in (None, 0) else 1] = 1.0
            actions = decode_actions(probs)
        disagree = 0
        for i, m in enumerate(motions):
            if m.action is None or m.action == 0 or self.idm is None:
                continue
            if m.action != int(actions[i]):
                disagree += 1
                logger.debug(
                    "IDM/OpenCV disagree at step %d: idm=%d cv=%d (yaw %.1f deg, expansion %.3f, %d inliers)",
                    i,
                    actions[i],
                    m.action,
                    m.yaw_deg,
                    m.expansion,
                    m.inliers,
                )
                if self.crosscheck == "override":
                    actions[i] = m.action
        return probs, actions, motions, disagree


# ---------------------------------------------------------------------- helpers


def _context_poses(context: Any, context_poses: np.ndarray | None) -> np.ndarray | None:
    """The context frames' poses: ``context_poses`` if given, else the tour dict's ``"poses"``."""
    if context_poses is not None:
        return context_poses
    return context.get("poses") if isinstance(context, dict) else None


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (diffusers' np output) or [-1, 1] -> uint8."""
    f = np.asarray(frames, dtype=np.float32)
    if f.min() < -0.01:
        f = (f + 1.0) / 2.0
    return (np.clip(f, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _default_device(backend: str) -> str:
    if backend == "torch":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            return "cpu"
    return "cuda" if backend == "tensorrt" else "cpu"


def _make_generator(seed: int, backend: str, device: str) -> Any:
    """A CPU ``torch.Generator`` for every backend (the runtimes accept it), so that the same seed gives
    the same initial noise on PyTorch, ONNX Runtime and TensorRT; numpy when torch is absent."""
    try:
        import torch
    except ImportError:  # pragma: no cover - onnxruntime-only installs
        return np.random.default_rng(seed)

    return torch.Generator(device="cpu").manual_seed(int(seed))


def check_backend(backend: str) -> None:
    """Raise :class:`BackendUnavailableError` with an install hint when ``backend`` is missing."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Got {backend!r}")
    need = {"torch": "torch", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[backend]
    if importlib.util.find_spec(need) is None:
        hint = {
            "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu)",
            "tensorrt": "pip install 'video4spatial-agent[tensorrt]' on a machine with an NVIDIA GPU",
            "torch": "pip install torch",
        }[backend]
        raise BackendUnavailableError(f"backend {backend!r} is not installed: {hint}")
    if backend == "tensorrt":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("backend 'tensorrt' needs a CUDA GPU; none is visible")


def load_pipeline(
    pipe_dir: Path, backend: str = "torch", device: str = "cpu", runtime_loader: RuntimeLoader | None = None
) -> Any:
    """Load the diffusion pipeline of a checkpoint for ``backend`` (clear errors, never a silent fallback).

    ``runtime_loader`` builds the ONNX Runtime / TensorRT runtime; by default the one the package root
    handed in (``v4s_agent.export``'s, see :mod:`.runtimes`): the agent never imports the export.
    """
    check_backend(backend)
    pipe_dir = Path(pipe_dir)
    if not pipe_dir.is_dir():
        raise CheckpointError(f"pipeline folder not found: {pipe_dir}")
    try:
        if backend == "torch":
            from ..model.pipeline_v4s import Video4SpatialPipeline

            if not (pipe_dir / "model_index.json").is_file():
                raise CheckpointError(f"{pipe_dir} is not a pipeline folder (no model_index.json)")
            try:
                pipe = Video4SpatialPipeline.from_pretrained(str(pipe_dir))
            except ValueError as e:
                if "cannot be loaded" not in str(e):
                    raise
                pipe = _load_components(pipe_dir)  # diffusers cannot import our module by name
            pipe = pipe.to(device)
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            return pipe
        try:
            return load_runtime(pipe_dir, backend, device, runtime_loader)
        except LookupError as e:
            raise BackendUnavailableError(str(e)) from None
    except (CheckpointError, BackendUnavailableError):
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError, RuntimeError) as e:
        raise CheckpointError(f"cannot read the checkpoint at {pipe_dir}: {type(e).__name__}: {e}") from e


def _load_components(pipe_dir: Path) -> Any:
    """Assemble the pipeline from its saved parts when ``DiffusionPipeline.from_pretrained`` refuses
    our transformer class (a diffusers loader limitation for components outside diffusers)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..model.pipeline_v4s import Video4SpatialPipeline
    from ..model.transformer_v4s import V4STransformer3DModel

    cfg = json.loads((pipe_dir / "model_index.json").read_text())["model_config"]
    transformer = V4STransformer3DModel.from_pretrained(str(pipe_dir / "transformer"))
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(pipe_dir / "scheduler"))
    return Video4SpatialPipeline(transformer=transformer, scheduler=scheduler, model_config=cfg)


def load_idm(idm_dir: Path, device: str = "cpu") -> Any:
    """Load the inverse-dynamics model of a checkpoint (``config.json`` + ``model.safetensors``)."""
    idm_dir = Path(idm_dir)
    if not idm_dir.is_dir():
        raise CheckpointError(f"inverse-dynamics folder not found: {idm_dir}")
    try:
        from .inverse_dynamics import InverseDynamicsModel

        idm = InverseDynamicsModel.from_pretrained(str(idm_dir))
    except Exception as e:  # noqa: BLE001 - safetensors/torch raise many types; all mean "unreadable"
        raise CheckpointError(
            f"cannot read the inverse-dynamics model at {idm_dir}: {type(e).__name__}: {e}"
        ) from e
    return idm.to(device).eval()
