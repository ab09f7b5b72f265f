"""Run a benchmark's measured side in a fresh Python process, so that its peak memory (VmHWM) is its own."""

from __future__ import annotations

import os
import subprocess
import sys


def run_fresh(code: str, *args: str) -> list[str]:
    """The whitespace-separated fields `code` prints, run with `args` in a new interpreter that sees this one's
    import path; raises RuntimeError with its stderr when it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return done.stdout.split()
