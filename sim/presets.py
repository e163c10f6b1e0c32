"""Network presets: TOML files in ``sim/networks/``, or any TOML file a user writes.

A file is one table whose keys are the fields of :class:`~collbench.sim.network.NetworkSpec`.
Bandwidths, times and the cache size may be written with units (``bandwidth = "100Gbps"``,
``latency = "1us"``, ``cache_size = "32MiB"``), and ``reduce_bandwidth = "10GB/s"`` may
stand for ``gamma`` (its inverse). Every figure of a preset carries a comment naming its
source or saying that it is an assumption to be calibrated.
"""

from __future__ import annotations

from pathlib import Path

from collbench.sim.network import NetworkSpec, SpecError
from collbench.sim.units import parse_bandwidth, parse_size, parse_time

from collbench.tomlfile import read_toml

PRESET_DIR = Path(__file__).parent / "networks"
_BANDWIDTHS = ("bandwidth", "intra_bandwidth", "memory_bandwidth")
_TIMES = ("latency", "intra_latency", "switch_latency", "overhead")


def preset_names() -> list[str]:
    """Names of the presets shipped in ``sim/networks/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_network(name_or_path: str) -> NetworkSpec:
    """The preset called *name_or_path*, or the TOML file at that path.

    Raises SpecError naming the file if it is missing, not TOML, or holds a bad figure."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise SpecError(f"unknown network {name_or_path!r}; presets: {', '.join(preset_names())}, "
                            "or give a .toml file")
    data = read_toml(path, "network file", SpecError)
    data.setdefault("name", path.stem)
    try:
        return spec_from_table(data)
    except (SpecError, ValueError) as e:
        raise SpecError(f"network file {path}: {e}") from None


def spec_from_table(data: dict) -> NetworkSpec:
    """A :class:`NetworkSpec` from a table whose figures may carry units."""
    data = dict(data)
    for key in _BANDWIDTHS:
        if key in data:
            data[key] = parse_bandwidth(data[key])
    for key in _TIMES:
        if key in data:
            data[key] = parse_time(data[key])
    if isinstance(data.get("cache_size"), str):
        data["cache_size"] = float(parse_size(data["cache_size"]))
    if "reduce_bandwidth" in data:
        if "gamma" in data:
            raise SpecError("give gamma or reduce_bandwidth, not both")
        rate = parse_bandwidth(data.pop("reduce_bandwidth"))
        if not rate > 0:
            raise SpecError(f"reduce_bandwidth must be positive, got {rate}")
        data["gamma"] = 1.0 / rate
    return NetworkSpec.from_dict(data)
