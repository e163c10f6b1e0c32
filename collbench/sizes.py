"""Byte sizes as people write them (``8``, ``64K``, ``1MiB``) and nccl-tests' size sweep."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes in *text*: an integer with an optional binary unit (K, KiB, M, MiB, G, GiB, as in
    nccl-tests ``-b 8 -e 128M``). Raises ValueError with a readable sentence otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        return text
    match = _SIZE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write bytes like 8, 64K, 1MiB or 2G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def format_size(nbytes: int) -> str:
    """``1536 -> '1.5 KiB'``; whole units print without decimals."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.3g} {unit}"
    return f"{nbytes} B"


def sweep(minbytes: int, maxbytes: int, factor: int, itemsize: int) -> list[int]:
    """Sizes from *minbytes* to *maxbytes*, multiplying by *factor* (nccl-tests ``-b -e -f``).

    A sweep starting at 0 measures 0 bytes, then continues from one element. Raises
    ValueError if the bounds are reversed, the factor is below 2, or a size is not a whole
    number of elements."""
    if minbytes > maxbytes:
        raise ValueError(f"the smallest size ({minbytes} B) is larger than the largest ({maxbytes} B)")
    if factor < 2:
        raise ValueError(f"the step factor must be at least 2, got {factor}")
    sizes, size = [], minbytes
    if size == 0:
        sizes.append(0)
        size = itemsize
    while size <= maxbytes:
        if size % itemsize:
            raise ValueError(f"size {size} B is not a multiple of the element size ({itemsize} B)")
        sizes.append(size)
        size *= factor
    return sizes
