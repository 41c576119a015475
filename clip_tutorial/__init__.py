"""clip_tutorial: CLIP built piece by piece, the package behind the CLIP tutorial book."""
__version__ = "0.1.0"

from .device import get_device, seed_everything, setup_notebook  # noqa: E402
