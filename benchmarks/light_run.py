"""Run a script or module with diffsynth's model files imported without its package __init__
(see common.light_diffsynth), for GPU machines that carry only the diffsynth wheel:

    python benchmarks/light_run.py inference_step_1.py --input_dir ...
    python benchmarks/light_run.py -m Wan_SR.tools.make_tiny_checkpoints --out ...
"""
import runpy
import sys

from common import light_diffsynth

if __name__ == "__main__":
    light_diffsynth()
    if sys.argv[1] == "-m":
        sys.argv = [sys.argv[2]] + sys.argv[3:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
