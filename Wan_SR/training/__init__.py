"""Training of the base model (``train_base.py``) and of the draft (``train_draft.py``;
docs/method.md §9). Entry points: ``Wan_SR.training.base.train_base`` and
``Wan_SR.training.draft.train_draft``, each taking its config and running one step function in a
loop that resumes, logs and saves (:mod:`.engine` holds what both share).

- :mod:`.options`: every training option, its default and help (the parsers are built from it);
- :mod:`.losses`: the losses as pure functions of tensors; :mod:`.lpips` (local LPIPS-VGG) and
  :mod:`.discriminator` (latent discriminator, hinge losses) for base training;
- :mod:`.models`: the trainable base and regulariser DiTs, fp32 trainable parameters;
- :mod:`.checkpoints`: the published checkpoint layouts and the training state, written
  atomically.
"""
