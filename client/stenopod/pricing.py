"""What a backlog cost on RunPod serverless: billed execution time x the GPU's price per second.

The table holds RunPod's published flex-worker prices (USD per second, 2025) by serverless GPU
pool id, with the usual card names as aliases. Prices change: --price-per-s, --gpu, or a JSON file
({"POOL_OR_NAME": price_per_s, ...}, via --price-table or STENOPOD_PRICE_TABLE) override them.
"""

from __future__ import annotations

import json
from pathlib import Path

from stenopod.settings import client_settings

DEFAULT_GPU = "ADA_24"

PRICES_PER_S: dict[str, float] = {
    "AMPERE_16": 0.00016,  # A4000, A4500, RTX 4000
    "AMPERE_24": 0.00019,  # A5000, L4, RTX 3090
    "ADA_24": 0.00031,  # RTX 4090 PRO
    "AMPERE_48": 0.00034,  # A6000, A40
    "ADA_48_PRO": 0.00053,  # L40, L40S, RTX 6000 Ada
    "AMPERE_80": 0.00076,  # A100 80 GB
    "ADA_80_PRO": 0.00116,  # H100 PRO
    "HOPPER_141": 0.00155,  # H200
    "BLACKWELL_180": 0.00240,  # B200
}

ALIASES: dict[str, str] = {
    "A4000": "AMPERE_16",
    "A4500": "AMPERE_16",
    "RTX4000": "AMPERE_16",
    "A5000": "AMPERE_24",
    "L4": "AMPERE_24",
    "RTX3090": "AMPERE_24",
    "3090": "AMPERE_24",
    "RTX4090": "ADA_24",
    "4090": "ADA_24",
    "A6000": "AMPERE_48",
    "A40": "AMPERE_48",
    "L40": "ADA_48_PRO",
    "L40S": "ADA_48_PRO",
    "RTX6000ADA": "ADA_48_PRO",
    "A100": "AMPERE_80",
    "H100": "ADA_80_PRO",
    "H200": "HOPPER_141",
    "B200": "BLACKWELL_180",
}


class PricingError(ValueError):
    """An unknown GPU or an unreadable price table."""


def _normalise(name: str) -> str:
    return name.strip().upper().replace(" ", "").replace("-", "")


def load_price_table(path: Path | str | None = None) -> dict[str, float]:
    """The built-in table, overlaid with a JSON file's entries (path, else STENOPOD_PRICE_TABLE)."""
    table = dict(PRICES_PER_S)
    source = path or client_settings().price_table
    if not source:
        return table
    try:
        extra = json.loads(Path(source).read_text())
    except (OSError, ValueError) as error:
        raise PricingError(f"price table {source}: cannot read it as JSON ({error})") from None
    if not isinstance(extra, dict):
        raise PricingError(f"price table {source}: must be a JSON object of GPU -> USD per second")
    for name, price in extra.items():
        if not isinstance(price, (int, float)) or isinstance(price, bool) or price < 0:
            raise PricingError(f"price table {source}: price of {name!r} must be a non-negative number")
        table[_normalise(str(name))] = float(price)
    return table


def price_per_second(
    gpu: str | None = None, *, price_per_s: float | None = None, table_path: Path | str | None = None
) -> tuple[str, float]:
    """(what was priced, USD per second). An explicit price_per_s wins over the table."""
    if price_per_s is not None:
        if price_per_s < 0:
            raise PricingError("price per second must not be negative")
        return (gpu or "custom", float(price_per_s))
    table = load_price_table(table_path)
    name = _normalise(gpu or DEFAULT_GPU)
    if name in table:
        return (name, table[name])
    alias = ALIASES.get(name)
    if alias is not None and alias in table:
        return (alias, table[alias])
    known = ", ".join(sorted(set(table) | set(ALIASES)))
    raise PricingError(f"unknown GPU {gpu!r}: give --price-per-s, or one of {known}")


def job_cost(execution_ms: int, usd_per_s: float) -> float:
    """RunPod bills a job's executionTime; the price is per second."""
    return execution_ms / 1000.0 * usd_per_s
