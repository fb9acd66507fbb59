"""Import a BVH with Blender's importer and dump the armature's joint positions as JSON.

Runs in Blender's Python (``bpy``), not the venv:

    blender -b --factory-startup --python tests/blender/inspect_bvh.py -- FILE.bvh OUT.json

Debian's Blender needs one shim (below). The file is imported with the importer's defaults except ``global_scale`` 1 and no fps scaling
(one BVH frame per scene frame, starting at frame 1). OUT.json holds ``{"bones": [names in Blender's
order], "frame_range": [start, end], "heads": [[[x, y, z] per bone] per frame]}``: world positions
of every pose bone's head (= its joint) in Blender's axes (Z up) and the file's units.
"""

from __future__ import annotations

import builtins
import json
import sys

import bpy

# Debian's Blender 3.4 runs on the system Python 3.11, where open(..., "rU") is an error; its BVH
# importer still opens files that way (Blender's own builds bundle Python 3.10). Drop the "U".
_open = builtins.open
builtins.open = lambda file, mode="r", *args, **kwargs: _open(file, mode.replace("U", ""), *args, **kwargs)

path, out = sys.argv[sys.argv.index("--") + 1 :][:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=path, global_scale=1.0, use_fps_scale=False, update_scene_duration=True)
arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
action = arm.animation_data.action
start, end = (int(round(f)) for f in action.frame_range)
names = [b.name for b in arm.data.bones]
heads = []
for frame in range(start, end + 1):
    bpy.context.scene.frame_set(frame)
    heads.append([list(arm.matrix_world @ arm.pose.bones[n].head) for n in names])
with open(out, "w", encoding="utf-8") as f:
    json.dump({"bones": names, "frame_range": [start, end], "heads": heads}, f)
