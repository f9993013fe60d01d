"""The app's own options (the command line of ``app.py`` builds its arguments from these
fields, like the scripts do from :mod:`Wan_SR.core.options`), and the step-1 settings a user
chooses per job in the page, named by their option dataclass so a new field is one entry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from Wan_SR.core.options import SamplingOptions, Step1Options, opt

DEFAULT_PORT = 7860


@dataclass
class AppOptions:
    """Where the app listens and what it may read and keep (safe by default)."""
    host: str = opt("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0 "
                                 "opens the app to the network)")
    port: int = opt(DEFAULT_PORT, "port to listen on (0: the first free one from 7860 up, or "
                                  "$GRADIO_SERVER_PORT)")
    share: bool = opt(False, "also make a public share link through Gradio's servers (off: "
                             "nothing leaves this machine)")
    input_dir: Optional[str] = opt(None, "optional folder of videos offered in the page by "
                                         "name (its files are read, never written)")
    compare_dir: list = opt([], "folder offered by name in the Compare tab (repeat for several; "
                                "each run of this session is offered too)")
    max_upload_mb: float = opt(500.0, "largest upload accepted, in MB")
    max_frames: int = opt(300, "longest clip a job accepts, in frames")
    max_runs: int = opt(8, "finished runs kept (the oldest run's files are removed beyond it)")
    work_dir: Optional[str] = opt(None, "where uploads and outputs live while the app runs "
                                        "(default: a new temporary folder); everything the app "
                                        "created there is removed on exit")

    def validate(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError("--port must be in 0..65535")
        if self.max_upload_mb <= 0 or self.max_frames <= 0 or self.max_runs <= 0:
            raise ValueError("--max_upload_mb, --max_frames and --max_runs must be positive")


# The step-1 settings offered per job, by option class (the rest are the values the app was
# started with). A new field of one of these classes is offered by naming it here (its control
# is built from the field: bool, choices, int, float or optional numbers). The GPU memory budget
# (--vram_budget) is not per job: it decides where the loaded models live, at start.
JOB_FIELDS = ((Step1Options, ("upscale", "window_space")),
              (SamplingOptions, ("seed",)))
