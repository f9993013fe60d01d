"""Default prompts (SPEC §5). Import-light: used by --help."""

DEFAULT_PROMPT = ("4K Ultra-clear, Sharp, Fine Details Restored, Temporal Consistency, "
                  "Natural Colors")
DEFAULT_NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
    "signature, jpeg artifacts, deformed, lowres, over-smooth")
