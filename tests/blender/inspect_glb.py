"""Import GLBs with Blender's glTF importer and dump what Blender made of them as JSON.

Runs in Blender's Python (``bpy``; Debian's Blender uses the system python3 and python3-numpy), not the venv:

    blender -b --factory-startup --python tests/blender/inspect_glb.py -- OUT.json [FILE.glb FPS N_FRAMES]...

Each file is imported into an empty scene whose frame rate is ``FPS`` (an integer), so that the
importer's keyframes (at ``time * scene fps``) land on the body4d frame indices, and evaluated at
frames ``0..N_FRAMES-1``. OUT.json maps each file to::

    {"error": null or the importer's traceback, "scene_range": [frame_start, frame_end],
     "objects": {name: {"type", "vertices", "faces" (polygon vertex indices), "shape_keys"
                 (names, Basis excluded), "action_range", "shape_key_action_range",
                 "interpolations", "base_color",
                 "frames": [{"frame", "matrix_world" (4x4), "co" (evaluated mesh-space vertices)}]}}}
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import bpy


def _action_summary(id_data) -> tuple[list[float] | None, list[str]]:
    """Frame range and keyframe interpolations of the active action of ``id_data`` (None if none)."""
    anim = id_data.animation_data if id_data is not None else None
    if anim is None or anim.action is None:
        return None, []
    action = anim.action
    modes = sorted({k.interpolation for fc in action.fcurves for k in fc.keyframe_points})
    return list(action.frame_range), modes


def _base_color(obj) -> list[float] | None:
    """Base Color of the object's first material's Principled BSDF (linear RGBA)."""
    if not obj.material_slots or obj.material_slots[0].material is None:
        return None
    material = obj.material_slots[0].material
    if not material.use_nodes:
        return None
    for node in material.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            return list(node.inputs["Base Color"].default_value)
    return None


def _inspect(path: str, fps: int, n_frames: int) -> dict:
    """Import ``path`` into an empty scene and describe every mesh object at frames 0..n_frames-1."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    # Not the default import_shading="NORMALS": in Blender 3.4 it uses `np.bool`, removed in numpy
    # 1.24 (Debian 12's), and fails on every mesh (KhronosGroup/glTF-Blender-IO#1844, fixed in 3.5).
    # body4d GLBs have no NORMAL, so both modes give the same flat-shaded faces.
    try:
        bpy.ops.import_scene.gltf(filepath=path, import_shading="SMOOTH")
    except RuntimeError:
        return {"error": traceback.format_exc(), "scene_range": None, "objects": {}}
    meshes = [obj for obj in scene.objects if obj.type == "MESH"]
    objects: dict = {}
    for obj in meshes:
        action_range, modes = _action_summary(obj)
        keys = obj.data.shape_keys
        key_range, key_modes = _action_summary(keys)
        objects[obj.name] = {
            "type": obj.type,
            "vertices": len(obj.data.vertices),
            "faces": [list(p.vertices) for p in obj.data.polygons],
            "shape_keys": [k.name for k in keys.key_blocks[1:]] if keys else [],
            "action_range": action_range,
            "shape_key_action_range": key_range,
            "interpolations": sorted(set(modes) | set(key_modes)),
            "base_color": _base_color(obj),
            "frames": [],
        }
    for frame in range(n_frames):
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        for obj in meshes:
            evaluated = obj.evaluated_get(depsgraph)
            mesh = evaluated.to_mesh()
            co = [0.0] * (3 * len(mesh.vertices))
            mesh.vertices.foreach_get("co", co)
            evaluated.to_mesh_clear()
            objects[obj.name]["frames"].append(
                {
                    "frame": frame,
                    "matrix_world": [list(row) for row in evaluated.matrix_world],
                    "co": co,
                }
            )
    return {"error": None, "scene_range": [scene.frame_start, scene.frame_end], "objects": objects}


def main() -> None:
    """Parse the arguments after ``--`` and write the JSON report."""
    out, *specs = sys.argv[sys.argv.index("--") + 1 :]
    if not specs or len(specs) % 3:
        raise SystemExit(f"expected OUT.json followed by FILE.glb FPS N_FRAMES triples, got {specs}")
    triples = zip(specs[::3], specs[1::3], specs[2::3], strict=True)
    report = {path: _inspect(path, int(fps), int(n_frames)) for path, fps, n_frames in triples}
    Path(out).write_text(json.dumps(report))


main()
