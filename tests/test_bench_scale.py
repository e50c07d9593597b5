"""`bench scale` without running the graph: sizes, run config, growth exponents and key names."""

import math
from types import SimpleNamespace

import pytest

from rec_core.bench import BENCHMARKS
from rec_core.bench import __main__ as bench_cli
from rec_core.bench.scale import (
    L_MAX_EPOCHS,
    MIN_GROWTH_SECONDS,
    SIZES,
    growth_exponent,
    growth_results,
    markdown_table,
    parse_sizes,
    run,
    run_config,
    size_results,
)


def _measured(total_s: float, steps: dict[str, float]) -> dict:
    return {
        "total_s": total_s,
        "peak_pss_mb": 900.0,
        "peak_rss_sum_mb": 1500.0,
        "processes": 6,
        "steps": {key: {"s": seconds, "peak_rss_mb": 400.0} for key, seconds in steps.items()},
    }


def test_sizes_parse_in_increasing_order_whatever_the_order_given():
    assert [s.name for s in parse_sizes("l,s")] == ["s", "l"]
    assert [s.name for s in parse_sizes(" m , s ")] == ["s", "m"]
    assert (SIZES["m"].users, SIZES["m"].items, SIZES["m"].interactions) == (20_000, 50_000, 1_000_000)


@pytest.mark.parametrize("text, problem", [("s,xl", "unknown size(s) xl"), ("", "(none given)"), ("s,s", "repeated")])
def test_bad_sizes_are_refused_naming_the_problem(text, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_sizes(text)


def test_bad_sizes_stop_the_command_line_before_any_run(capsys):
    with pytest.raises(SystemExit):
        run(["--sizes", "s,huge"])
    assert "huge" in capsys.readouterr().err


def test_run_config_sets_the_synthetic_sizes_and_caps_epochs_only_at_l():
    small = run_config(SIZES["s"])
    assert small == {
        "ops": {"source_tables": {"config": {"n_users": 2_000, "n_items": 5_000, "n_interactions": 100_000}}}
    }
    large = run_config(SIZES["l"])["ops"]
    assert large["source_tables"]["config"]["n_interactions"] == 10_000_000
    assert large["two_tower_model"]["config"]["max_epochs"] == L_MAX_EPOCHS


def test_growth_exponent_is_log_time_ratio_over_log_work_ratio():
    assert growth_exponent(1.0, 10.0, 1_000, 10_000) == pytest.approx(1.0)
    assert growth_exponent(1.0, 100.0, 1_000, 10_000) == pytest.approx(2.0)
    assert growth_exponent(2.0, 2.0, 50_000, 200_000) == pytest.approx(0.0)
    assert growth_exponent(1.0, 8.0, 50_000, 200_000) == pytest.approx(math.log(8) / math.log(4))
    assert growth_exponent(0.0, 1.0, 1, 10) is None
    assert growth_exponent(1.0, 2.0, 10, 10) is None


def test_size_results_name_every_key_by_size_and_asset():
    results = size_results(SIZES["s"], _measured(120.0, {"items": 3.0, "check_users_schema": 0.5}))
    assert results == {
        "scale_s_total_s": 120.0,
        "scale_s_peak_rss_mb": 900.0,
        "scale_s_peak_rss_sum_mb": 1500.0,
        "scale_s_asset_items_s": 3.0,
        "scale_s_asset_items_peak_rss_mb": 400.0,
        "scale_s_asset_check_users_schema_s": 0.5,
        "scale_s_asset_check_users_schema_peak_rss_mb": 400.0,
    }


def test_growth_uses_each_steps_work_and_names_later_pairs():
    measured = {
        "s": _measured(100.0, {"interactions": 4.0, "item_index": 1.0, "user_recommendations": 5.0, "tiny": 0.1}),
        "m": _measured(900.0, {"interactions": 40.0, "item_index": 10.0, "user_recommendations": 500.0, "tiny": 1.0}),
        "l": _measured(9000.0, {"interactions": 400.0, "item_index": 40.0, "user_recommendations": 5000.0}),
    }
    results = growth_results(measured)
    # s -> m: every count grows 10x.
    assert results["scale_growth_interactions"] == pytest.approx(1.0)
    assert results["scale_growth_user_recommendations"] == pytest.approx(2.0)
    # m -> l: items grow 4x, users and interactions 10x; a step missing at one size has no exponent.
    assert results["scale_growth_m_l_item_index"] == pytest.approx(1.0)  # 4x time for 4x items
    assert results["scale_growth_m_l_user_recommendations"] == pytest.approx(1.0)  # 10x users
    assert "scale_growth_m_l_tiny" not in results
    assert results["scale_max_growth"] == pytest.approx(2.0)


def test_max_growth_ignores_steps_that_stay_short():
    measured = {
        "s": _measured(10.0, {"slow": 10.0, "blip": 0.001}),
        "m": _measured(20.0, {"slow": 100.0, "blip": MIN_GROWTH_SECONDS / 2}),
    }
    results = growth_results(measured)
    assert results["scale_growth_blip"] > 2  # reported ...
    assert results["scale_max_growth"] == pytest.approx(1.0)  # ... but not counted in the maximum


def test_growth_between_the_sizes_run_when_s_is_not_among_them():
    results = growth_results({"m": _measured(1.0, {"items": 1.0}), "l": _measured(1.0, {"items": 4.0})})
    assert results == {
        "scale_growth_items": pytest.approx(math.log(4) / math.log(10)),
        "scale_max_growth": pytest.approx(math.log(4) / math.log(10)),
    }
    assert growth_results({"s": _measured(1.0, {"items": 1.0})}) == {}


def test_scale_is_listed_but_left_out_of_all(monkeypatch):
    assert "scale" in BENCHMARKS
    ran = []
    fake_benchmark = SimpleNamespace(run=lambda argv: {})
    monkeypatch.setattr(
        bench_cli, "importlib", SimpleNamespace(import_module=lambda name: ran.append(name) or fake_benchmark)
    )
    bench_cli.main(["all"])
    assert "rec_core.bench.scale" not in ran and "rec_core.bench.pipeline" in ran
    bench_cli.main(["scale"])
    assert ran[-1] == "rec_core.bench.scale"


def test_markdown_table_lists_steps_slowest_first_with_growth_and_the_whole_run():
    measured = {
        "s": _measured(100.0, {"items": 1.0, "two_tower_model": 30.0}),
        "m": _measured(900.0, {"items": 10.0, "two_tower_model": 300.0}),
    }
    lines = markdown_table(measured, growth_results(measured)).splitlines()
    assert lines[0] == "| step | s seconds | m seconds | s peak RSS MB | m peak RSS MB | growth |"
    assert lines[2] == "| `two_tower_model` | 30.0 | 300.0 | 400 | 400 | 1.00 |"
    assert lines[3].startswith("| `items` | 1.0 | 10.0 |")
    assert lines[-1] == "| **whole run** | 100.0 | 900.0 | 900 | 900 |  |"
