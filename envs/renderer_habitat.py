"""habitat-sim rendering backend with the same contract as ``GLRenderer`` (``backend="habitat_sim"``).

Why it exists: users with habitat-sim installed (conda; there is no usable Linux wheel on PyPI) get
Habitat's own renderer (PBR, HBAO, CUDA device selection) on the same scenes and poses. The scene is
exported to a stage GLB (structure) plus one GLB per object, each added as a STATIC rigid object whose
``semantic_id`` is its instance id, so the SEMANTIC sensor returns our instance ids.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from .geometry import HFOV_DEG
from .renderer_gl import _check_resolution
from .scenes import Scene

INSTALL_HINT = (
    "backend='habitat_sim' needs the habitat-sim package, which is not installed (it has no usable Linux "
    "wheel on PyPI). Install it with conda:\n"
    "    conda install habitat-sim headless -c conda-forge -c aihabitat\n"
    "(or `conda install habitat-sim -c conda-forge -c aihabitat` on a machine with a display), "
    "or use backend='moderngl'."
)


def require_habitat_sim():
    """Import habitat_sim or raise an ImportError that says how to install it."""
    try:
        import habitat_sim
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return habitat_sim


def _write_glb(vertices: np.ndarray, path: Path, offset=(0.0, 0.0, 0.0)) -> None:
    import trimesh

    v = vertices
    faces = np.arange(len(v)).reshape(-1, 3)
    rgba = np.concatenate([np.clip(v[:, 6:9], 0, 1), np.ones((len(v), 1))], axis=1)
    mesh = trimesh.Trimesh(v[:, :3] - np.asarray(offset, dtype=np.float32), faces,
                           vertex_colors=(rgba * 255).astype(np.uint8), process=False)  # fmt: skip
    mesh.export(str(path), file_type="glb")


class HabitatSimRenderer:
    """Render a ``Scene`` with habitat-sim: rgb uint8 (H,W,3), depth float32 metres, semantic int32 ids.

    Args:
        scene: scene to render (exported to temporary GLBs for habitat-sim).
        resolution: (height, width).
        hfov_deg: horizontal field of view.
        gpu_device_id: CUDA/EGL device habitat-sim renders on.
    """

    def __init__(
        self, scene: Scene, resolution=(128, 128), hfov_deg: float = HFOV_DEG, gpu_device_id: int = 0
    ):
        habitat_sim = require_habitat_sim()
        import magnum as mn

        self._hs, self._mn = habitat_sim, mn
        self.height, self.width = _check_resolution(resolution)
        self.scene = scene
        self._tmp = tempfile.TemporaryDirectory(prefix="v4s_habitat_")
        root = Path(self._tmp.name)
        ids = scene.vertices[:, 10].astype(np.int64)
        stage = root / "stage.glb"
        _write_glb(scene.vertices[ids == 0], stage)

        backend_cfg = habitat_sim.SimulatorConfiguration()
        backend_cfg.scene_id = str(stage)
        backend_cfg.gpu_device_id = int(gpu_device_id)
        backend_cfg.enable_physics = False
        sensors = []
        for uuid, kind in (("rgb", habitat_sim.SensorType.COLOR), ("depth", habitat_sim.SensorType.DEPTH),
                           ("semantic", habitat_sim.SensorType.SEMANTIC)):  # fmt: skip
            spec = habitat_sim.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = kind
            spec.resolution = [self.height, self.width]
            spec.position = [0.0, 0.0, 0.0]  # the agent node is placed at the camera itself
            spec.orientation = [0.0, 0.0, 0.0]
            spec.hfov = float(hfov_deg)
            sensors.append(spec)
        agent_cfg = habitat_sim.agent.AgentConfiguration()
        agent_cfg.sensor_specifications = sensors
        self.sim = habitat_sim.Simulator(habitat_sim.Configuration(backend_cfg, [agent_cfg]))
        self.agent = self.sim.initialize_agent(0)

        otm = self.sim.get_object_template_manager()
        rom = self.sim.get_rigid_object_manager()
        for obj in scene.objects:
            sel = ids == obj.instance_id
            if not sel.any():
                continue
            glb = root / f"obj_{obj.instance_id}.glb"
            _write_glb(scene.vertices[sel], glb, offset=obj.center)
            cfg = root / f"obj_{obj.instance_id}.object_config.json"
            cfg.write_text(json.dumps({"render_asset": glb.name, "COM": [0.0, 0.0, 0.0]}))
            template_ids = otm.load_configs(str(cfg))
            ro = rom.add_object_by_template_id(template_ids[0])
            ro.motion_type = habitat_sim.physics.MotionType.STATIC
            ro.translation = mn.Vector3(*[float(v) for v in obj.center])
            ro.semantic_id = int(obj.instance_id)
        self._obs: dict | None = None

    def draw(self, T_wc: np.ndarray) -> None:
        """Place the camera at pose ``T_wc`` and render all three sensors."""
        from habitat_sim.utils.common import quat_from_magnum

        T = np.asarray(T_wc, dtype=np.float64)
        state = self._hs.AgentState()
        state.position = T[:3, 3].astype(np.float32)
        mn = self._mn
        cols = [
            mn.Vector3(*[float(v) for v in col]) for col in T[:3, :3].T
        ]  # magnum matrices are column-major
        rot = mn.Quaternion.from_matrix(mn.Matrix3x3(*cols))
        state.rotation = quat_from_magnum(rot)
        self.agent.set_state(state, reset_sensors=True)
        self._obs = self.sim.get_sensor_observations()

    def _get(self, key: str) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("call draw(T_wc) first")
        return np.asarray(self._obs[key])

    def read_rgb(self, out: np.ndarray | None = None) -> np.ndarray:
        rgb = self._get("rgb")[..., :3]
        if out is None:
            return np.ascontiguousarray(rgb, dtype=np.uint8)
        out[...] = rgb
        return out

    def read_depth(self, out: np.ndarray | None = None) -> np.ndarray:
        d = self._get("depth").astype(np.float32)
        if out is None:
            return d
        out[...] = d
        return out

    def read_semantic(self, out: np.ndarray | None = None) -> np.ndarray:
        s = self._get("semantic").astype(np.int32)
        if out is None:
            return s
        out[...] = s
        return out

    def render(self, T_wc: np.ndarray, keys=("rgb", "depth", "semantic")) -> dict[str, np.ndarray]:
        self.draw(T_wc)
        readers = {"rgb": self.read_rgb, "depth": self.read_depth, "semantic": self.read_semantic}
        for k in keys:
            if k not in readers:
                raise ValueError(f"unknown render target {k!r}; expected 'rgb', 'depth' or 'semantic'")
        return {k: readers[k]() for k in keys}

    def close(self) -> None:
        if getattr(self, "sim", None) is not None:
            self.sim.close()
            self.sim = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None
