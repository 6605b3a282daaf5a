"""habitat-sim rendering backend with the same contract as ``GLRenderer`` (``backend="habitat_sim"``).

Why it exists: users with habitat-sim installed get Habitat's own renderer on the same scenes and poses.
The scene is written (``scenes.write_glb``) as a stage GLB (structure, id 0) with a ``stage_config.json``
beside it (+y up, -z front: a bare ``.glb`` would be read as a z-up MP3D mesh with a ``.scn`` semantic
descriptor), plus one GLB per object, each added as a rigid object whose ``semantic_id`` is its instance
id, so the SEMANTIC sensor returns our instance ids.

How it lives in a process: habitat-sim aborts the process when one ``Simulator`` is closed while another
is alive, and its GL context must be current whenever it renders. So there is ONE simulator per process,
shared by every ``HabitatSimRenderer``: a renderer whose scene is not the loaded one ``reconfigure``-s it
(scene switch) before drawing. Every call into habitat-sim makes its EGL context current and gives the
previous one (e.g. moderngl's) back afterwards, so both backends can render in one process.

Cost on a CPU (Mesa llvmpipe): creating the simulator with an RGB sensor takes ~30 s, nearly all of it
habitat-sim precomputing its PBR image-based-lighting cube maps (done whenever RGB is rendered, whatever
the shader; not switchable from Python); a scene switch then takes under a second.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import itertools
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .geometry import HFOV_DEG
from .renderer_gl import LIGHT_DIR, SHADE_AMBIENT, SHADE_DIFFUSE, VOID_RGB, _check_resolution
from .scenes import Scene, write_glb

TARGETS = ("rgb", "depth", "semantic")
#: habitat-sim draws base colour x texture unlit ("flat"); the moderngl renderer's two-sided diffuse shade
#: SHADE_AMBIENT + SHADE_DIFFUSE |n . LIGHT_DIR| (renderer_gl's constants) is baked into the exported colours
SHADER_TYPE = "flat"


def _shaded(scene: Scene) -> Scene:
    """A copy of ``scene`` whose vertex colours carry the moderngl renderer's diffuse shade."""
    v = scene.vertices.copy()
    n = v[:, 3:6].astype(np.float64)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    v[:, 6:9] *= (SHADE_AMBIENT + SHADE_DIFFUSE * np.abs(n @ LIGHT_DIR))[:, None].astype(np.float32)
    return dataclasses.replace(scene, vertices=v)


INSTALL_HINT = (
    "backend='habitat_sim' needs the habitat-sim package, which is not installed (it has no usable Linux "
    "wheel on PyPI). Install it with conda:\n"
    "    conda install habitat-sim headless -c conda-forge -c aihabitat\n"
    "(or `conda install habitat-sim -c conda-forge -c aihabitat` on a machine with a display), or build "
    "it from source (see the README), or use backend='moderngl'."
)


def require_habitat_sim():
    """Import habitat_sim or raise an ImportError that says how to install it."""
    try:
        import habitat_sim
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return habitat_sim


# ------------------------------------------------------------------------------------------------ EGL
# Thin ctypes access to the process's libEGL (the same library Magnum uses): which CUDA devices have an
# EGL device (habitat-sim otherwise kills the process with "unable to find CUDA device 0 among N EGL
# devices"), and saving/restoring the current context around habitat-sim calls.
_EGL_DRAW, _EGL_READ, _EGL_EXTENSIONS = 0x3059, 0x305A, 0x3055
_EGL_CUDA_DEVICE_NV, _EGL_BAD_DEVICE_EXT = 0x323A, 0x322B
_egl_lib: ctypes.CDLL | None | bool = False  # False = not tried yet


