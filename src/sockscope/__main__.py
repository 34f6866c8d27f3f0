"""`python -m sockscope`."""

from .cli import entry

entry()
