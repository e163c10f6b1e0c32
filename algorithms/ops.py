"""Reduction operators and element types, named once for every executor."""

from __future__ import annotations

from enum import Enum

DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "uint32",
          "int64", "uint64")
"""Element types every executor supports, by their numpy names (bfloat16 is ml_dtypes')."""

DTYPE_ALIASES = {"half": "float16", "float": "float32", "double": "float64", "int": "int32"}
"""nccl-tests' type names that differ from the numpy names above (same types)."""


def canonical_dtype(name: str) -> str:
    """The numpy name of the type called *name* (a numpy or nccl-tests name); raises
    ValueError naming the known ones."""
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        known = ", ".join((*DTYPES, *DTYPE_ALIASES))
        raise ValueError(f"unknown data type {name!r}; choose from {known}")
    return name


def numpy_dtype(name: str):
    """The numpy dtype of *name*; bfloat16 comes from ml_dtypes, numpy has none of its own."""
    import numpy as np

    name = canonical_dtype(name)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class ReduceOp(Enum):
    """A reduction operator; ``ufunc`` is the name of the elementwise function in numpy and
    CuPy alike, so one executor serves both array modules. AVG reduces with ``add`` and
    divides the sum by the number of ranks at the end (:meth:`finish`)."""

    SUM = "sum"
    PROD = "prod"
    MIN = "min"
    MAX = "max"
    AVG = "avg"

    @property
    def ufunc(self) -> str:
        return {"sum": "add", "prod": "multiply", "min": "minimum", "max": "maximum",
                "avg": "add"}[self.value]

    def finish(self, buf, nranks: int, xp) -> None:
        """Turn the reduced *buf* into the operator's result in place: AVG divides the sum by
        *nranks* (integers round toward minus infinity); the others leave it as it is."""
        if self is not ReduceOp.AVG:
            return
        if buf.dtype.kind in "iu":
            xp.floor_divide(buf, nranks, out=buf)
        else:
            xp.divide(buf, nranks, out=buf)

    @classmethod
    def parse(cls, name: str) -> ReduceOp:
        """The op called *name*; raises ValueError naming the known ones."""
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(op.value for op in cls)
            raise ValueError(f"unknown op {name!r}; known: {known}") from None
