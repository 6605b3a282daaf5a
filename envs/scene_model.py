"""The scene data model: ``Scene`` (a triangle soup plus its semantic objects) and ``SceneObject``.

A ``Scene`` is a triangle soup (one vertex buffer: position, normal, colour, texture pattern, instance
id) plus the list of semantic objects. Why a soup: the GL renderer draws it in one call, the navigation
grid samples it directly, and GLB export writes it back out per object. Scenes are made by
``scene_generator`` (procedural, from a seed) or ``gltf_loader`` (any GLB/glTF file); ``scenes`` gathers
all of it under one name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .glb_writer import write_glb
from .primitives import COL_LAYER
from .textures import procedural_atlas, to_layer

MAX_TEXTURE_SIZE = 1024  #: loaded base-colour images are resized to one layer size, at most this


class SceneError(ValueError):
    """A scene file is missing, unreadable or has no usable geometry."""


@dataclass
class SceneObject:
    """A semantic object: instance id (>0), category, and world axis-aligned box (centre, full extents)."""

    instance_id: int
    category: str
    center: np.ndarray
    extents: np.ndarray
    node: str | None = None

    @property
    def box_min(self) -> np.ndarray:
        return self.center - self.extents / 2.0

    @property
    def box_max(self) -> np.ndarray:
        return self.center + self.extents / 2.0

    def to_json(self) -> dict:
        return {
            "instance_id": int(self.instance_id),
            "category": self.category,
            "center": [float(v) for v in self.center],
            "extents": [float(v) for v in self.extents],
            "node": self.node,
        }


@dataclass
class Scene:
    """Renderable, navigable scene in Habitat conventions (metres, +y up)."""

    name: str
    vertices: np.ndarray  # (N, 11) float32 triangle soup, see primitives.VERTEX_FLOATS
    objects: list[SceneObject]
    floor_y: float = 0.0
    kind: str = "indoor"
    seed: int | None = None
    #: indoor rooms: {"type", "bounds": [x0, z0, x1, z1], "height", "doors": [{"to": room index, "box":
    #: [x0, y0, z0, x1, y1, z1] of the opening}]}; closed walls apart from the doors (portal culling)
    rooms: list[dict] = field(default_factory=list)
    sky: bool = False
    #: (L, S, S, 4) uint8 base-colour images indexed by the vertices' texture layer; None = the baked
    #: procedural pattern images (shared by every procedural scene, see ``textures.procedural_atlas``)
    textures: np.ndarray | None = None

    def texture_layers(self) -> np.ndarray:
        """The scene's texture images, (L, S, S, 4) uint8 (layer 0 is plain white)."""
        return procedural_atlas() if self.textures is None else self.textures

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3) min/max corner of all geometry."""
        p = self.vertices[:, :3]
        return np.stack([p.min(axis=0), p.max(axis=0)]).astype(np.float64)

    @property
    def categories(self) -> list[str]:
        return sorted({o.category for o in self.objects})

    def objects_of(self, category: str) -> list[SceneObject]:
        return [o for o in self.objects if o.category == category]

    def object_by_id(self, instance_id: int) -> SceneObject:
        for o in self.objects:
            if o.instance_id == instance_id:
                return o
        raise KeyError(f"no object with instance id {instance_id} in scene {self.name!r}")

    def add_object(
        self, mesh_vertices: np.ndarray, category: str, node: str | None = None, textures=None
    ) -> SceneObject:
        """Append geometry (N, VERTEX_FLOATS) as a new semantic object; returns it (its id is the next
        free one). ``textures`` (L, S, S, 4) are the images its texture layers index; they are appended
        to the scene's (resized to its layer size) and the layers renumbered."""
        iid = max([0, *[o.instance_id for o in self.objects]]) + 1
        v = np.array(mesh_vertices, dtype=np.float32, copy=True)
        v[:, 10] = iid
        if textures is not None and len(textures) > 1:
            mine = current = self.texture_layers()
            size = min(MAX_TEXTURE_SIZE, max(mine.shape[1], np.asarray(textures[0]).shape[0]))
            if mine.shape[1] != size:
                mine = np.stack([to_layer(t, size) for t in mine])
            known = {hashlib.sha1(t.tobytes()).hexdigest(): i for i, t in enumerate(mine)}
            remap, extra = np.zeros(len(textures), np.int64), []
            for j in range(1, len(textures)):  # identical images share one layer
                t = to_layer(textures[j], size)
                key = hashlib.sha1(t.tobytes()).hexdigest()
                if key not in known:
                    known[key] = len(mine) + len(extra)
                    extra.append(t)
                remap[j] = known[key]
            v[:, COL_LAYER] = remap[v[:, COL_LAYER].astype(np.int64)]
            if extra or mine is not current:
                self.textures = np.concatenate([mine, *[t[None] for t in extra]])
        lo, hi = v[:, :3].min(axis=0).astype(np.float64), v[:, :3].max(axis=0).astype(np.float64)
        obj = SceneObject(iid, category, (lo + hi) / 2.0, hi - lo, node)
        self.vertices = np.concatenate([self.vertices, v])
        self.objects.append(obj)
        return obj

    def export_glb(self, path: str | os.PathLike, annotation_path: str | os.PathLike | None = None) -> Path:
        """Write the scene as GLB (one node per object) plus an annotation JSON.

        The annotation (default ``<path>.semantic.json``) maps instance id -> category and box and names
        each object's node, so ``load_gltf_scene`` restores the ids.
        """
        path = Path(path)
        ids = self.vertices[:, 10].astype(np.int64)
        names = {0: "structure"}
        for o in self.objects:
            names[o.instance_id] = o.node or f"obj_{o.instance_id:04d}_{o.category}"
        parts = [(names.get(int(iid), f"obj_{int(iid):04d}"), ids == iid) for iid in np.unique(ids)]
        write_glb(self, path, parts)
        ann = Path(annotation_path) if annotation_path else path.with_suffix(".semantic.json")
        objs = []
        for o in self.objects:
            d = o.to_json()
            d["node"] = names[o.instance_id]
            objs.append(d)
        meta = {"scene": self.name, "up": [0, 1, 0], "sky": self.sky, "objects": objs}
        ann.write_text(json.dumps(meta, indent=1))
        return path
