"""Config values that both the config's own keys and the kinds' keys use.

Owns :func:`parse_size` (500M, 2G, 1.5T, or a number of bytes) and :func:`user_agent_value`
(text that goes on the wire as is), each with its one-line error. It must never read
anything but the value it is given.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _shown(limit: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if limit >= _SIZE_UNITS[unit] and limit % _SIZE_UNITS[unit] == 0:
            return f"{limit // _SIZE_UNITS[unit]}{unit}"
    return str(limit)


def parse_size(value: Any, where: str, maximum: int, minimum: int = 1) -> int:
    """Bytes from an integer or a string with a binary unit, between the bounds.

    Raises:
        ConfigError: ``"{where}: must be a positive size such as ..."``.
    """
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum:
        return value
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        number = text[: len(text) - len(unit)].strip()
        try:
            scaled = float(number) * _SIZE_UNITS[unit]
        except ValueError:
            scaled = 0.0
        # NaN and infinity fail this test too, before int() could raise on them.
        if max(1, minimum) <= scaled <= maximum:
            return int(scaled)
    floor = "" if minimum <= 1 else f"at least {_shown(minimum)}, "
    raise ConfigError(f"{where}: must be a positive size such as 2G or 500M ({floor}at most "
                      f"{_shown(maximum)}), not {value!r}")  # fmt: skip


def user_agent_value(value: Any, where: str) -> str:
    """A User-Agent from the config: printable ASCII (it goes on the wire as is), bounded."""
    if (not isinstance(value, str) or not value.strip() or len(value) > 256
            or not value.isascii() or not value.isprintable()):  # fmt: skip
        raise ConfigError(f"{where}user_agent: must be printable ASCII text of 1 to 256 "
                          f"characters, not {value!r}"[:300])  # fmt: skip
    return value.strip()
