"""The package ships type information (py.typed) and mypy finds no error in it."""
import os
import subprocess
import sys

from .conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_package_is_marked_typed():
    assert os.path.isfile(os.path.join(ROOT, "kryptonref", "py.typed"))


def test_mypy_passes_over_the_package():
    require("mypy", "test")
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                          "--config-file", os.path.join(ROOT, "pyproject.toml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_public_name_is_re_exported_for_type_checkers():
    """``kryptonref/__init__.py`` loads its names on first use (PEP 562); type checkers see
    them only through its ``if TYPE_CHECKING:`` imports, which must be explicit re-exports
    (``import X as X``: the package is checked with ``implicit_reexport = false``), else
    ``from kryptonref import X`` fails in users' strictly checked code."""
    import ast

    import kryptonref

    with open(os.path.join(ROOT, "kryptonref", "__init__.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    re_exported = {alias.name for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.level
                   for alias in node.names if alias.asname == alias.name}
    missing = (set(kryptonref._EXPORTS) | set(kryptonref._MODULES)) - re_exported
    assert not missing, f"not re-exported for type checkers: {sorted(missing)}"
