"""Scenes: procedural apartments / park / street from a seed, and any GLB/glTF file with annotations.

One name for what four modules hold: the data model (``scene_model``: ``Scene``, ``SceneObject``,
``SceneError``), the procedural generator with the categories and splits (``scene_generator``), the glTF
loader (``gltf_loader``) and the GLB writer (``glb_writer``). Import from here: the names below stay.
"""

from __future__ import annotations

from .glb_writer import write_glb
from .gltf_loader import (
    MAX_SCENE_EXTENT,
    estimate_floor_y,
    load_gltf_scene,
    load_mesh_vertices,
    place_object_file,
)
from .primitives import VERTEX_FLOATS
from .scene_generator import (
    CATEGORIES,
    DOOR_H,
    DOOR_W,
    OUTDOOR,
    ROOM_TYPES,
    SPLITS,
    TRAIN,
    TRAIN_CATEGORIES,
    VAL_CATEGORIES,
    VAL_CATEGORIES_SPLIT,
    VAL_SCENES,
    WALL_HEIGHT,
    WALL_T,
    SplitSpec,
    make_scene,
    place_category,
    split_scene,
)
from .scene_model import MAX_TEXTURE_SIZE, Scene, SceneError, SceneObject

__all__ = [
    "CATEGORIES",
    "DOOR_H",
    "DOOR_W",
    "MAX_SCENE_EXTENT",
    "MAX_TEXTURE_SIZE",
    "OUTDOOR",
    "ROOM_TYPES",
    "SPLITS",
    "TRAIN",
    "TRAIN_CATEGORIES",
    "VAL_CATEGORIES",
    "VAL_CATEGORIES_SPLIT",
    "VAL_SCENES",
    "VERTEX_FLOATS",
    "WALL_HEIGHT",
    "WALL_T",
    "Scene",
    "SceneError",
    "SceneObject",
    "SplitSpec",
    "estimate_floor_y",
    "load_gltf_scene",
    "load_mesh_vertices",
    "make_scene",
    "place_category",
    "place_object_file",
    "split_scene",
    "write_glb",
]
