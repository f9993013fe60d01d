"""PS-SR: Pseudo-Single-Step Video Super-Resolution via Speculative Diffusion.

The method and every default: docs/method.md. Layers (imports run one way): cli, tools -> runs
-> training -> sampling | fusion | metrics -> models | data -> core.
"""
import warnings

# Known-harmless warnings of our dependencies, silenced once here:
# - torch warns about diffsynth's deprecated `pynvml` dependency on every import;
# - a dependency's `torch.jit.script` use triggers torch's deprecation notice;
# - timm/pyiqa import-path deprecations.
warnings.filterwarnings("ignore", message=".*pynvml package is deprecated.*")
warnings.filterwarnings("ignore", message=r".*`torch\.jit\.script` is deprecated.*")
warnings.filterwarnings("ignore", message=r".*Importing from timm\.models\.layers is deprecated.*")
