"""The quick figures of a run's summary stay within their fixed budget however slow a model is, counted in the
calls made and the batch used (not in wall time, which a busy machine stretches); export's and report's careful
figures keep their large batch."""

import time
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from distill import measure
from distill.tasks.perplexity import tokens_per_second

PER_ROW_S = 0.005  # one call at measure.BATCH (1.28 s) alone would take more than a model's quick budget
FIGURES = {"latency_ms", "latency_p95_ms", "throughput", "peak_memory_bytes"}


class Slow(nn.Module):
    """Sleeps `per_row_s` for each row of its input; notes the rows of every call."""

    def __init__(self, per_row_s: float = PER_ROW_S):
        super().__init__()
        self.per_row_s, self.calls = per_row_s, []
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(len(x))
        time.sleep(self.per_row_s * len(x))
        return self.head(x.flatten(1)[:, :4].float())


def test_quick_costs_stay_within_the_budget_on_a_slow_model():
    model = Slow()
    measured = measure.costs(model, (4,))
    assert measured.keys() >= FIGURES and all(measured[key] > 0 for key in FIGURES)
    assert measure.BATCH * PER_ROW_S > measure.QUICK_S  # the careful batch would not fit
    batch = measured["timing"]["batch"]
    assert measured["timing"]["budget_s"] == measure.QUICK_S
    assert max(model.calls) < measure.BATCH and (batch == 1 or batch in model.calls)
    assert sum(model.calls) * PER_ROW_S <= measure.QUICK_S  # the seconds it slept, every call counted
    assert measured["throughput"] <= 1 / PER_ROW_S  # taken at the batch used, never faster than it can be
    assert measured["latency_p95_ms"] >= measured["latency_ms"] >= PER_ROW_S * 1e3


def test_a_model_too_slow_for_any_batch_gets_its_batch_1_throughput(monkeypatch):
    model = Slow(per_row_s=0.03)  # the memory pass, a warm-up and 3 timed calls leave no room for 4 rows
    measured = measure.costs(model, (4,), quick_s=0.1)
    assert measured.keys() >= FIGURES
    assert measured["timing"] == {"budget_s": 0.1, "batch": 1} and set(model.calls) == {1}
    assert len(model.calls) == 5  # the memory pass, the warm-up, the 3 fewest latency calls: nothing more
    assert measured["throughput"] == pytest.approx(1e3 / measured["latency_ms"])


class Clock:
    """A fake perf_counter that only a call of `run` moves: `per_row` seconds a row."""

    def __init__(self, per_row: float):
        self.now, self.per_row, self.calls = 0.0, per_row, []

    def perf_counter(self) -> float:
        return self.now

    def run(self, x: Tensor) -> None:
        self.calls.append(len(x))
        self.now += self.per_row * len(x)


def test_rate_grows_the_batch_while_the_next_call_fits(monkeypatch):
    clock = Clock(per_row=0.01)
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    rows_per_s, batch = measure.rate(clock.run, lambda rows: torch.zeros(rows, 2), 1.0, most=256)
    # 1, 4, 16, 64 rows take 0.85 s: 256 rows (2.56 s) and another 64 (0.64 s) no longer fit in 1 s
    assert clock.calls == [1, 4, 16, 64] and batch == 64
    assert rows_per_s == pytest.approx(100)


def test_rate_repeats_the_largest_batch_while_a_call_fits(monkeypatch):
    for budget_s, repeats in ((1.0, 14), (10.0, measure.MOST_CALLS - 1)):  # 0.084 s, then 0.064 s a call
        clock = Clock(per_row=0.001)
        monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=clock.perf_counter))
        rows_per_s, batch = measure.rate(clock.run, lambda rows: torch.zeros(rows, 2), budget_s, most=64, per_row=0.001)
        assert batch == 64 and clock.calls == [4, 16, 64, *[64] * repeats]
        assert rows_per_s == pytest.approx(1000)


def test_export_and_report_keep_the_careful_measurement():
    model = Slow(per_row_s=0.0)
    measured = measure.costs(model, (4,), budget_s=0.01)
    assert measured.keys() == FIGURES  # the careful figures: no quick "timing" entry
    assert model.calls.count(measure.BATCH) >= 3  # the throughput at the full batch, at least 3 timed calls


def test_tokens_per_second_stays_within_the_budget():
    class SlowLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls, self.head = [], nn.Linear(1, 1)

        def forward(self, ids: Tensor) -> Tensor:
            self.calls.append(len(ids))
            time.sleep(0.1 * len(ids))  # a batch of 8 (0.8 s) would not fit
            return torch.zeros(*ids.shape, 50)

    model = SlowLM()
    tokens = tokens_per_second(model, 8, 16, 50, budget_s=0.75)
    assert 0 < tokens <= 16 / 0.1
    assert max(model.calls) < 8 and sum(model.calls) * 0.1 <= measure.QUICK_S
