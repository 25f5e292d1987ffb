"""Running a snippet in a fresh interpreter (for process-wide state: environment
variables read at import, the allocator, Numba's threading layer, CUDA's simulator)."""
import os
import subprocess
import sys


def run_python(code, env=None, drop=(), timeout=600, args=()):
    """``code``'s standard output; fails the test, showing its stderr, unless it exits 0.

    ``env`` adds variables to this process's environment, ``drop`` removes some;
    ``args`` are the snippet's ``sys.argv[1:]``.
    """
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(env or {})
    done = subprocess.run([sys.executable, "-c", code, *args], env=environ, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
