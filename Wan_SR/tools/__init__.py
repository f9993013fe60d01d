"""Small command-line tools besides the published scripts, run as ``python -m Wan_SR.tools.X``:
:mod:`.make_tiny_checkpoints` (random weights in the official layouts, written by
:mod:`Wan_SR.testing`) and :mod:`.degrade` (a paired test set from high-quality videos, the work
being :mod:`Wan_SR.runs.degrade`). They only parse arguments and call the package."""
