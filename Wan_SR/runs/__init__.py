"""Loops over folders and videos, the only package that knows about files, name pairing,
``--skip_existing``, run settings and progress bars: step 1 (:mod:`.step1`:
``restore_folder``, ``restore_video``, ``restore`` for a clip in memory), step 2 (:mod:`.step2`:
``run_step2``), scoring (:mod:`.evaluate`: ``evaluate``) and paired test sets
(:mod:`.degrade`: ``degrade_folder``). :mod:`.common` holds the run settings file, each output's
record and the summary; :mod:`.parallel` how the inputs are shared between processes."""
