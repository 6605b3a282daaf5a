"""Scenes written back out as GLB files (``Scene.export_glb``, the habitat-sim backend's stage files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .primitives import COL_LAYER, COL_UV

if TYPE_CHECKING:  # pragma: no cover
    from .scene_model import Scene


def write_glb(scene: Scene, path: str | os.PathLike, parts, offset=(0.0, 0.0, 0.0)) -> Path:
    """Write chosen rows of ``scene.vertices`` as a GLB: ``parts`` is a list of (node name, row mask),
    one node each, with positions shifted by ``-offset``. Used by ``export_glb`` and the habitat-sim
    backend (stage and per-object files), so every consumer sees the same scene.

    Each part's triangles are grouped by (colour, texture layer) into one primitive per group, whose
    material is that colour as ``baseColorFactor`` times the layer's image as ``baseColorTexture``
    (PNG, repeat-wrapped, mipmapped, with the renderer's ``MIN_FILTER``): exactly the renderer's base
    colour, in a form that every glTF reader (habitat-sim included) shows. Parts with many distinct vertex
    colours (a loaded vertex-coloured scan) keep them as ``COLOR_0`` instead."""
    import cv2
    import pygltflib as g

    path = Path(path)
    off = np.asarray(offset, dtype=np.float32)
    layers = scene.texture_layers()
    blob = bytearray()
    gl = g.GLTF2(asset=g.Asset(generator="video4spatial"), scene=0, scenes=[g.Scene(nodes=[])])
    gl.samplers = [
        g.Sampler(magFilter=g.LINEAR, minFilter=g.LINEAR_MIPMAP_NEAREST, wrapS=g.REPEAT, wrapT=g.REPEAT)
    ]
    image_of: dict[int, int] = {}
    material_of: dict[tuple, int] = {}

    def view(data: bytes, target=None) -> int:
        while len(blob) % 4:
            blob.append(0)
        gl.bufferViews.append(
            g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target)
        )
        blob.extend(data)
        return len(gl.bufferViews) - 1

    def accessor(a: np.ndarray, kind: str, minmax: bool = False, normalized: bool = False) -> int:
        ctype = g.UNSIGNED_BYTE if a.dtype == np.uint8 else g.FLOAT
        acc = g.Accessor(bufferView=view(a.tobytes(), g.ARRAY_BUFFER), componentType=ctype, count=len(a),
                         type=kind, normalized=normalized or None)  # fmt: skip
        if minmax:
            acc.min, acc.max = a.min(axis=0).tolist(), a.max(axis=0).tolist()
        gl.accessors.append(acc)
        return len(gl.accessors) - 1

    def texture(layer: int) -> int:
        if layer not in image_of:
            ok, png = cv2.imencode(".png", cv2.cvtColor(layers[layer], cv2.COLOR_RGBA2BGRA))
            assert ok
            gl.images.append(g.Image(bufferView=view(png.tobytes()), mimeType="image/png"))
            gl.textures.append(g.Texture(sampler=0, source=len(gl.images) - 1))
            image_of[layer] = len(gl.textures) - 1
        return image_of[layer]

    def material(rgb: tuple, layer: int) -> int:
        key = (rgb, layer)
        if key not in material_of:
            pbr = g.PbrMetallicRoughness(baseColorFactor=[*rgb, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
            if layer > 0:
                pbr.baseColorTexture = g.TextureInfo(index=texture(layer))
            gl.materials.append(g.Material(pbrMetallicRoughness=pbr, doubleSided=True))
            material_of[key] = len(gl.materials) - 1
        return material_of[key]

    for name, rows in parts:
        v = scene.vertices[rows]
        if len(v) == 0:
            continue
        col = np.round(np.clip(v[:, 6:9], 0, 1) * 255).astype(np.int64)
        layer = v[:, COL_LAYER].astype(np.int64)
        key = (col[:, 0] << 48) | (col[:, 1] << 40) | (col[:, 2] << 32) | layer  # (r, g, b, layer) order
        # groups per triangle (its first vertex), so a triangle never straddles two primitives
        tri_key = key[0::3]
        uniq, inv = np.unique(tri_key, return_inverse=True)
        vertex_colours = len(uniq) > 256
        if vertex_colours:
            uniq, inv = np.unique(layer[0::3], return_inverse=True)
        prims = []
        for gi in range(len(uniq)):
            tri = np.nonzero(inv == gi)[0]
            idx = (tri[:, None] * 3 + np.arange(3)).reshape(-1)
            w = v[idx]
            attrs = g.Attributes(
                POSITION=accessor(np.ascontiguousarray(w[:, :3] - off, np.float32), g.VEC3, minmax=True),
                NORMAL=accessor(np.ascontiguousarray(w[:, 3:6], np.float32), g.VEC3),
                TEXCOORD_0=accessor(np.ascontiguousarray(w[:, COL_UV], np.float32), g.VEC2),
            )
            lay = int(w[0, COL_LAYER])
            if vertex_colours:
                rgba = np.concatenate([col[idx], np.full((len(idx), 1), 255)], axis=1).astype(np.uint8)
                attrs.COLOR_0 = accessor(rgba, g.VEC4, normalized=True)
                mat = material((1.0, 1.0, 1.0), lay)
            else:
                mat = material(tuple(float(c) / 255.0 for c in col[idx[0]]), lay)
            prims.append(g.Primitive(attributes=attrs, material=mat, mode=g.TRIANGLES))
        gl.meshes.append(g.Mesh(primitives=prims, name=name))
        gl.nodes.append(g.Node(mesh=len(gl.meshes) - 1, name=name))
        gl.scenes[0].nodes.append(len(gl.nodes) - 1)
    while len(blob) % 4:
        blob.append(0)
    gl.buffers = [g.Buffer(byteLength=len(blob))]
    gl.set_binary_blob(bytes(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    gl.save_binary(str(path))
    return path