def _egl() -> ctypes.CDLL | None:
    global _egl_lib
    if _egl_lib is False:
        try:
            lib = ctypes.CDLL("libEGL.so.1")
            lib.eglGetCurrentContext.restype = ctypes.c_void_p
            lib.eglGetCurrentDisplay.restype = ctypes.c_void_p
            lib.eglGetCurrentSurface.restype = ctypes.c_void_p
            lib.eglGetCurrentSurface.argtypes = [ctypes.c_int32]
            lib.eglMakeCurrent.restype = ctypes.c_uint
            lib.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
            lib.eglGetProcAddress.restype = ctypes.c_void_p
            lib.eglGetProcAddress.argtypes = [ctypes.c_char_p]
            lib.eglGetError.restype = ctypes.c_int32
            _egl_lib = lib
        except (OSError, AttributeError):
            _egl_lib = None
    return _egl_lib  # type: ignore[return-value]


def _egl_current() -> tuple[int | None, int | None, int | None, int | None] | None:
    """(display, draw surface, read surface, context) current on this thread, or None without libEGL."""
    lib = _egl()
    if lib is None:
        return None
    return (lib.eglGetCurrentDisplay(), lib.eglGetCurrentSurface(_EGL_DRAW),
            lib.eglGetCurrentSurface(_EGL_READ), lib.eglGetCurrentContext())  # fmt: skip


def _egl_make_current(state) -> None:
    lib = _egl()
    if lib is not None and state is not None and state[3]:
        lib.eglMakeCurrent(state[0], state[1], state[2], state[3])


def egl_cuda_devices() -> list[int] | None:
    """CUDA device numbers that have an EGL device (what habitat-sim's ``gpu_device_id`` selects among),
    ``[]`` when there is none (e.g. Mesa only), None when EGL cannot be queried."""
    lib = _egl()
    if lib is None:
        return None
    try:
        addr = {n: lib.eglGetProcAddress(n.encode()) for n in
                ("eglQueryDevicesEXT", "eglQueryDeviceAttribEXT", "eglQueryDeviceStringEXT")}  # fmt: skip
        if not all(addr.values()):
            return None
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        query_devices = ctypes.CFUNCTYPE(ctypes.c_uint, i32, ctypes.POINTER(vp), ctypes.POINTER(i32))(
            addr["eglQueryDevicesEXT"]
        )
        query_attrib = ctypes.CFUNCTYPE(ctypes.c_uint, vp, i32, ctypes.POINTER(ctypes.c_ssize_t))(
            addr["eglQueryDeviceAttribEXT"]
        )
        query_string = ctypes.CFUNCTYPE(ctypes.c_char_p, vp, i32)(addr["eglQueryDeviceStringEXT"])
        n = i32(0)
        if not query_devices(0, None, ctypes.byref(n)):
            return None
        devices = (vp * max(n.value, 1))()
        if n.value and not query_devices(n.value, devices, ctypes.byref(n)):
            return None
        found = []
        for d in devices[: n.value]:
            query_string(d, _EGL_EXTENSIONS)  # as Magnum does: some drivers crash on attrib queries
            if lib.eglGetError() == _EGL_BAD_DEVICE_EXT:  # of devices the user may not access
                continue
            v = ctypes.c_ssize_t(-1)
            if query_attrib(d, _EGL_CUDA_DEVICE_NV, ctypes.byref(v)):
                found.append(int(v.value))
            lib.eglGetError()  # clear EGL_BAD_ATTRIBUTE from non-NVIDIA devices
        return found
    except Exception:  # pragma: no cover - exotic EGL stacks
        return None


def resolve_gpu_device_id(gpu_device_id: int | None) -> int:
    """The ``gpu_device_id`` to give habitat-sim: ``None`` = 0 when CUDA device 0 has an EGL device (an
    NVIDIA GPU), else -1 (the first EGL device, e.g. Mesa's CPU renderer). An explicit id >= 0 that no
    EGL device serves raises here, instead of habitat-sim ending the process."""
    found = egl_cuda_devices()
    if gpu_device_id is None:
        return 0 if found and 0 in found else -1
    gpu_device_id = int(gpu_device_id)
    if gpu_device_id >= 0 and found is not None and gpu_device_id not in found:
        raise RuntimeError(
            f"gpu_device_id={gpu_device_id}: no EGL device serves that CUDA device (CUDA devices with EGL: "
            f"{found or 'none'}); pass gpu_device_id=-1 (or None) to render on the default EGL device"
        )
    return gpu_device_id


