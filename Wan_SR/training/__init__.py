"""Training of the base model (``train_base.py``) and, later, the draft (docs/method.md §9).

- :mod:`.options`: every training option, its default and help (the parsers are built from it);
- :mod:`.losses`: the losses as pure functions of tensors;
- :mod:`.models`: the trainable base and regulariser DiTs, fp32 trainable parameters;
- :mod:`.checkpoints`: the published checkpoint layouts, written atomically;
- :mod:`.base`: the base trainer, one loop readable top to bottom.
"""
