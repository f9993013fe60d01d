"""PS-SR evaluation metrics (``eval_metrics.py``).

- :mod:`.evaluate` - the driver: pairs inputs, streams frames, writes the JSON.
- :mod:`.iqa` - per-frame pyiqa metrics (PSNR/SSIM conventions documented there).
- :mod:`.temporal` - the flow-warping error ``ewarp``.
- :mod:`.weights` - offline-safe weight lookup (``--weights_dir``, fast missing-weight errors).

Nothing heavy (torch, pyiqa) is imported by this package's ``__init__``.
"""
