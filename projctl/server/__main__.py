"""``python -m projctl.server ARGS``: a background server, as ``runtime.ServerLaunch`` starts it."""

from __future__ import annotations

import sys

from projctl.server.app import main

if __name__ == "__main__":
    sys.exit(main())