# --------------------------------------------------------------------------------- the one simulator
class _Shared:
    sim = None  # habitat_sim.Simulator
    pid: int | None = None
    owner: HabitatSimRenderer | None = None  # whose scene is loaded
    egl: tuple | None = None  # habitat-sim's EGL (display, draw, read, context)
    gpu_device_id: int | None = None
    textures = False  # created with requires_textures (cannot be switched on by reconfigure)


_SHARED = _Shared()
_SCENE_DIRS = itertools.count()  # habitat-sim caches assets by path: never reuse one within a process


@contextlib.contextmanager
def _habitat_gl():
    """Make habitat-sim's EGL context current for the block; give the previous one back afterwards."""
    saved = _egl_current()
    target = _SHARED.egl
    switch = saved is not None and target is not None and saved[3] != target[3]
    if switch:
        _egl_make_current(target)
    try:
        yield
    finally:
        if switch and saved[3]:
            _egl_make_current(saved)


@contextlib.contextmanager
def _quiet_python_logger():
    """habitat-sim's Python logger warns on every reconfigure that no navmesh is loaded (we navigate on
    our own grid): silence warnings for the block."""
    try:
        from habitat_sim.logging import logger
    except ImportError:  # pragma: no cover
        yield
        return
    level = logger.level
    logger.setLevel(max(level, 40))
    try:
        yield
    finally:
        logger.setLevel(level)


def close_shared_simulator() -> None:
    """Close this process's habitat-sim simulator (renderers reopen one when they draw again)."""
    sim, _SHARED.sim, _SHARED.owner = _SHARED.sim, None, None
    if sim is not None and _SHARED.pid == os.getpid():
        with _habitat_gl():
            sim.close(destroy=True)
    _SHARED.egl = None


atexit.register(close_shared_simulator)


