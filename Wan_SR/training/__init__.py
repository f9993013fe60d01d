"""Training of the base model (``train_base.py``) and of the draft (``train_draft.py``);
docs/method.md §9. Entry points: ``Wan_SR.training.base.train_base`` and
``Wan_SR.training.draft.train_draft``, each taking its config.

- :mod:`.options`: every training option with its default, help and checks; one config per
  trainer (:class:`~.options.BaseTrainConfig`, :class:`~.options.DraftTrainConfig`);
- :mod:`.base`, :mod:`.draft`: each trainer's models and its ``train_step``, read top to bottom;
- :mod:`.build`: what both build first (accelerator, data, the inputs of a step: degradation,
  VAE, tagger, text contexts);
- :mod:`.engine`: the guarded update (accumulation, NaN/Inf skip, clipping, alike on every
  process) and the step loop (resume, logging, saving);
- :mod:`.losses`, :mod:`.discriminator`, :mod:`.lpips`: the losses and the networks they use;
- :mod:`.models`: the trainable DiTs, fp32 trainable parameters;
- :mod:`.checkpoints`: the published checkpoint layouts and the training state, written
  atomically.
"""
