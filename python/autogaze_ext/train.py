"""``python -m autogaze_ext.train CONFIG.toml [key=value ...]`` (same as ``autogaze-train``)."""

from __future__ import annotations

import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
