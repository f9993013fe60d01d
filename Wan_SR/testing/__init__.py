"""Test fixtures that write files in the formats the real loaders read: random weights in the
official layouts, so tests and benchmarks run the real loading code without downloads.

- :mod:`.checkpoints`: :func:`~.checkpoints.make_checkpoints`, the Wan2.1 DiT, VAE, umT5 and
  tokenizer files, ``base.safetensors`` and ``draft.safetensors`` (tiny, or real shapes for GPU
  benchmarks); command line ``python -m Wan_SR.tools.make_tiny_checkpoints``;
- :mod:`.ram`: ``ram_swin_large_14m.pth`` and ``DAPE.pth`` (:func:`~.ram.write_tiny_ram`,
  :func:`~.ram.write_tiny_dape`);
- :mod:`.lpips`: LPIPS-VGG weights for ``--lpips_weights``
  (:func:`~.lpips.write_random_lpips_weights`);
- :mod:`.vqa`: ``DOVER.pth``, ``FAST_VQA_3D_1_1.pth`` (tiny, official key layouts) and torchvision's
  RAFT-large file (random), plus the synthetic clips of the DOVER / FasterVQA conformance fixtures.

Only tests, benchmarks and ``Wan_SR.tools`` import this package; the code that restores, trains
and scores never does (tests/test_layout.py checks it).
"""
