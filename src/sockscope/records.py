"""The base of every record: `typing.NamedTuple` to type checkers, a lighter twin at run time.

`typing.NamedTuple` has a start-up cost of its own: importing `typing` (3-4 ms) and, because
annotations are postponed, compiling each field's annotation text into a ForwardRef (the model
alone has over a hundred fields). `sockscope -tlnp` on a small host runs in about 25 ms, so
that was a fifth of it (bench/startup.py). At run time a record is made by
`collections.namedtuple` from the same fields, defaults, docstring and methods; type checkers see
`typing.NamedTuple`, so both read the same class body.
"""

from __future__ import annotations

__all__ = ["NamedTuple"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from collections import namedtuple

    # What a class body holds besides fields and methods; these are not copied to the record.
    _MADE_BY_PYTHON = frozenset(
        {"__module__", "__qualname__", "__annotations__", "__doc__", "__classcell__", "__firstlineno__", "__static_attributes__", "__orig_bases__"}
    )

    class _RecordMaker(type):
        def __new__(cls, name, bases, namespace):
            fields = tuple(namespace.get("__annotations__", {}))
            defaults = [namespace[field] for field in fields if field in namespace]
            if defaults and any(field not in namespace for field in fields[len(fields) - len(defaults) :]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            record = namedtuple(name, fields, defaults=defaults, module=namespace.get("__module__"))
            record.__qualname__ = namespace.get("__qualname__", name)
            record.__annotations__ = namespace.get("__annotations__", {})
            if namespace.get("__doc__"):
                record.__doc__ = namespace["__doc__"]
            for key, value in namespace.items():
                if key not in _MADE_BY_PYTHON and key not in fields:
                    setattr(record, key, value)
            if "__classcell__" in namespace:  # a method uses super() or __class__
                namespace["__classcell__"].cell_contents = record
            return record

    NamedTuple = type.__new__(_RecordMaker, "NamedTuple", (), {})
