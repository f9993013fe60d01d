"""The metrics of ``eval_metrics.py`` (docs/method.md §10); the loop over folders is
:mod:`Wan_SR.runs.evaluate`.

- :mod:`.score` - one (prediction, ground truth) pair scored frame by frame, streamed
  (``score_pair``, ``build_metrics``, ``parse_metric_names``);
- :mod:`.iqa` - per-frame pyiqa metrics (PSNR/SSIM conventions documented there);
- :mod:`.temporal` - the flow-warping error ``ewarp``;
- :mod:`.weights` - weight files for offline machines (the documented folders,
  ``--weights_dir``, one clear error for a missing file).

Nothing heavy (torch, pyiqa) is imported by this package's ``__init__``.
"""
