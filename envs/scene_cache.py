"""Disk cache of procedural scenes and what the env derives from them: nav grids, goal viewpoints, tours.

Why: a scene-changing ``reset()`` spends seconds on deterministic work (building the mesh, sampling the
navigation grid, rendering candidate goal viewpoints, rendering the context tour). All of it is a pure
function of the scene's identity and the code, so it is computed once and read back afterwards.

Layout: one ``.npz`` per artifact in the cache dir (default ``~/.cache/v4s_agent/scenes``; the
environment variable ``V4S_CACHE_DIR`` or the env's ``cache_dir=`` argument move it, ``cache_dir=False``
or ``V4S_CACHE_DIR=off`` turn it off). A file holds the artifact's arrays plus ``__meta__``: JSON (as
uint8 bytes) with the full key it was written for and the non-array parts (objects, rooms, scalars).
Files are written to a temporary name and renamed (``os.replace``), so readers never see half a file and
concurrent vector-env workers can share the directory; a file that does not load or does not match its
key is deleted and rebuilt. The directory is capped (``max_bytes``, least recently used files go first).

The key of an artifact is its kind, the scene's identity (``split-val_scenes-17``, ``seed-0``),
``SCENE_FORMAT_VERSION``, ``primitives.VERTEX_FLOATS``, the numpy/scipy versions, and a digest of the
source of every module of this package the artifact is computed by (the transitive closure of its
``from .x import`` statements: the scene generator, the navigation grid, the env's goal code, the
renderer); rendered artifacts add the GL renderer's name and version and the render parameters. Any change
names a different file, so a stale entry is never served.

Dataclasses (``Scene``, ``SceneObject``) are stored field by field (``dataclasses.fields``), arrays in
the ``.npz`` and the rest in the JSON, so fields added later (textures, say) are cached without changes
here; a field value of a type this module cannot store makes the artifact uncached (a warning), not wrong.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import secrets
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: bump when the layout of the cached files changes (the source digests cover the code that fills them)
SCENE_FORMAT_VERSION = 1
CACHE_ENV_VAR = "V4S_CACHE_DIR"
DEFAULT_MAX_BYTES = 2 * 1024**3
_OFF = {"0", "off", "false", "no", "none", "disable", "disabled"}
_META = "__meta__"
_INLINE = 64  # numeric arrays up to this many elements are stored in the JSON (float repr round-trips)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "v4s_agent" / "scenes"


def resolve_cache_dir(cache_dir: str | os.PathLike | bool | None = None) -> Path | None:
    """The cache directory to use, or None when caching is off.

    ``cache_dir``: a path; ``False`` (off); ``None``/``True`` (``$V4S_CACHE_DIR`` if set, where ``off``,
    ``0``, ``false`` or ``none`` turn the cache off, else ``default_cache_dir()``).
    """
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        env = os.environ.get(CACHE_ENV_VAR, "").strip()
        if env.lower() in _OFF:
            return None
        return Path(env).expanduser() if env else default_cache_dir()
    return Path(cache_dir).expanduser()


@functools.cache
def source_digest(*modules: str) -> str:
    """sha256 (16 hex) of the source of ``modules`` (names in this package, e.g. ``"scenes"``) and of every
    module of this package they import, transitively (relative imports, also those inside functions)."""
    pkg_dir = Path(__file__).resolve().parent
    pkg = __package__ or ""
    seen: dict[str, bytes] = {}
    stack = list(modules)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        path = pkg_dir / f"{name}.py"
        if not path.is_file():
            continue
        src = path.read_bytes()
        seen[name] = src
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    stack.append(node.module.split(".")[0])
                else:
                    stack.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if pkg and node.module.startswith(pkg + "."):
                    stack.append(node.module[len(pkg) + 1 :].split(".")[0])
            elif isinstance(node, ast.Import):
                stack.extend(a.name[len(pkg) + 1 :].split(".")[0] for a in node.names
                             if pkg and a.name.startswith(pkg + "."))  # fmt: skip
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(name.encode() + b"\0" + hashlib.sha256(seen[name]).digest())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------- generic coding
def encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able form of ``value``; arrays go into ``arrays`` (by generated name). Handles None, bool, int,
    float, str, numpy scalars and arrays, lists, tuples, dicts and dataclasses of this package; raises
    TypeError for anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be cached")
        if value.size <= _INLINE and value.dtype.kind in "biuf":  # small (a box centre): in the JSON, exact
            return {"__ndi__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"__nd__": name}
    if isinstance(value, np.generic):
        return {"__np__": value.dtype.str, "v": value.item()}
    if isinstance(value, (int, float)):
        if type(value) not in (int, float):  # a subclass (e.g. a NaN that equals itself): keep its type
            raise TypeError(f"cannot cache {type(value).__qualname__}")
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [encode(v, arrays) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: encode(v, arrays) for k, v in value.items()}}
        return {"__items__": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith(_package_root()):
            raise TypeError(f"cannot cache dataclass {cls.__module__}.{cls.__qualname__}")
        fields = {f.name: encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}
        return {"__dc__": f"{cls.__module__}:{cls.__qualname__}", "f": fields}
    raise TypeError(f"cannot cache a value of type {type(value).__qualname__}")


def decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of ``encode``."""
    if isinstance(value, list):
        return [decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__nd__" in value:
        return arrays[value["__nd__"]]
    if "__ndi__" in value:
        return np.array(value["__ndi__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if "__np__" in value:
        return np.dtype(value["__np__"]).type(value["v"])
    if "__tuple__" in value:
        return tuple(decode(v, arrays) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode(v, arrays) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {decode(k, arrays): decode(v, arrays) for k, v in value["__items__"]}
    if "__dc__" in value:
        module, qualname = value["__dc__"].split(":")
        if not module.startswith(_package_root()):
            raise ValueError(f"refusing to build {module}.{qualname} from a cache file")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        kw = {k: decode(v, arrays) for k, v in value["f"].items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in kw.items() if k in init})
        for k, v in kw.items():
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj
    raise ValueError(f"unknown cache encoding {sorted(value)}")


def _package_root() -> str:
    return (__package__ or "v4s_agent.envs").split(".")[0] + "."


# ------------------------------------------------------------------------------------------- the cache
class SceneCache:
    """A directory of cached scene artifacts (see the module docstring).

    Args:
        root: the directory (created on first write).
        max_bytes: size cap; the least recently used files are deleted beyond it.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"SceneCache({str(self.root)!r})"

    def _warn(self, what: str, msg: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"scene cache {self.root}: {msg}", RuntimeWarning, stacklevel=3)

    def key(self, artifact: str, scene: str, deps: tuple[str, ...], extra: dict | None = None) -> dict:
        """The full key of an artifact (JSON-normalised)."""
        import scipy

        from .primitives import VERTEX_FLOATS

        key = {
            "format": SCENE_FORMAT_VERSION,
            "artifact": artifact,
            "scene": scene,
            "vertex_floats": int(VERTEX_FLOATS),
            "source": source_digest(*deps),
            "numpy": ".".join(np.__version__.split(".")[:2]),
            "scipy": ".".join(scipy.__version__.split(".")[:2]),
            "extra": extra or {},
        }
        return json.loads(json.dumps(key, sort_keys=True))

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["scene"])[:80]
        return self.root / f"{key['artifact']}-{slug}-{digest}.npz"

    def load(self, key: dict) -> tuple[dict[str, np.ndarray], Any] | None:
        """(arrays, meta) stored under ``key``, or None (missing, unreadable or written for another key;
        an unreadable file is deleted)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            head = json.loads(arrays.pop(_META).tobytes().decode())
        except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
            self._warn("corrupt", f"{path.name} is unreadable ({type(exc).__name__}: {exc}); rebuilding it")
            _unlink(path)
            return None
        if head.get("key") != key:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used goes first under the size cap
        return arrays, head.get("meta")

    def save(self, key: dict, arrays: dict[str, np.ndarray], meta: Any = None) -> Path | None:
        """Write atomically; returns the path, or None if the directory is not writable (warned once)."""
        path = self.path(key)
        head = json.dumps({"key": key, "meta": meta}).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for name, arr in [*arrays.items(), (_META, np.frombuffer(head, np.uint8))]:
                    with zf.open(name + ".npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:
            self._warn("write", f"cannot write ({exc}); running without the cache")
            _unlink(tmp)
            return None
        self._evict()
        return path

    def _evict(self) -> None:
        try:
            entries = []
            now = time.time()
            for p in self.root.iterdir():
                st = p.stat()
                if p.name.endswith(".tmp") and now - st.st_mtime > 3600:
                    _unlink(p)  # left by a killed writer
                elif p.suffix == ".npz":
                    entries.append((st.st_mtime, st.st_size, p))
        except OSError:
            return
        total = sum(e[1] for e in entries)
        if total <= self.max_bytes:
            return
        for _, size, p in sorted(entries):
            _unlink(p)
            total -= size
            if total <= 0.9 * self.max_bytes:
                break

    # ------------------------------------------------------------------------------------ artifacts
    def cached(self, key: dict, build: Callable[[], Any], dump: Callable[[Any], tuple[dict, Any]],
               restore: Callable[[dict, Any], Any]) -> Any:  # fmt: skip
        """``restore(*load(key))`` on a hit (a failing restore counts as a miss), else ``build()``, stored
        with ``dump(value) -> (arrays, meta)`` (a TypeError there leaves it uncached, warned once)."""
        hit = self.load(key)
        if hit is not None:
            try:
                return restore(*hit)
            except Exception as exc:  # noqa: BLE001 - a file of the right key but wrong content: rebuild
                self._warn("restore", f"{self.path(key).name} did not restore ({exc!r}); rebuilding it")
                _unlink(self.path(key))
        value = build()
        try:
            arrays, meta = dump(value)
        except TypeError as exc:
            self._warn("encode-" + key["artifact"], f"{key['artifact']} not cached: {exc}")
            return value
        self.save(key, arrays, meta)
        return value


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# ---------------------------------------------------------------------------------- scenes and grids
SCENE_DEPS = ("scenes",)
NAVGRID_DEPS = ("navigation",)


def dump_scene(scene) -> tuple[dict[str, np.ndarray], Any]:
    arrays: dict[str, np.ndarray] = {}
    return arrays, encode(scene, arrays)


def restore_scene(arrays: dict[str, np.ndarray], meta: Any):
    from .primitives import VERTEX_FLOATS
    from .scenes import Scene

    scene = decode(meta, arrays)
    if not isinstance(scene, Scene):
        raise ValueError(f"expected a Scene, got {type(scene).__qualname__}")
    v = scene.vertices
    if not (isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[1] == VERTEX_FLOATS and len(v) % 3 == 0):
        raise ValueError(f"vertices of shape {getattr(v, 'shape', None)}; expected (3k, {VERTEX_FLOATS})")
    return scene


def dump_navgrid(grid) -> tuple[dict[str, np.ndarray], Any]:
    """Every attribute of a freshly built ``NavGrid`` (before its graph is built lazily)."""
    arrays: dict[str, np.ndarray] = {}
    return arrays, encode(dict(vars(grid)), arrays)


def restore_navgrid(arrays: dict[str, np.ndarray], meta: Any):
    from .navigation import NavGrid

    state = decode(meta, arrays)
    grid = NavGrid.__new__(NavGrid)
    grid.__dict__.update(state)
    if tuple(grid.navigable.shape) != tuple(grid.shape):
        raise ValueError("navigable mask does not match the grid shape")
    return grid


def open_cache(cache_dir: str | os.PathLike | bool | None = None) -> SceneCache | None:
    """A ``SceneCache`` at ``resolve_cache_dir(cache_dir)``, or None when caching is off."""
    root = resolve_cache_dir(cache_dir)
    return None if root is None else SceneCache(root)


__all__ = [
    "CACHE_ENV_VAR",
    "SCENE_FORMAT_VERSION",
    "SceneCache",
    "decode",
    "default_cache_dir",
    "encode",
    "open_cache",
    "resolve_cache_dir",
    "source_digest",
]
