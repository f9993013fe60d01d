"""Start the app on loaded models: the workspace (removed on exit), Gradio's settings, the
page."""
from __future__ import annotations

from Wan_SR.core.options import Step1Config
from Wan_SR.models.tagger import ClipPrompts
from .options import AppOptions
from .safety import Workspace
from .server import App, Models
from .ui import gradio_env, serve


def start(pipe, prompts: ClipPrompts, config: Step1Config, options: AppOptions,
          block: bool = True) -> App:
    """Serve the app on ``pipe`` (step 1's pipeline) until interrupted (``block``) or in the
    background; its temporary files go when the process ends."""
    workspace = Workspace(options.work_dir)
    workspace.register_cleanup()
    gradio_env(workspace.uploads)
    app = App(Models(pipe, prompts, config), options, workspace)
    serve(app, block=block)
    return app
