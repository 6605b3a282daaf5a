"""Disk cache of procedural scenes and what the env derives from them: nav grids, goal viewpoints, tours.

Why: a scene-changing ``reset()`` spends seconds on deterministic work (building the mesh, sampling the
navigation grid, rendering candidate goal viewpoints, rendering the context tour). All of it is a pure
function of the scene's identity and the code, so it is computed once and read back afterwards.

Layout: one ``.npz`` per artifact in the cache dir (default ``~/.cache/v4s_agent/scenes``; the
environment variable ``V4S_CACHE_DIR`` or the env's ``cache_dir=`` argument move it, ``cache_dir=False``
or ``V4S_CACHE_DIR=off`` turn it off). A file holds the artifact's arrays plus ``__meta__``: JSON (as
uint8 bytes) with the full key it was written for and the non-array parts (objects, rooms, scalars).
Members are stored uncompressed with their data 64-byte aligned, so ``load`` memory-maps the file and
returns read-only arrays that view it (no decompression, no copy: pages come from the OS page cache,
shared by every process that reads the file); the files still open with ``np.load``. Files are written
to a temporary name and renamed (``os.replace``), so readers never see half a file, a file is never
modified in place (a mapping stays valid even after the file is replaced or evicted), and concurrent
vector-env workers can share the directory; a file that does not load or does not match its key is
deleted and rebuilt, with a warning naming it (the small ``__meta__`` member is CRC-checked on every
load; every array member is CRC-checked the first time a process maps that file, so corrupt bytes in an
array are caught instead of rendering another scene, while repeated loads of a verified file stay free).
The directory is capped (``max_bytes``, least recently used files go first).

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
import io
import json
import math
import mmap
import os
import secrets
import struct
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: bump when the layout of the cached files changes (the source digests cover the code that fills them)
SCENE_FORMAT_VERSION = 2  # 2: members stored uncompressed, 64-byte aligned, memory-mapped
CACHE_ENV_VAR = "V4S_CACHE_DIR"
DEFAULT_MAX_BYTES = 2 * 1024**3
_OFF = {"0", "off", "false", "no", "none", "disable", "disabled"}
_META = "__meta__"
_INLINE = 64  # numeric arrays up to this many elements are stored in the JSON (float repr round-trips)
_ALIGN = 64  # array data offsets in a cache file (numpy pads .npy headers to 64 bytes)
_PAD_ID = 0xA11C  # zip extra field that pads each local header so the member's data is aligned


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
        an unreadable file is deleted). The arrays are read-only views of the memory-mapped file."""
        path = self.path(key)
        try:
            arrays, head = _read_npz(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
            why = f"{type(exc).__name__}: {exc}"
            self._warn(f"corrupt:{path.name}", f"{path.name} is corrupt or unreadable ({why}); rebuilding it")
            _unlink(path)
            return None
        if head.get("key") != key:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used goes first under the size cap
            _note_touched(path)
        return arrays, head.get("meta")

    def save(self, key: dict, arrays: dict[str, np.ndarray], meta: Any = None) -> Path | None:
        """Write atomically; returns the path, or None if the directory is not writable (warned once)."""
        path = self.path(key)
        head = json.dumps({"key": key, "meta": meta}).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_npz(tmp, [*arrays.items(), (_META, np.frombuffer(head, np.uint8))])
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


# ------------------------------------------------------------------------------- the file format
def _write_npz(path: Path, arrays) -> None:
    """An ``.npz`` (a zip of ``.npy`` members) stored uncompressed, each member's data starting on a
    ``_ALIGN``-byte boundary (padding in the local header's extra field), so ``_read_npz`` can map it."""
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            data_at = fh.tell() + 30 + len(info.filename.encode()) + 4  # after the local header
            pad = -data_at % _ALIGN
            info.extra = struct.pack("<HH", _PAD_ID, pad) + bytes(pad)
            zf.writestr(info, buf.getbuffer())


#: {(device, inode, size): mtime} of the files whose array members this process has CRC-checked: files
#: are replaced, never modified in place, so a file verified once stays verified (a write changes mtime)
_VERIFIED: dict[tuple[int, int, int], int] = {}


def _note_touched(path: Path) -> None:
    """Keep a verified file verified after ``os.utime`` (the LRU touch) moved its mtime."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if (st.st_dev, st.st_ino, st.st_size) in _VERIFIED:
            _VERIFIED[(st.st_dev, st.st_ino, st.st_size)] = st.st_mtime_ns


def _check_member_crcs(mm, members: dict[str, tuple[int, int, int]]) -> None:
    """Raise ValueError naming the first member whose bytes do not match the zip's CRC32 of them."""
    with memoryview(mm) as view:
        for name, (start, end, crc) in members.items():
            with view[start:end] as part:
                if zlib.crc32(part) != crc:
                    raise ValueError(f"array member {name!r} fails its CRC (corrupt bytes)")


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, head) of a cache file: its arrays as read-only views of a read-only memory map of the
    file, ``head`` the parsed ``__meta__`` (CRC-checked; the arrays' CRCs on this process's first read of
    the file). Files this module did not write (compressed members, zip64) are read with ``np.load``
    (which checks CRCs itself). Raises on anything malformed."""
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # an empty file raises ValueError
        st = os.fstat(fh.fileno())
    members = _zip_members(mm)
    ident = (st.st_dev, st.st_ino, st.st_size)
    if members is not None and _VERIFIED.get(ident) != st.st_mtime_ns:
        _check_member_crcs(mm, members)
        _VERIFIED[ident] = st.st_mtime_ns
    if members is None:
        with np.load(path, allow_pickle=False) as z:
            return _split_meta({k: z[k] for k in z.files})
    arrays = {}
    for name, (start, end, crc) in members.items():
        if name == _META:
            data = mm[start:end]
            if zlib.crc32(data) != crc:
                raise ValueError("__meta__ fails its CRC")
            arrays[name] = np.frombuffer(_npy_payload(data), np.uint8)
        else:
            arrays[name] = _npy_view(mm, start, end)
    if _META not in arrays:
        raise ValueError("no __meta__ member")
    return _split_meta(arrays)


_EOCD = struct.Struct("<4s4H2IH")  # end of central directory record
_CDH = struct.Struct("<4s6H3I5H2I")  # central directory file header


def _zip_members(mm) -> dict[str, tuple[int, int, int]] | None:
    """{member name without ``.npy``: (data start, data end, crc32)} of a zip of stored members, read
    from its central directory (a tenth of ``zipfile``'s cost); None when the file needs ``zipfile``
    (compressed members, zip64). Raises if it is not a well-formed zip."""
    size = len(mm)
    at = mm.rfind(b"PK\x05\x06", max(0, size - 65557))
    if at < 0:
        raise ValueError("not a zip file (no end of central directory)")
    sig, _, _, _, n, cd_size, cd_off, _ = _EOCD.unpack_from(mm, at)
    if n == 0xFFFF or cd_off == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
        return None
    if cd_off + cd_size > at:
        raise ValueError("central directory out of bounds")
    out: dict[str, tuple[int, int, int]] = {}
    pos = cd_off
    for _ in range(n):
        f = _CDH.unpack_from(mm, pos)
        if f[0] != b"PK\x01\x02":
            raise ValueError("bad central directory entry")
        method, crc, csize, usize, n_name, n_extra, n_comment = f[4], *f[7:13]
        off = f[16]
        if method != zipfile.ZIP_STORED or 0xFFFFFFFF in (csize, usize, off):
            return None
        name = bytes(mm[pos + 46 : pos + 46 + n_name]).decode()
        pos += 46 + n_name + n_extra + n_comment
        if mm[off : off + 4] != b"PK\x03\x04":
            raise ValueError(f"bad local header of {name!r}")
        ln_name, ln_extra = struct.unpack_from("<HH", mm, off + 26)
        start = off + 30 + ln_name + ln_extra
        if not name.endswith(".npy") or start + usize > cd_off or csize != usize:
            raise ValueError(f"bad member {name!r}")
        out[name[:-4]] = (start, start + usize, crc)
    return out


def _split_meta(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    head = json.loads(arrays.pop(_META).tobytes().decode())
    if not isinstance(head, dict):
        raise ValueError("the file's head is not a JSON object")
    return arrays, head


def _npy_header(buf, start: int = 0) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, header length) of the ``.npy`` member at ``buf[start:]``."""
    pre = bytes(buf[start : start + 12])
    if pre[:6] != b"\x93NUMPY" or pre[6] not in (1, 2):
        raise ValueError("not a .npy member of a supported version")
    v1 = pre[6] == 1
    hlen = 10 + struct.unpack("<H", pre[8:10])[0] if v1 else 12 + struct.unpack("<I", pre[8:12])[0]
    return (*_parse_npy_header(bytes(buf[start : start + hlen])), hlen)


@functools.lru_cache(maxsize=256)
def _parse_npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parsed once per distinct header (arrays of one kind share theirs): the parse is 80 us."""
    fp = io.BytesIO(header)
    major, _ = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fp)
    if dtype.hasobject:
        raise ValueError("object arrays are not read from the cache")
    return shape, fortran, dtype


def _npy_view(mm: mmap.mmap, start: int, end: int) -> np.ndarray:
    """Read-only array viewing the ``.npy`` member at ``mm[start:end]``."""
    shape, fortran, dtype, hlen = _npy_header(mm, start)
    count = math.prod(shape)
    if start + hlen + count * dtype.itemsize != end:
        raise ValueError("array size does not match its member")
    if count == 0:
        arr = np.empty(shape, dtype, order="F" if fortran else "C")
    else:
        arr = np.ndarray(shape, dtype, buffer=mm, offset=start + hlen, order="F" if fortran else "C")
    arr.flags.writeable = False
    return arr


def _npy_payload(data: bytes) -> bytes:
    shape, _, dtype, hlen = _npy_header(data)
    if dtype != np.uint8 or len(shape) != 1 or hlen + shape[0] != len(data):
        raise ValueError("malformed __meta__")
    return data[hlen:]


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
