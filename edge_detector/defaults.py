"""Where the shipped default bundle lives, and how a command finds its bundle."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import BundleError

#: The bundle shipped inside the package (trained by the project, see README).
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "models" / "default"
ENV_BUNDLE = "EDGE_DETECTOR_BUNDLE"


def resolve_bundle_path(explicit: Optional[str]) -> Path:
    """--bundle, else $EDGE_DETECTOR_BUNDLE, else the shipped default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_BUNDLE)
    if env:
        return Path(env)
    if (DEFAULT_BUNDLE_DIR / "manifest.json").is_file():
        return DEFAULT_BUNDLE_DIR
    raise BundleError(
        f"no bundle given and no default bundle installed at {DEFAULT_BUNDLE_DIR}; pass --bundle PATH "
        f"or set {ENV_BUNDLE}"
    )
