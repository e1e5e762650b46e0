from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The CLI's rich consoles (airlock.cli.output) fix their width when first imported, so a test's own
# COLUMNS comes too late if another test imported the CLI first, as happens in any order under xdist.
# Wide from the start, long tmp paths (longer still in xdist's per-worker dirs) are never wrapped.
os.environ.setdefault("COLUMNS", "200")

# No test reaches the real Hub: a repo id that is not local makes plan (and pack) go online, and
# huggingface_hub reads HF_ENDPOINT once, on import. Tests that want a Hub start the fake one and pass
# its URL explicitly; anything else gets "connection refused" on a loopback port nothing listens on.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
