"""The command lines: one argument parser per script (``inference_step_1.py`` -> :mod:`.step1`,
``inference_step_2.py`` -> :mod:`.step2`, ``eval_metrics.py`` -> :mod:`.evaluate`,
``train_base.py`` / ``train_draft.py`` -> :mod:`.train_base` / :mod:`.train_draft`, both built
by :mod:`.training`). Each ``main(argv)`` parses, checks every option before a model loads
(exit status 2 with one clear line), sets up logging and calls ``Wan_SR.runs`` or
``Wan_SR.training``; :mod:`.common` holds the shared parser pieces, :mod:`.release` the published
release's options that are checked or have no effect here. Kept free of heavy imports (torch,
diffsynth, pyiqa) so ``--help`` is fast."""
