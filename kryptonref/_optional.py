"""Optional dependencies, imported on first use with a message naming the extra."""
from __future__ import annotations

import importlib
from types import ModuleType


def optional_module(name: str, needed_by: str, extra: str,
                    shown_as: str | None = None) -> ModuleType:
    """Import ``name``; without it, ImportError "<needed_by> needs <shown_as>: pip install
    'kryptonref[<extra>]'"."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"{needed_by} needs {shown_as or name}: "
                          f"pip install 'kryptonref[{extra}]'") from None
