"""``--device`` values: checked once, with a one-line error, before any work starts."""

from __future__ import annotations

import re

import torch

from tinyinterp.errors import ConfigError


def check_device(device: str | torch.device, flag: str = "--device") -> str:
    """``device`` as a string if this machine has it: ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``)."""
    name = str(device)
    if name == "cpu":
        return name
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"{flag} {name}: this machine has no CUDA GPU that torch can use; use {flag} cpu")
        if m.group(1) is not None and int(m.group(1)) >= n:
            raise ConfigError(f"{flag} {name}: this machine has {n} GPU(s) (cuda:0 to cuda:{n - 1})")
        return name
    if name == "mps" and torch.backends.mps.is_available():
        return name
    raise ConfigError(f"{flag} {name}: not a device tinyinterp can run on; use cpu, cuda or cuda:N")
