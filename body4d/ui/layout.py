"""The app's widgets and their arrangement (no behaviour: `events.UiEvents.bind` adds that).

Layout follows the original SAM-Body4D app: on the left the example gallery, the current frame
(click to annotate), the upload, the frame slider with its time, the point type and the targets;
on the right the status, the input preview, the Mask Generation / 4D Generation buttons and
their results. Additions: the models status panel, Remove/Clear targets, Auto-detect people,
Cancel, downloads, and a 3D viewer of the scene GLB. Every widget has an
``elem_id`` for browser tests. Texts and button states come from a `body4d.ui.status.LayoutSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from body4d.ui.status import ButtonSpec, LayoutSpec

TITLE = "body4d"
# The local-storage entry holding the browser's session key (a reload finds its session again).
BROWSER_STORAGE_KEY = "body4d_session"
UPLOAD_TYPES = [".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"]
# Narrowest a column gets before the two columns stack (so the frame stays large on small screens).
COLUMN_MIN_WIDTH = 560
# Pixel heights of the gallery, the result players and the 3D viewer.
GALLERY_HEIGHT = 160
GALLERY_COLUMNS = 3
PLAYER_HEIGHT = 320
VIEWER_HEIGHT = 360
STATUS_LINES = 3
POSITIVE = "Positive"
NEGATIVE = "Negative"


@dataclass(frozen=True)
class Widgets:
    """Every interactive or output widget of the page."""

    browser_key: gr.BrowserState
    models: gr.Markdown
    system: gr.Markdown
    recent_runs: gr.Dropdown
    examples: gr.Gallery
    upload: gr.File
    frame: gr.Image
    slider: gr.Slider
    time: gr.Textbox
    point_type: gr.Radio
    targets: gr.Radio
    add_target: gr.Button
    remove_target: gr.Button
    clear_targets: gr.Button
    auto_detect: gr.Button
    repair: gr.Button
    status: gr.Textbox
    preview_video: gr.Video
    mask_generation: gr.Button
    generate_4d: gr.Button
    cancel: gr.Button
    mask_video: gr.Video
    result_video: gr.Video
    result_choice: gr.Radio
    viewer3d: gr.Model3D
    downloads: gr.File


def _button(spec: ButtonSpec, elem_id: str, variant: str = "secondary") -> gr.Button:
    return gr.Button(spec.label, interactive=spec.interactive, elem_id=elem_id, variant=variant)


def build_layout(spec: LayoutSpec) -> tuple[gr.Blocks, Widgets]:
    """Create the page; returns the Blocks and its widgets (no events bound yet).

    Args:
        spec: texts, gallery items and button states.
    """
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            "# body4d — 4D human mesh recovery from video\n"
            "Upload a video or pick an example, choose a frame, click on people (positive / negative "
            "points), add a target per person, then run **Mask Generation** and **4D Generation**."
        )
        browser_key = gr.BrowserState(None, storage_key=BROWSER_STORAGE_KEY)
        models = gr.Markdown(spec.models_markdown, elem_id="models")
        system = gr.Markdown(spec.system_markdown, elem_id="system")
        recent_runs = gr.Dropdown(
            label="Recent runs (pick one to reopen it with its results)",
            choices=[],
            value=None,
            visible=False,
            elem_id="recent_runs",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=COLUMN_MIN_WIDTH):
                gr.Markdown("### Example videos")
                examples = gr.Gallery(
                    value=spec.examples or None,
                    columns=GALLERY_COLUMNS,
                    height=GALLERY_HEIGHT,
                    allow_preview=False,
                    show_label=False,
                    visible=bool(spec.examples),
                    elem_id="examples",
                )
                if spec.examples_hint:
                    gr.Markdown(f"More example videos: {spec.examples_hint}.", elem_id="examples_hint")
                upload = gr.File(
                    label=f"Upload a video (mp4, mov, avi, mkv, webm{spec.upload_limits})",
                    file_types=UPLOAD_TYPES,
                    file_count="single",
                    type="filepath",
                    elem_id="upload",
                )
                frame = gr.Image(
                    label="Current frame (click to annotate)",
                    type="numpy",
                    format="jpeg",
                    interactive=False,
                    elem_id="frame",
                )
                slider = gr.Slider(
                    minimum=0,
                    maximum=1,
                    value=0,
                    step=1,
                    label="Frame index",
                    interactive=False,
                    elem_id="frame_slider",
                )
                time = gr.Textbox(label="Time", value="", interactive=False, elem_id="time")
                point_type = gr.Radio(
                    [POSITIVE, NEGATIVE], value=POSITIVE, label="Point type", elem_id="point_type"
                )
                targets = gr.Radio(
                    choices=[("Target 1 · 0 clicks", 1)],
                    value=1,
                    label="Targets (clicks go to the selected one)",
                    elem_id="targets",
                )
                with gr.Row():
                    add_target = gr.Button("Add Target", elem_id="add_target")
                    remove_target = gr.Button("Remove Target", elem_id="remove_target")
                    clear_targets = gr.Button("Clear Targets", elem_id="clear_targets")
                with gr.Row():
                    auto_detect = _button(spec.auto_detect, "auto_detect")
                    repair = _button(spec.repair, "repair")
            with gr.Column(scale=1, min_width=COLUMN_MIN_WIDTH):
                status = gr.Textbox(
                    label="Status",
                    value="Upload a video or pick an example to start.",
                    lines=STATUS_LINES,
                    interactive=False,
                    elem_id="status",
                )
                preview_video = gr.Video(
                    label="Input video (browser preview)",
                    interactive=False,
                    height=PLAYER_HEIGHT,
                    elem_id="preview_video",
                )
                with gr.Row():
                    mask_generation = _button(spec.mask_generation, "mask_generation", "primary")
                    generate_4d = _button(spec.generate_4d, "generate_4d", "primary")
                    cancel = _button(spec.cancel, "cancel", "stop")
                mask_video = gr.Video(
                    label="Segmentation Result", interactive=False, height=PLAYER_HEIGHT, elem_id="mask_video"
                )
                result_video = gr.Video(
                    label="4D Result", interactive=False, height=PLAYER_HEIGHT, elem_id="result_video"
                )
                result_choice = gr.Radio(
                    label="4D Result shows", choices=[], visible=False, elem_id="result_choice"
                )
                # Always visible: a Model3D shown later by an update never mounts its canvas (Gradio 6.31).
                viewer3d = gr.Model3D(label="3D result (GLB)", height=VIEWER_HEIGHT, elem_id="viewer3d")
                downloads = gr.File(
                    label="Downloads (zip of the run, bodies.npz, each person's GLB, BVH, npz, json)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
    widgets = Widgets(
        browser_key=browser_key,
        models=models,
        system=system,
        recent_runs=recent_runs,
        examples=examples,
        upload=upload,
        frame=frame,
        slider=slider,
        time=time,
        point_type=point_type,
        targets=targets,
        add_target=add_target,
        remove_target=remove_target,
        clear_targets=clear_targets,
        auto_detect=auto_detect,
        repair=repair,
        status=status,
        preview_video=preview_video,
        mask_generation=mask_generation,
        generate_4d=generate_4d,
        cancel=cancel,
        mask_video=mask_video,
        result_video=result_video,
        result_choice=result_choice,
        viewer3d=viewer3d,
        downloads=downloads,
    )
    return demo, widgets
