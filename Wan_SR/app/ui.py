"""The page (Gradio Blocks): three tabs wired to the handlers of :class:`~.server.App`, and
:func:`serve`, which starts it on the app's host and port.

- Restore: upload a video (or pick one from ``--input_dir``), choose the outputs and the
  per-job settings (built from the option dataclasses, :data:`~.options.JOB_FIELDS`), run step
  1; then the input and any output in synchronised players, a frame slider with a before/after
  image comparison, and the outputs to download.
- Tune: alpha, fc, order and border re-fuse the shown frame at once; "Fuse the whole clip"
  writes the clip as ``inference_step_2.py`` would, with the command that does the same.
- Compare: two folders matched by name as ``eval_metrics.py`` matches them, per-frame PSNR and
  SSIM plots and the frames side by side.

One GPU job at a time: restoring and whole-clip fusion share one queue slot.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import gradio as gr

from .restore import job_fields, value_type
from .server import App

log = logging.getLogger(__name__)
GPU = "gpu"  # the concurrency group of the jobs that use the models (one at a time)

# Keeps the page's players in step: play, pause, seek and speed of one apply to the others.
SYNC_PLAYERS = """<script>
(function () {
  function videos() { return Array.from(document.querySelectorAll('#pssr-players video')); }
  function follow(src, ev) {
    if (window.__pssrSyncing) return;
    window.__pssrSyncing = true;
    for (const v of videos()) {
      if (v === src) continue;
      if (Math.abs(v.currentTime - src.currentTime) > 0.05) v.currentTime = src.currentTime;
      v.playbackRate = src.playbackRate;
      if (ev === 'play') v.play().catch(function () {});
      if (ev === 'pause') v.pause();
    }
    window.__pssrSyncing = false;
  }
  setInterval(function () {
    for (const v of videos()) {
      if (v.dataset.pssrSync) continue;
      v.dataset.pssrSync = '1';
      for (const ev of ['play', 'pause', 'seeked', 'ratechange'])
        v.addEventListener(ev, function () { follow(v, ev); });
    }
  }, 500);
})();
</script>"""


def field_control(part: str, f: dataclasses.Field, default):
    """A control for one option field: its name as label, its help text as info."""
    label, info = f.name.replace("_", " "), f.metadata.get("help", "")
    if f.type == "bool":
        return gr.Checkbox(value=bool(default), label=label, info=info)
    if "choices" in f.metadata:
        return gr.Radio(list(f.metadata["choices"]), value=default, label=label, info=info)
    if value_type(f) in ("int", "float"):
        return gr.Number(value=default, label=label, info=info,
                         precision=0 if value_type(f) == "int" else None)
    return gr.Textbox(value=str(default), label=label, info=info)


def restore_tab(app: App) -> dict:
    """The Restore tab's components by name."""
    c: dict = {}
    cfg = app.models.config
    with gr.Row():
        with gr.Column(scale=1):
            c["upload"] = gr.File(label="video to restore", file_types=["video"],
                                  type="filepath", elem_id="pssr-upload")
            c["picked"] = gr.Dropdown(app.input_names(), value=None, label="or a video from "
                                      "--input_dir", visible=bool(app.inputs.labels()))
            c["outputs"] = gr.CheckboxGroup(app.branches, value=app.branches, label="outputs",
                                            info="base, base+draft_k, and final (the "
                                                 "frequency-domain update); Tune needs base "
                                                 f"and {app.last}")
            c["tags"] = gr.Checkbox(value=app.models.prompts.per_clip, label="tags",
                                    interactive=app.models.prompts.per_clip,
                                    info="append RAM tags of one frame to the prompt" + (
                                        "" if app.models.prompts.per_clip else
                                        " (no tagger loaded: start with --ram_path)"))
            c["values"] = [field_control(part, f, getattr(getattr(cfg, part), f.name))
                           for part, f in job_fields()]
            c["run"] = gr.Button("Restore", variant="primary", elem_id="pssr-run")
            c["status"] = gr.Markdown(elem_id="pssr-status")
        with gr.Column(scale=2):
            with gr.Row(elem_id="pssr-players"):
                c["before"] = gr.Video(label="input", interactive=False)
                c["after"] = gr.Video(label="output", interactive=False)
            c["branch"] = gr.Dropdown([], label="output shown", elem_id="pssr-branch")
            c["frame"] = gr.Slider(0, 1, value=0, step=1, label="frame", elem_id="pssr-frame")
            c["viewer"] = gr.ImageSlider(label="before / after (drag the divider)",
                                         type="numpy", format="png", elem_id="pssr-viewer")
            c["files"] = gr.File(label="downloads", file_count="multiple", interactive=False)
    return c


def tune_tab(app: App) -> dict:
    c: dict = {}
    f = app.models.config.fusion
    gr.Markdown("Re-fuse the last run's **base** and **last draft** outputs with step 2's "
                "frequency-domain update. The shown frame updates as you move a slider; "
                "*Fuse the whole clip* writes exactly what `inference_step_2.py` writes with "
                "these values (the same code; the command is shown).")
    with gr.Row():
        with gr.Column(scale=1):
            c["alpha"] = gr.Slider(0, 2, value=f.alpha, step=0.05, label="alpha",
                                   elem_id="pssr-alpha")
            c["fc"] = gr.Slider(0.01, 0.5, value=f.fc, step=0.01, label="fc")
            c["order"] = gr.Slider(1, 8, value=f.order, step=1, label="order")
            c["border"] = gr.Slider(0, 16, value=f.border, step=1, label="border")
            c["frame"] = gr.Slider(0, 1, value=0, step=1, label="frame")
            c["fuse"] = gr.Button("Fuse the whole clip", variant="primary")
            c["status"] = gr.Markdown(elem_id="pssr-tune-status")
        with gr.Column(scale=2):
            c["viewer"] = gr.ImageSlider(label="base / fused", type="numpy", format="png",
                                         elem_id="pssr-tune-viewer")
            c["file"] = gr.File(label="fused clip", interactive=False)
            c["command"] = gr.Textbox(label="the same with inference_step_2.py",
                                      interactive=False)
    return c


