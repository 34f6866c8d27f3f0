"""Process resources: the open-file limit that servers and scanners raise for themselves."""

from __future__ import annotations

import contextlib
import resource


def raise_file_limit(wanted: int) -> int:
    """Raise the soft open-file limit towards `wanted` (as far as the hard limit allows); give the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft
