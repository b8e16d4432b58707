"""lorastudio: data sets, LoRA training and generation for Stable Diffusion, offline first.

Importing the package is cheap on purpose: torch, diffusers and friends are imported
inside the functions that need them, so `lorastudio --help` answers at once.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
