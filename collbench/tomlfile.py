"""Reading the project's TOML files (experiments, site profiles, networks) with one kind of
error message: what the file is, its path, and what is wrong with it."""

from __future__ import annotations

import sys
from pathlib import Path

from collbench.errors import CollbenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: str | Path, what: str, error: type[Exception] = CollbenchError) -> dict:
    """The table in *path*, described as *what* (e.g. "experiment file") in messages; raises
    *error* if the file cannot be read or is not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid TOML: {e}") from None
