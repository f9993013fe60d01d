"""PS-SR: Pseudo-Single-Step Video Super-Resolution via Speculative Diffusion.

The method and every default: docs/method.md. Layers (imports run one way): cli, tools ->
runs | testing -> training -> sampling | fusion | metrics -> models | data -> core. The scripts
(``inference_step_1.py``, ``inference_step_2.py``, ``eval_metrics.py``, ``train_base.py``,
``train_draft.py``) are the parsers of :mod:`Wan_SR.cli`; :mod:`Wan_SR.testing` holds test
fixtures (random weights in the official layouts) that the rest of the package never imports.
"""
import warnings

# Known-harmless warnings of our dependencies, silenced once here:
# - torch warns about diffsynth's deprecated `pynvml` dependency on every import;
# - a dependency's `torch.jit.script` use triggers torch's deprecation notice;
# - timm/pyiqa import-path deprecations.
warnings.filterwarnings("ignore", message=".*pynvml package is deprecated.*")
warnings.filterwarnings("ignore", message=r".*`torch\.jit\.script` is deprecated.*")
warnings.filterwarnings("ignore", message=r".*Importing from timm\.models\.layers is deprecated.*")
