"""`python -m tidal.compat SCRIPT.py [ARGS...]`: run a script written for fal with
`import fal` resolving to tidal's stand-in (where the real fal is not installed),
as `python SCRIPT.py` runs it with fal installed. A plain `@fal.function` it calls
runs on the platform that `TIDAL_URL` (or the CLI's profile) names."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from tidal.compat import install_fal_shim


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tidal.compat SCRIPT.py [ARGS...]")
    install_fal_shim()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
