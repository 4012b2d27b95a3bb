from __future__ import annotations

import json

import pytest
from stenopod.pricing import PRICES_PER_S, PricingError, job_cost, price_per_second


def test_aliases_and_pool_ids_name_the_same_price():
    assert price_per_second("H100") == ("ADA_80_PRO", PRICES_PER_S["ADA_80_PRO"])
    assert price_per_second("ada_80_pro") == ("ADA_80_PRO", PRICES_PER_S["ADA_80_PRO"])


def test_explicit_price_wins_and_cost_is_execution_seconds_times_price():
    assert price_per_second("H100", price_per_s=0.001) == ("H100", 0.001)
    assert job_cost(90_000, 0.001) == pytest.approx(0.09)


def test_json_file_overrides_the_table(tmp_path):
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"H100": 0.002, "MY_GPU": 0.0005}))
    assert price_per_second("H100", table_path=table) == ("H100", 0.002)
    assert price_per_second("my_gpu", table_path=table) == ("MY_GPU", 0.0005)


def test_unknown_gpu_and_bad_table_are_clear_errors(tmp_path):
    with pytest.raises(PricingError, match="unknown GPU 'TPU'"):
        price_per_second("TPU")
    bad = tmp_path / "bad.json"
    bad.write_text('{"H100": "cheap"}')
    with pytest.raises(PricingError, match="must be a non-negative number"):
        price_per_second("H100", table_path=bad)
