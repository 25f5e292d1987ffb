"""The ``kryptonref`` command (and ``python -m kryptonref``).

Settings that OpenBLAS reads only when NumPy loads are applied first, in this
process of kryptonref's own (:func:`kryptonref.runtime.prepare_command_process`);
then :func:`kryptonref.cli.main` runs.
"""
import sys


def console():
    """Entry point of the ``kryptonref`` command."""
    from .runtime import prepare_command_process
    prepare_command_process()
    from .cli import main
    return main()


if __name__ == "__main__":
    sys.exit(console())
