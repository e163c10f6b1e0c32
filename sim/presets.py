"""Network presets: TOML files in ``sim/networks/``, or any TOML file a user writes.

A file is one table whose keys are the fields of :class:`~collbench.sim.network.NetworkSpec`.
Bandwidths and times are written with units (``bandwidth = "100Gbps"``, ``latency = "1us"``;
a bare number is refused, since bits or bytes, seconds or microseconds cannot be told), the
cache size may be (``cache_size = "32MiB"``), and ``reduce_bandwidth = "10GB/s"`` may stand
for ``gamma`` (its inverse). A file must give ``bandwidth`` and ``latency``; a value of the
wrong kind (a list, a table, a boolean) is refused naming its key. Every figure of a preset
carries a comment naming its source or saying that it is an assumption to be calibrated.
"""

from __future__ import annotations

from pathlib import Path

from collbench.sim.network import NetworkSpec, SpecError
from collbench.sim.units import parse_bandwidth, parse_size, parse_time

from collbench.tomlfile import read_toml

PRESET_DIR = Path(__file__).parent / "networks"
_BANDWIDTHS = ("bandwidth", "intra_bandwidth", "memory_bandwidth", "reduce_bandwidth", "pcie_bandwidth")
_TIMES = ("latency", "intra_latency", "switch_latency", "overhead")
_TEXTS = ("name", "topology", "host_model")
_WHOLE = ("nics_per_node", "ranks_per_node", "hosts_per_leaf", "cores")
_NUMBERS = ("oversubscription", "gamma", "beta_miss", "gamma_miss")
REQUIRED = ("bandwidth", "latency")
"""What a network file must say: without them it would describe a default network, not the
user's."""


def preset_names() -> list[str]:
    """Names of the presets shipped in ``sim/networks/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_network(name_or_path: str) -> NetworkSpec:
    """The preset called *name_or_path*, or the TOML file at that path.

    Raises SpecError naming the file if it is missing, not TOML, lacks bandwidth or latency,
    or holds a bad figure."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise SpecError(f"unknown network {name_or_path!r}; presets: {', '.join(preset_names())}, "
                            "or give a .toml file")
    data = read_toml(path, "network file", SpecError)
    try:
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise SpecError(f"{missing[0]} is missing: a network file states its {' and '.join(REQUIRED)} "
                            '(e.g. bandwidth = "100Gbps", latency = "1us")')
        data.setdefault("name", path.stem)
        return spec_from_table(data)
    except (SpecError, ValueError) as e:
        raise SpecError(f"network file {path}: {e}") from None


def spec_from_table(data: dict) -> NetworkSpec:
    """A :class:`NetworkSpec` from a table (a TOML file's) whose bandwidths and times carry
    units. Raises SpecError naming the first key whose value is of the wrong kind."""
    data = dict(data)
    for key, value in data.items():
        _check_kind(key, value)
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
        rate = data.pop("reduce_bandwidth")
        if not rate > 0:
            raise SpecError(f"reduce_bandwidth must be positive, got {rate}")
        data["gamma"] = 1.0 / rate
    return NetworkSpec.from_dict(data)


def _check_kind(key: str, value: object) -> None:
    """Raise SpecError if *value* is not the kind of value *key* takes (a bandwidth or a time
    with its unit, a whole number, a number, a word, a list of whole numbers)."""
    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if key in _BANDWIDTHS or key in _TIMES:
        example = '"100Gbps" or "12.5GB/s"' if key in _BANDWIDTHS else '"1us" or "500ns"'
        if number(value):
            raise SpecError(f"{key} = {value!r} has no unit; write it as a string with one, e.g. {example}")
        if not isinstance(value, str):
            raise SpecError(f"{key} must be a string with a unit, e.g. {example}, not {_kind(value)}")
    elif key in _WHOLE and not whole(value):
        raise SpecError(f"{key} must be a whole number, not {_kind(value)}")
    elif key in _NUMBERS and not number(value):
        raise SpecError(f"{key} must be a number, not {_kind(value)}")
    elif key in _TEXTS and not isinstance(value, str):
        raise SpecError(f"{key} must be a string, not {_kind(value)}")
    elif key == "cache_size" and not (number(value) or isinstance(value, str)):
        raise SpecError(f'cache_size must be a size such as "32MiB" or a number of bytes, not {_kind(value)}')
    elif key == "torus_dims" and not (isinstance(value, list) and all(whole(v) for v in value)):
        raise SpecError(f"torus_dims must be a list of whole numbers, e.g. [4, 4], not {_kind(value)}")
    elif key == "placement" and not (isinstance(value, str) or (
            isinstance(value, list) and all(whole(v) for v in value))):
        raise SpecError(f"placement must be block, cyclic or a list of node numbers, not {_kind(value)}")


def _kind(value: object) -> str:
    """*value* as a TOML user would name it, for messages."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"the list {value!r}" if len(repr(value)) < 40 else "a list"
    return repr(value)
