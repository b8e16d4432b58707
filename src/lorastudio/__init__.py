"""lorastudio: data sets, LoRA training and generation for Stable Diffusion, offline first.

Importing the package is cheap on purpose: torch, diffusers and friends are imported
inside the functions that need them, so `lorastudio --help` answers at once.
"""

import os as _os

__version__ = "0.1.0"

__all__ = ["__version__"]

# onnxruntime (the WD14 tagger, and diffusers' pipeline modules import it too) writes a device
# id and a telemetry database into ~/.cache/Microsoft/DeveloperTools at import, outside the
# workspace. With its telemetry off it writes nothing. A value the user set wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
