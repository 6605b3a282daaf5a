"""Real textures: baked procedural patterns, glTF base-colour textures through UVs, and a GLB round trip
that renders the same view as the native scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import v4s_agent.envs as envs_pkg
from v4s_agent.envs import load_gltf_scene, make_pose, make_scene
from v4s_agent.envs.primitives import COL_LAYER, COL_UV, TILE_M
from v4s_agent.envs.renderer_gl import GLRenderer
from v4s_agent.envs.scenes import place_object_file
from v4s_agent.envs.textures import N_PATTERNS, _pattern, procedural_atlas

ASSETS = Path(envs_pkg.__file__).parent / "assets" / "habitat_test_assets"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_procedural_atlas_tiles_seamlessly():
    atlas = procedural_atlas()
    assert atlas.shape[0] == N_PATTERNS and atlas.dtype == np.uint8 and not atlas.flags.writeable
    assert (atlas[0] == 255).all()  # plain = white: the vertex colour alone
    s = (np.arange(128) + 0.5) / 128 * TILE_M
    for k in range(1, N_PATTERNS):
        assert atlas[k, ..., 0].std() > 2.0, f"pattern {k} is flat"
        # periodic: one tile further in u or v is the same pattern, so the image repeats seamlessly
        base = _pattern(k, s, s)
        np.testing.assert_allclose(_pattern(k, s + TILE_M, s), base, atol=1e-9, err_msg=str(k))
        np.testing.assert_allclose(_pattern(k, s, s - TILE_M), base, atol=1e-9, err_msg=str(k))


def test_procedural_uvs_are_world_planar_and_layers_are_patterns():
    s = make_scene(0)
    v = s.vertices
    floor = (v[:, 4] > 0.9) & (v[:, 1] < 0.01)
    assert floor.any()
    np.testing.assert_allclose(v[floor][:, COL_UV], v[floor][:, [0, 2]] / TILE_M, atol=1e-5)
    np.testing.assert_array_equal(v[:, COL_LAYER], v[:, 9])  # procedural: layer = pattern id


@pytest.mark.parametrize("seed,kind", [(0, "indoor"), (3, "outdoor")])
def test_glb_round_trip_renders_the_same_view(tmp_path, seed, kind):
    """Export a procedural scene (textures written into the GLB), load it back, render the same poses:
    PSNR >= 35 dB against the native scene, identical instance ids."""
    scene = make_scene(seed, kind)
    path = scene.export_glb(tmp_path / "scene.glb")
    back = load_gltf_scene(path)
    assert back.textures is not None and back.textures.shape[0] > 1  # the images travelled in the GLB
    assert sorted((o.instance_id, o.category) for o in back.objects) == sorted(
        (o.instance_id, o.category) for o in scene.objects
    )
    a, b = GLRenderer(scene, (96, 96)), GLRenderer(back, (96, 96))
    rng = np.random.default_rng(0)
    lo, hi = scene.bounds
    try:
        for _ in range(6):
            x, z = rng.uniform(lo[0] * 0.6, hi[0] * 0.6), rng.uniform(lo[2] * 0.6, hi[2] * 0.6)
            pose = make_pose(x, z, rng.uniform(-3, 3), scene.floor_y, pitch=-0.5)
            o1, o2 = a.render(pose), b.render(pose)
            assert psnr(o1["rgb"], o2["rgb"]) >= 35.0
            assert (o1["semantic"] == o2["semantic"]).mean() > 0.999
            np.testing.assert_allclose(o1["depth"], o2["depth"], atol=1e-3)
    finally:
        a.close()
        b.close()


def _textured_quad_glb(path: Path, image: np.ndarray) -> None:
    """A 2 m x 2 m wall quad at z = -2 facing +z with UVs (0,0) top-left .. (1,1) bottom-right."""
    import trimesh
    from PIL import Image

    verts = np.array([[-1, 2, -2], [1, 2, -2], [1, 0, -2], [-1, 0, -2]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 3, 2]])
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=np.float64)  # trimesh's convention (v up)
    mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(image))
    mesh = trimesh.Trimesh(verts, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=mat))
    mesh.export(str(path), file_type="glb")


def test_gltf_texture_is_sampled_through_uvs(tmp_path):
    """A fine checkerboard image on two triangles shows up as the checkerboard at the right place (the
    old per-face averaging gave two flat triangles)."""
    n = 8
    cells = (np.add.outer(np.arange(n), np.arange(n)) % 2).astype(bool)
    image = np.where(np.kron(cells, np.ones((32, 32), bool))[..., None], [220, 40, 40], [40, 40, 220])
    image[:32, :32] = [40, 220, 40]  # the top-left cell is green: checks orientation
    _textured_quad_glb(tmp_path / "quad.glb", image.astype(np.uint8))
    scene = load_gltf_scene(tmp_path / "quad.glb")
    r = GLRenderer(scene, (128, 128), hfov_deg=90.0)
    pose = make_pose(0.0, 0.0, 0.0, 0.0, height=1.0, pitch=0.0)  # looking at -z from 2 m
    rgb = r.render(pose, ("rgb",))["rgb"].astype(np.float64)
    r.close()
    # the quad spans x in [-1, 1] at 2 m with a 90 degree fov: columns 32..96, rows 32..96
    crop = rgb[34:94, 34:94]
    red, blue, green = crop[..., 0] > crop[..., 2], crop[..., 2] > crop[..., 0], crop[..., 1] > 100
    assert red.mean() > 0.3 and blue.mean() > 0.3  # both checker colours, not one average
    cell = 64 / n
    rows, cols = np.mgrid[34:94, 34:94]
    expect_red = ((np.floor((rows - 32) / cell) + np.floor((cols - 32) / cell)) % 2).astype(bool)
    match = (red == expect_red) | green
    assert match.mean() > 0.9
    assert green[:6, :6].mean() > 0.8  # top-left of the wall is the image's top-left


def test_chair_texture_is_visible():
    """Habitat's chair.glb on its stage: the rendered chair carries the colours of its texture image
    (the wooden seat and the grey legs), by chromaticity."""
    scene = load_gltf_scene(ASSETS / "stage_floor1.glb")
    chair = place_object_file(scene, ASSETS / "chair.glb", "chair", (0.0, 0.0))
    image = scene.textures[-1][..., :3].astype(np.float64)
    r = GLRenderer(scene, (256, 256))
    out = r.render(make_pose(0.0, 1.2, 0.0, scene.floor_y, pitch=-0.4))
    r.close()
    mask = out["semantic"] == chair.instance_id
    assert mask.sum() > 300
    pix = out["rgb"][mask].astype(np.float64)

    def chroma(c):
        return c / np.maximum(c.sum(axis=-1, keepdims=True), 1.0)

    wood = chroma(np.median(image[: int(0.8 * len(image))].reshape(-1, 3), axis=0))
    metal = chroma(np.median(image[int(0.92 * len(image)) :].reshape(-1, 3), axis=0))
    d_wood = np.linalg.norm(chroma(pix) - wood, axis=1)
    d_metal = np.linalg.norm(chroma(pix) - metal, axis=1)
    assert np.linalg.norm(wood - metal) > 0.1  # the image has two distinct colours
    assert (d_wood < 0.04).mean() > 0.4 and (d_metal < 0.04).mean() > 0.05
    assert (np.minimum(d_wood, d_metal) < 0.05).mean() > 0.85


def test_composed_habitat_scene_hosts_a_chair_goal(tmp_path):
    """The shipped chair_in_stage.glb is what scripts/make_habitat_scene.py builds, and it hosts an object
    goal on Habitat's textured chair."""
    import importlib.util

    from v4s_agent.envs import V4SNavEnv

    shipped = ASSETS / "chair_in_stage.glb"
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_habitat_scene.py"
    spec = importlib.util.spec_from_file_location("make_habitat_scene", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rebuilt = mod.compose(tmp_path / "chair_in_stage.glb")
    assert rebuilt.read_bytes() == shipped.read_bytes()
    ann = ".semantic.json"
    assert rebuilt.with_suffix(ann).read_text() == shipped.with_suffix(ann).read_text()

    env = V4SNavEnv(task="object", scene=str(shipped), goal_category="chair", resolution=(96, 96))
    obs, info = env.reset(seed=0)
    assert info["goal_category"] == "chair" and "chair" in info["instruction"]
    scene = env.unwrapped.scene
    assert {"chair", "table", "sofa"} <= set(scene.categories)
    assert scene.textures is not None and scene.textures.shape[0] >= 2  # the chair's image came along
    env.close()
