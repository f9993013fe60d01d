"""Step 1 (docs/method.md, "Sliding windows", "Outputs"): restore videos with one base step and
a few draft steps, in four concepts:

- the plan (:mod:`.plan`): the :class:`~Wan_SR.core.options.Step1Config` of the run and, per
  input video, a :class:`~.plan.VideoJob` (outputs after ``--skip_existing``, output names and
  paths, branches to decode, processing size, audio), decided before any model work;
- the sources (:mod:`.sources`): the clip restored by the pipeline in pixel windows (the
  published method; split into parts for several processes) or latent windows, each a
  generator of ``{branch: frames}`` chunks in frame order;
- the sinks (:mod:`.sink`): the writers of one video (``final`` fused in the same pass, each
  output recorded when complete, every writer aborted on an error) or arrays in memory;
- one folder loop (:mod:`.folder`) for one process or several, and the in-memory
  :func:`restore` (:mod:`.memory`) on the same source.

Output layout: ``<output_dir>/<branch>/<name>.mp4`` for ``base``, ``base+draft_k`` and ``final``;
``<output_dir>/run_config.json`` holds the run's config and the settings that decide the
outputs, each output's hidden record those it was made with (:class:`Wan_SR.runs.common.Records`).
The models are built from the config by :func:`.load.load_models`.
"""
from .folder import restore_folder, restore_video
from .memory import restore
from .plan import SCRIPT, VideoJob, plan_video

__all__ = ["SCRIPT", "VideoJob", "plan_video", "restore", "restore_folder", "restore_video"]
