"""Compose Habitat's test assets into an object-goal scene: ``chair.glb`` (textured) on the
``stage_floor1.glb`` stage, beside procedural furniture, written as one GLB + semantic annotation.

Why: Habitat's own test assets carry no semantic annotation, so no object goal could be set on them. The
composed file is what ``python -m v4s_agent.rollout --scene ... --annotation ...`` and the ``habitat``
split of ``evaluate`` run the object task on. Deterministic; rerun to rebuild::

    python scripts/make_habitat_scene.py --out envs/assets/habitat_test_assets/chair_in_stage.glb
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from v4s_agent.envs.navigation import NavGrid
from v4s_agent.envs.scenes import load_gltf_scene, place_category, place_object_file

ASSETS = Path(__file__).resolve().parents[1] / "envs" / "assets" / "habitat_test_assets"

# (category or file, (x, z), yaw): spread over the stage's open floor, away from its mounds
LAYOUT = [
    ("chair.glb", (-4.0, -7.0), 0.0),
    ("table", (-7.0, -2.0), 0.0),
    ("sofa", (7.5, -7.0), math.pi / 2),
    ("potted_plant", (-1.0, -7.5), 0.0),
    ("bookshelf", (-7.5, -5.0), -math.pi / 2),
    ("trash_can", (-7.0, 0.5), 0.0),
]


def compose(out: Path) -> Path:
    scene = load_gltf_scene(ASSETS / "stage_floor1.glb")
    scene.name = out.stem
    for i, (what, pos, yaw) in enumerate(LAYOUT):
        if what.endswith(".glb"):
            place_object_file(scene, ASSETS / what, Path(what).stem, pos, yaw=yaw)
        else:
            place_category(scene, what, pos, yaw=yaw, seed=i)
    grid = NavGrid(scene)
    for o in scene.objects:  # every object must be reachable from open floor
        x, z = o.center[0], o.center[2]
        near = [grid.is_navigable(x + dx, z + dz) for dx, dz in ((1.2, 0), (-1.2, 0), (0, 1.2), (0, -1.2))]
        if not any(near):
            raise RuntimeError(f"{o.category} at ({x:.1f}, {z:.1f}) has no navigable floor around it")
    return scene.export_glb(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ASSETS / "chair_in_stage.glb")
    args = ap.parse_args(argv)
    path = compose(args.out)
    print(f"wrote {path} and {path.with_suffix('.semantic.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
