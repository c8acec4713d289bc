"""Parsing of the human units used in relay.toml: sizes, durations, rates, addresses."""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "M": 1000**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "G": 1000**3,
    "GB": 1000**3,
    "GIB": 1024**3,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: int | str) -> int:
    """'25MB' -> 25000000, '10MiB' -> 10485760, 1024 -> 1024 (bytes)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 25MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"invalid size {value!r} (use e.g. 25MB, 512KiB or a byte count)")
    unit = (m.group(2) or "").upper()
    if unit not in _SIZE_FACTORS:
        raise ValueError(f"invalid size unit in {value!r} (use B, KB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * _SIZE_FACTORS[unit])


def parse_duration(value: int | float | str) -> float:
    """'5m' -> 300.0, '1h30m' -> 5400.0, 30 -> 30.0 (seconds)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 4h or 5d")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("duration must be a finite, non-negative number of seconds")
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if text[pos : m.start()].strip():
            break
        total += float(m.group(1)) * _DURATION_FACTORS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 4h, 5d or 1h30m)")
    return total


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$", re.I)
_RATE_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def parse_rate(value: str) -> float:
    """'14/s' -> 14.0, '50000/d' -> 0.5787 (events per second)."""
    m = _RATE.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"invalid rate {value!r} (use e.g. 14/s, 600/m, 50000/d)")
    return float(m.group(1)) / _RATE_UNITS[m.group(2).lower()]


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """'127.0.0.1:587' or '[::1]:587' -> (host, port)."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {value!r} (use host:port or [v6]:port)")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(f"invalid address {value!r}: write IPv6 addresses as [addr]:port")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"missing port in {value!r} (use host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {value!r}")
    return host or "0.0.0.0", int(port_text)
