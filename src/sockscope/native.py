"""The optional C accelerator for the hot loops of `ls` (`_native.c`), or None.

Every function in it has a pure-Python twin that gives the same answer; the twins run when the
extension was not built (no compiler at install time) or when SOCKSCOPE_PURE=1 is set.
"""

from __future__ import annotations

import os
from types import ModuleType


def load() -> ModuleType | None:
    """Give the `_native` module, or None when it is missing or turned off."""
    if os.environ.get("SOCKSCOPE_PURE"):
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native


accel = load()
