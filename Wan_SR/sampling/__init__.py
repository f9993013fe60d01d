"""Inference from latents to restored tiles: the flow-matching timeline (:mod:`.timeline`), the
base step and the draft steps as pure functions (:mod:`.speculative`: ``base_step``,
``draft_steps``), the pipeline that loads the models once and restores one tile
(:mod:`.pipeline`: :class:`~.pipeline.PSSRPipeline`, :class:`~.pipeline.SamplingConfig`), a whole
clip in pixel windows (:mod:`.clip`) or latent windows (:mod:`.latent_windows`), and the GPU
speed switches (:mod:`.speed`). docs/method.md §1-§4 and §6."""
