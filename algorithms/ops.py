"""Reduction operators and element types, named once for every executor."""

from __future__ import annotations

from enum import Enum

DTYPES = ("float16", "float32", "float64", "int32", "int64")
"""Element types every executor supports (numpy names; bfloat16 has no numpy type)."""


class ReduceOp(Enum):
    """A reduction operator; ``ufunc`` is the name of the elementwise function in numpy and
    CuPy alike, so one executor serves both array modules."""

    SUM = "sum"
    PROD = "prod"
    MIN = "min"
    MAX = "max"

    @property
    def ufunc(self) -> str:
        return {"sum": "add", "prod": "multiply", "min": "minimum", "max": "maximum"}[self.value]

    @classmethod
    def parse(cls, name: str) -> ReduceOp:
        """The op called *name*; raises ValueError naming the known ones."""
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(op.value for op in cls)
            raise ValueError(f"unknown op {name!r}; known: {known}") from None
