"""PS-SR: Pseudo-Single-Step Video Super-Resolution via Speculative Diffusion."""
import warnings

# diffsynth depends on the deprecated `pynvml` package; torch warns about it on every import.
warnings.filterwarnings("ignore", message=".*pynvml package is deprecated.*")
