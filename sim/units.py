"""Figures as people write them: ``400Gbps``, ``12.5GB/s``, ``1us``, ``2,4,...,1024``,
``1KiB..1GiB``. Each parser raises ValueError with a sentence saying what it expected."""

from __future__ import annotations

import re

from collbench.sizes import parse_size

ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int32": 4,
            "uint32": 4, "int64": 8, "uint64": 8}
"""Bytes per element of each data type a prediction or a calibration can be in."""

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_BANDWIDTH = re.compile(rf"^\s*{_NUMBER}\s*([kKMGT]?)(bps|b/s|Bps|B/s)\s*$")
_TIME = re.compile(rf"^\s*{_NUMBER}\s*(s|ms|us|µs|ns|ps)?\s*$")
_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SECONDS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}


def parse_bandwidth(text: str | float) -> float:
    """Bytes per second in *text*: ``400Gbps`` and ``56Gb/s`` are bits, ``12.5GB/s`` and
    ``12.5GBps`` bytes (decimal prefixes, as link speeds are quoted); a bare number is bytes
    per second."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _BANDWIDTH.match(text)
    if not match:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a bandwidth; write e.g. 400Gbps or 12.5GB/s") from None
    value, prefix, unit = float(match.group(1)), match.group(2), match.group(3)
    return value * _PREFIX[prefix] / (8.0 if unit in ("bps", "b/s") else 1.0)


def parse_time(text: str | float) -> float:
    """Seconds in *text* (``1us``, ``500ns``, ``0.2ms``, ``1e-6``)."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a time; write e.g. 1us, 500ns or 2e-6")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_ranks(text: str) -> list[int]:
    """Rank counts: ``2,3,8``; ``2,4,...,1024`` continues the progression of the two values
    before the ellipsis (geometric when their ratio is whole, else arithmetic); ``2..64`` is
    every count from 2 to 64."""
    values = _progression(text, _int, lambda lo, hi: list(range(lo, hi + 1)))
    if any(v < 1 for v in values):
        raise ValueError(f"rank counts must be at least 1, got {text!r}")
    return values


def parse_sizes(text: str) -> list[int]:
    """Sizes in bytes: ``1K,64K``; ``1KiB..1GiB`` doubles from the first to the last;
    ``1K,4K,...,1G`` continues the progression."""
    def doubling(lo: int, hi: int) -> list[int]:
        if lo < 1:
            raise ValueError("a size range must start at 1 byte or more")
        out = []
        while lo <= hi:
            out.append(lo)
            lo *= 2
        return out

    return _progression(text, parse_size, doubling)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _progression(text: str, parse, span) -> list[int]:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("the list is empty")
    if len(parts) == 1 and ".." in parts[0]:
        lo, hi = (parse(x) for x in parts[0].split("..", 1))
        if lo > hi:
            raise ValueError(f"the range {text!r} runs backwards")
        return span(lo, hi)
    if "..." not in parts:
        return [parse(p) for p in parts]
    i = parts.index("...")
    if i < 2 or i != len(parts) - 2:
        raise ValueError(f"write an ellipsis as a,b,...,z, got {text!r}")
    head = [parse(p) for p in parts[:i]]
    last = parse(parts[-1])
    a, b = head[-2], head[-1]
    if b <= a:
        raise ValueError(f"the progression in {text!r} does not increase")
    out = list(head)
    while True:
        nxt = out[-1] * (b // a) if a and b % a == 0 else out[-1] + (b - a)
        if nxt > last:
            break
        out.append(nxt)
    if out[-1] != last:
        out.append(last)
    return out
