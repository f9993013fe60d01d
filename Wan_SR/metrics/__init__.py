"""The metrics of ``eval_metrics.py`` (docs/method.md §10); the loop over folders is
:mod:`Wan_SR.runs.evaluate`.

- :mod:`.score` - one (prediction, ground truth) pair scored frame by frame, streamed
  (``score_pair``, ``build_metrics``, ``parse_metric_names``);
- :mod:`.iqa` - per-frame pyiqa metrics (PSNR/SSIM conventions documented there);
- :mod:`.temporal` - the flow-warping error ``ewarp`` (DIS flow);
- :mod:`.raft_ewarp` - ``ewarp_raft``, E*warp with torchvision's RAFT (the papers' protocol);
- :mod:`.vqa`, :mod:`.vqa_nets` - the whole-video scores ``dover`` (and its technical / aesthetic
  parts) and ``fastervqa``, our implementation of the official models;
- :mod:`.video_level` - those metrics as ``eval_metrics.py`` runs them (weights found first);
- :mod:`.weights` - weight files for offline machines (the documented folders,
  ``--weights_dir``, one clear error for a missing file).

Nothing heavy (torch, pyiqa) is imported by this package's ``__init__``.
"""
