"""``benchmarks/inference/e2e.py`` under the name its issue gives, with the runs that issue asks
for: ``--outputs final``, ``--final``, step 1's default outputs (the four branches), latent
windows, latent windows with ``--fp8``, on the five clips of ``videos_for_test/input``; frames/s
per clip, the steady state, the decode count, the PSNR of fp8 against bf16. The profile and the
smooth-clip error are two more commands; all three merge their summary into one file:

    python benchmarks/bench_e2e.py --light --summary_into benchmarks/results/speed_h200.json
    python benchmarks/bench_e2e.py --light --variants pixel_profile,pixel_final_profile \\
        --summary_into benchmarks/results/speed_h200.json
    python benchmarks/bench_e2e.py --light --smooth 33 --variants latent,latent_fp8,latent_fp32 \\
        --psnr latent:latent_fp8,latent_fp32:latent --summary_into benchmarks/results/speed_h200.json

(the options given after the preset's replace its own)."""
from named import run_as

if __name__ == "__main__":
    run_as("inference/e2e.py", "--variants", "pixel,pixel_final,pixel_branches,latent,latent_fp8",
           "--psnr", "latent:latent_fp8")
