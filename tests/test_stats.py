"""Paired statistics: t quantiles, intervals, win/loss counts, the significance mark."""

import math

import pytest

from uimer.experiments.stats import format_delta, paired_delta, t_quantile


def test_t_quantiles_match_the_printed_tables_and_the_normal_limit():
    assert t_quantile(3) == pytest.approx(3.182, abs=5e-4)
    assert t_quantile(1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(19, 0.975) == pytest.approx(2.433, abs=5e-4)  # t_{0.9875, 19}: a second look's level
    assert 2.021 > t_quantile(50) > 2.000
    assert t_quantile(10**6) == pytest.approx(1.96, abs=1e-3)
    for df, level in ((0, 0.95), (3, 1.0), (3, 0.0)):
        with pytest.raises(ValueError):
            t_quantile(df, level)


def test_a_stricter_level_widens_the_interval_and_names_itself():
    method, base = {s: 70.0 + 0.3 * s for s in range(1, 21)}, {s: 70.0 + 0.2 * (s % 7) for s in range(1, 21)}
    plain, strict = paired_delta(method, base), paired_delta(method, base, 0.975)
    assert strict.mean == plain.mean and strict.low < plain.low and strict.high > plain.high
    assert (strict.high - strict.mean) / (plain.high - plain.mean) == pytest.approx(t_quantile(19, 0.975)
                                                                                   / t_quantile(19))
    assert "[97.5 %: " in format_delta(strict) and "%" not in format_delta(plain)


def test_paired_delta_pairs_by_seed_and_builds_the_t_interval():
    base = {55: 60.0, 1988: 70.0, 12333: 80.0, 42: 90.0, 7: 50.0}
    method = {55: 62.0, 1988: 71.0, 12333: 83.0, 42: 90.0}  # seed 7 is not shared
    d = paired_delta(method, base)
    assert d.seeds == [42, 55, 1988, 12333]
    assert d.deltas == [0.0, 2.0, 1.0, 3.0]
    assert d.mean == pytest.approx(1.5)
    sd = math.sqrt(((1.5) ** 2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)
    half = 3.1824463 * sd / 2  # t_{0.975, 3}
    assert d.low == pytest.approx(1.5 - half) and d.high == pytest.approx(1.5 + half)
    assert (d.wins, d.losses, d.ties) == (3, 0, 1)
    assert not d.significant  # a large mean with one tie and a spread of 3 over 4 seeds is not enough


def test_consistent_gains_are_significant_and_marked():
    d = paired_delta({1: 71.0, 2: 72.1, 3: 70.9, 4: 72.0}, {1: 70.0, 2: 70.0, 3: 70.0, 4: 70.0})
    assert d.significant and d.significant_gain
    assert format_delta(d).endswith("†") and "4–0" in format_delta(d)
    loss = paired_delta({1: 60.0, 2: 61.0, 3: 60.5}, {1: 70.0, 2: 70.0, 3: 70.0})
    assert loss.significant and not loss.significant_gain


def test_degenerate_inputs():
    assert paired_delta({1: 1.0}, {2: 1.0}) is None
    single = paired_delta({1: 3.0}, {1: 1.0})
    assert single.low is None and not single.significant
    assert format_delta(single) == "+2.00 1–0"
    assert format_delta(None) == "—"


def _summary(method: str, tests: dict[int, float]) -> dict:
    return {"task": "snips-intent", "setting": "1-shot", "method": method, "encoder": "minilm",
            "per_seed": [{"seed": s, "test": t} for s, t in tests.items()], "test_mean": 0.5, "test_std": 0.1}


def test_train_table_shows_the_paired_delta_against_the_baseline():
    from rich.console import Console

    from uimer.experiments.tables import paired_against_baseline, results_markdown, results_table

    base = _summary("baseline", {55: 0.60, 1988: 0.70, 42: 0.80})
    im = _summary("im-mask", {55: 0.62, 1988: 0.72, 42: 0.81})
    delta = paired_against_baseline(im, [base, im])
    assert delta.deltas == pytest.approx([1.0, 2.0, 2.0]) and delta.significant_gain
    assert paired_against_baseline(base, [base, im]) is None
    console = Console(width=200, record=True)
    console.print(results_table([base, im]))
    out = console.export_text()
    assert "Δ vs baseline" in out and "+1.67 [+0.23, +3.10] 3–0 †" in out
    assert "+1.67 [+0.23, +3.10] 3–0 †" in results_markdown([base, im])