def compare_tab(app: App) -> dict:
    c: dict = {}
    labels = app.folders.labels()
    with gr.Row():
        c["reference"] = gr.Dropdown(labels, label="reference (e.g. ground truth)")
        c["result"] = gr.Dropdown(labels, label="result")
        c["match"] = gr.Button("Match by name")
    c["status"] = gr.Markdown()
    c["name"] = gr.Dropdown([], label="video")
    with gr.Row():
        c["psnr"] = gr.LinePlot(x="frame", y="PSNR", label="PSNR per frame (dB)", height=220)
        c["ssim"] = gr.LinePlot(x="frame", y="SSIM", label="SSIM per frame", height=220)
    c["frame"] = gr.Slider(0, 1, value=0, step=1, label="frame")
    with gr.Row():
        c["left"] = gr.Image(label="reference", type="numpy", format="png", interactive=False)
        c["right"] = gr.Image(label="result", type="numpy", format="png", interactive=False)
    c["viewer"] = gr.ImageSlider(label="reference / result (drag the divider)", type="numpy",
                                 format="png")
    return c


def build(app: App) -> gr.Blocks:
    with gr.Blocks(title="PS-SR", analytics_enabled=False, head=SYNC_PLAYERS) as demo:
        run_id = gr.State(None)
        gr.Markdown("## PS-SR: restore, tune the frequency-domain update, compare")
        with gr.Tab("Restore"):
            r = restore_tab(app)
        with gr.Tab("Tune") as tune_page:
            t = tune_tab(app)
        with gr.Tab("Compare"):
            c = compare_tab(app)
        wire_restore(app, r, t, c, run_id)
        wire_tune(app, t, run_id, tune_page)
        wire_compare(app, c)
    return demo


def wire_restore(app: App, r: dict, t: dict, c: dict, run_id) -> None:
    def restore(progress=gr.Progress(track_tqdm=True), *args):
        return app.restore(*args, progress=progress)

    r["run"].click(
        restore, [r["upload"], r["picked"], r["outputs"], r["tags"], *r["values"]],
        [r["status"], run_id, r["branch"], r["frame"], r["viewer"], r["before"], r["after"],
         r["files"], t["frame"], c["reference"], c["result"]],
        api_name="restore", concurrency_id=GPU, concurrency_limit=1)
    view = [run_id, r["branch"], r["frame"]]
    r["frame"].change(app.view, view, [r["viewer"], r["after"]], api_name="view",
                      trigger_mode="always_last", show_progress="hidden")
    r["branch"].input(app.view, view, [r["viewer"], r["after"]], api_name=False,
                      show_progress="hidden")


def wire_tune(app: App, t: dict, run_id, page) -> None:
    values = [t["alpha"], t["fc"], t["order"], t["border"]]
    page.select(app.tune_frame, [run_id, t["frame"], *values], [t["viewer"], t["status"]],
                api_name=False, show_progress="hidden", concurrency_id="tune")
    for slider in values:
        slider.change(app.tune_frame, [run_id, t["frame"], *values],
                      [t["viewer"], t["status"]], api_name=False,
                      trigger_mode="always_last", show_progress="hidden",
                      concurrency_id="tune")
    t["frame"].change(app.tune_frame, [run_id, t["frame"], *values],
                      [t["viewer"], t["status"]], api_name="tune_frame", show_progress="hidden",
                      trigger_mode="always_last", concurrency_id="tune")
    t["fuse"].click(app.fuse_clip, [run_id, *values], [t["file"], t["command"], t["status"]],
                    api_name="fuse_clip", concurrency_id=GPU, concurrency_limit=1)


def wire_compare(app: App, c: dict) -> None:
    c["match"].click(app.match, [c["reference"], c["result"]], [c["name"], c["status"]],
                     api_name="match")
    pair = [c["reference"], c["result"], c["name"]]
    c["name"].change(app.scores, pair, [c["psnr"], c["ssim"], c["status"], c["frame"]],
                     api_name="scores")
    c["frame"].change(app.compare_frames, [*pair, c["frame"]],
                      [c["left"], c["right"], c["viewer"]],
                      api_name="compare_frame", trigger_mode="always_last",
                      show_progress="hidden")


def serve(app: App, block: bool = True):
    """Start the page on the app's host and port: uploads capped in size, only the workspace
    and the folders given at start served, no share link unless asked, no analytics."""
    o = app.options
    demo = build(app)
    demo.queue(default_concurrency_limit=1)
    allowed = [str(app.workspace.root), *[str(p) for p in app.folders.folders.values()],
               *[str(p) for p in app.inputs.folders.values()]]
    log.info("PS-SR app: temporary files in %s", app.workspace.root)
    if o.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the app and "
                    "the files it serves", o.host)
    return demo.launch(server_name=o.host, server_port=o.port or None, share=o.share,
                       max_file_size=int(o.max_upload_mb * 1e6), allowed_paths=allowed,
                       inbrowser=False, show_error=True, ssr_mode=False,
                       prevent_thread_lock=not block, quiet=False)


def gradio_env(app_uploads) -> None:
    """Where Gradio stores uploads (the workspace), and no telemetry; set before any Blocks."""
    os.environ["GRADIO_TEMP_DIR"] = str(app_uploads)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
