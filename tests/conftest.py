from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The CLI's rich consoles (airlock.cli.output) fix their width when first imported, so a test's own
# COLUMNS comes too late if another test imported the CLI first, as happens in any order under xdist.
# Wide from the start, long tmp paths (longer still in xdist's per-worker dirs) are never wrapped.
os.environ.setdefault("COLUMNS", "200")
