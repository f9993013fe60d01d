"""A local web app on step 1 and step 2 (README, "The app"): restore a video and see it beside
its input, tune the frequency-domain update live, compare two folders by name.

- :mod:`.options`: the app's options and the per-job step-1 settings it offers;
- :mod:`.safety`: the workspace (removed on exit), the folders given at start, upload checks;
- :mod:`.session`: finished runs by id;
- :mod:`.restore`, :mod:`.tune`, :mod:`.compare`: the work, through the functions the
  scripts use (:func:`Wan_SR.runs.step1.restore_video`, :func:`Wan_SR.runs.step2.fuse_pair`,
  :func:`Wan_SR.runs.evaluate.pair_inputs`);
- :mod:`.server` (the page's handlers) and :mod:`.ui` (the page, :func:`~.launch.start`).

This package imports nothing here, so the command line can read :mod:`.options` without
loading torch or gradio.
"""