class HabitatSimRenderer:
    """Render a ``Scene`` with habitat-sim: rgb uint8 (H,W,3), depth float32 metres, semantic int32 ids.

    Args:
        scene: scene to render (written to temporary GLBs + configs for habitat-sim).
        resolution: (height, width).
        hfov_deg: horizontal field of view.
        gpu_device_id: CUDA device habitat-sim renders on (via its EGL device); None = 0 when an NVIDIA EGL
            device serves CUDA device 0, else -1 (the default EGL device, e.g. Mesa llvmpipe on a CPU).
        keys: the targets to render; only these sensors are created (each costs a draw per frame).
    """

    def __init__(self, scene: Scene, resolution=(128, 128), hfov_deg: float = HFOV_DEG,
                 gpu_device_id: int | None = None, keys=TARGETS) -> None:  # fmt: skip
        habitat_sim = require_habitat_sim()
        import magnum as mn

        self._hs, self._mn = habitat_sim, mn
        self.height, self.width = _check_resolution(resolution)
        self.hfov_deg = float(hfov_deg)
        keys = tuple(dict.fromkeys(keys))
        bad = [k for k in keys if k not in TARGETS]
        if bad or not keys:
            raise ValueError(f"keys must be a non-empty subset of {TARGETS}, got {keys!r}")
        self.keys = keys
        self.gpu_device_id = resolve_gpu_device_id(gpu_device_id)
        self.scene = scene
        self._tmp: tempfile.TemporaryDirectory | None = tempfile.TemporaryDirectory(
            prefix=f"v4s_habitat_{os.getpid()}_{next(_SCENE_DIRS)}_"
        )
        root = Path(self._tmp.name)
        ids = scene.vertices[:, 10].astype(np.int64)
        lit = _shaded(scene)
        write_glb(lit, root / "stage.glb", [("structure", ids == 0)])
        self._stage_config = root / "stage.stage_config.json"
        # loading through a config: +y up / -z front (a bare .glb is taken as z-up MP3D) and no default
        # semantic descriptor (a bare stage.glb looks for stage.scn and logs "SSD Load Failure!")
        stage = {
            "render_asset": "stage.glb",
            "up": [0.0, 1.0, 0.0],
            "front": [0.0, 0.0, -1.0],
            "shader_type": SHADER_TYPE,
        }
        self._stage_config.write_text(json.dumps(stage))
        self._objects: list[tuple[Path, int, tuple[float, float, float]]] = []
        for obj in scene.objects:
            sel = ids == obj.instance_id
            if not sel.any():
                continue
            name = f"obj_{obj.instance_id}"
            write_glb(lit, root / f"{name}.glb", [(name, sel)], offset=obj.center)
            cfg = root / f"{name}.object_config.json"
            obj_cfg = {"render_asset": f"{name}.glb", "COM": [0.0, 0.0, 0.0], "up": [0.0, 1.0, 0.0],
                       "front": [0.0, 0.0, -1.0], "semantic_id": int(obj.instance_id),
                       "shader_type": SHADER_TYPE}  # fmt: skip
            cfg.write_text(json.dumps(obj_cfg))
            self._objects.append((cfg, int(obj.instance_id), tuple(float(v) for v in obj.center)))
        self._obs: dict | None = None
        self._closed = False
        self._activate()  # load now, so that errors show at construction

    # ------------------------------------------------------------------------------------ simulator
    def _configuration(self):
        hs = self._hs
        backend_cfg = hs.SimulatorConfiguration()
        backend_cfg.scene_id = str(self._stage_config)
        backend_cfg.gpu_device_id = self.gpu_device_id
        backend_cfg.enable_physics = False
        backend_cfg.scene_light_setup = hs.gfx.NO_LIGHT_KEY
        kinds = {"rgb": hs.SensorType.COLOR, "depth": hs.SensorType.DEPTH, "semantic": hs.SensorType.SEMANTIC}
        sensors = []
        for uuid in self.keys:
            spec = hs.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = kinds[uuid]
            spec.resolution = [self.height, self.width]
            spec.position = [0.0, 0.0, 0.0]  # the agent node is placed at the camera itself
            spec.orientation = [0.0, 0.0, 0.0]
            spec.hfov = self.hfov_deg
            if uuid == "rgb" and not self.scene.sky:
                spec.clear_color = [*VOID_RGB, 1.0]
            sensors.append(spec)
        agent_cfg = hs.agent.AgentConfiguration()
        agent_cfg.sensor_specifications = sensors
        return hs.Configuration(backend_cfg, [agent_cfg])

    def _activate(self):
        """Load this renderer's scene into the process's simulator (create it, or reconfigure it)."""
        if self._closed:
            raise RuntimeError("HabitatSimRenderer was closed")
        sh = _SHARED
        if sh.sim is not None and sh.pid != os.getpid():
            raise RuntimeError(
                "this process was forked from one that had already created a habitat-sim simulator; it "
                "cannot render in the child. Start workers with spawn/forkserver: "
                "gymnasium.vector.AsyncVectorEnv(fns, context='forkserver')"
            )
        if sh.owner is self:
            return sh.sim
        cfg = self._configuration()
        needs_textures = "rgb" in self.keys
        if sh.sim is not None and (sh.gpu_device_id != self.gpu_device_id or needs_textures > sh.textures):
            close_shared_simulator()  # a device or texture switch needs a new simulator; close first
        with _quiet_python_logger():
            if sh.sim is None:
                saved = _egl_current()
                sh.sim = self._hs.Simulator(cfg)
                sh.pid, sh.egl = os.getpid(), _egl_current()
                sh.gpu_device_id, sh.textures = self.gpu_device_id, needs_textures
                if saved is not None and saved[3] and sh.egl is not None and saved[3] != sh.egl[3]:
                    _egl_make_current(saved)
            else:
                sh.owner = None
                with _habitat_gl():
                    sh.sim.reconfigure(cfg)
        with _habitat_gl():
            self._add_objects(sh.sim)
        sh.owner = self
        self._agent_node = sh.sim.get_agent(0).scene_node
        self._obs = None
        return sh.sim

    def _add_objects(self, sim) -> None:
        MotionType = self._hs.physics.MotionType
        mn = self._mn
        otm = sim.get_object_template_manager()
        rom = sim.get_rigid_object_manager()
        for cfg, iid, center in self._objects:
            template_ids = otm.load_configs(str(cfg))
            ro = rom.add_object_by_template_id(template_ids[0], light_setup_key=self._hs.gfx.NO_LIGHT_KEY)
            # a STATIC object ignores a later translation: place it while KINEMATIC, then make it STATIC
            ro.motion_type = MotionType.KINEMATIC
            ro.translation = mn.Vector3(*center)
            ro.motion_type = MotionType.STATIC
            ro.semantic_id = iid

    # ---------------------------------------------------------------------------------------- render
    def gl_context(self):
        """Context manager: keep habitat-sim's GL context current for a block of draws (saves the two
        context switches per draw when another GL context, e.g. moderngl's, is current)."""
        self._activate()
        return _habitat_gl()

    def draw(self, T_wc: np.ndarray) -> None:
        """Place the camera at pose ``T_wc`` (camera-to-world, camera looks down -z) and render."""
        sim = self._activate()
        mn = self._mn
        T = np.asarray(T_wc, dtype=np.float64)
        node = self._agent_node
        node.translation = mn.Vector3(*(float(v) for v in T[:3, 3]))
        cols = [mn.Vector3(*(float(v) for v in col)) for col in T[:3, :3].T]  # magnum is column-major
        node.rotation = mn.Quaternion.from_matrix(mn.Matrix3x3(*cols))
        with _habitat_gl():
            self._obs = sim.get_sensor_observations()

    def _get(self, key: str) -> np.ndarray:
        if key not in self.keys:
            raise RuntimeError(f"{key!r} is not rendered by this renderer (keys={self.keys}); pass keys=...")
        if self._obs is None:
            raise RuntimeError("call draw(T_wc) first")
        return np.asarray(self._obs[key])

    def read_rgb(self, out: np.ndarray | None = None) -> np.ndarray:
        rgb = self._get("rgb")[..., :3]
        if out is None:
            return np.array(rgb, dtype=np.uint8)
        out[...] = rgb
        return out

    def read_depth(self, out: np.ndarray | None = None) -> np.ndarray:
        d = self._get("depth")
        if out is None:
            return np.array(d, dtype=np.float32)
        out[...] = d
        return out

    def read_semantic(self, out: np.ndarray | None = None) -> np.ndarray:
        s = self._get("semantic")
        if out is None:
            return s.astype(np.int32)
        out[...] = s
        return out

    def render(self, T_wc: np.ndarray, keys=TARGETS) -> dict[str, np.ndarray]:
        for k in keys:
            if k not in TARGETS:
                raise ValueError(f"unknown render target {k!r}; expected 'rgb', 'depth' or 'semantic'")
        self.draw(T_wc)
        readers = {"rgb": self.read_rgb, "depth": self.read_depth, "semantic": self.read_semantic}
        return {k: readers[k]() for k in keys}

    def close(self) -> None:
        """Drop this renderer's scene files; the process's simulator stays for the next renderer."""
        self._closed = True
        if _SHARED.owner is self:
            _SHARED.owner = None
        self._obs = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
