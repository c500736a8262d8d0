"""Plain progress lines for sinks that are not a terminal: phase, done/total, a rate with its unit, ETA."""
from __future__ import annotations

import io
import logging

from mft_engine.report.progress import LineProgress, ProgressGroup, is_terminal, rate_text, unit_for


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rates_read_with_their_unit():
    assert rate_text(1 / 3.5, unit_for("collect gradients")) == "3.5 s/batch"
    assert rate_text(120, unit_for("evaluate before")) == "120 samples/s"
    assert rate_text(2.5, unit_for("train lora")) == "2.5 steps/s"
    assert rate_text(None, "step") == "" and rate_text(0, "step") == ""


def test_a_line_every_interval_with_phase_count_rate_eta_and_info():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(stream=out, log=False, interval=10, clock=clock)
    p.phase("collect gradients", 31)
    for i in range(31):
        clock.t += 3.5
        p.advance(1, loss=0.25)
    p.done()
    lines = out.getvalue().splitlines()
    # one line per 10 s of a 108.5 s phase (every third batch), then one at its end
    assert len(lines) == 31 // 3 + 1, lines
    first = lines[0]
    assert first.startswith("progress collect gradients: 3/31 batches (10%)"), first
    assert "3.5 s/batch" in first and "eta 1 min 38 s" in first and "loss 0.2500" in first
    assert lines[-1].startswith("progress collect gradients: 31/31 batches (100%), 3.5 s/batch, done in 1 min 48 s")


def test_a_short_phase_prints_nothing():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(stream=out, log=False, interval=10, clock=clock)
    p.phase("evaluate before", 872)
    clock.t += 2
    p.advance(872)
    p.done()
    assert out.getvalue() == ""


def test_lines_reach_the_run_log_logger(caplog):
    clock = Clock()
    p = LineProgress(stream=None, log=True, interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="mft_engine"):
        p.phase("evaluate after 0.1", 872)
        clock.t += 11
        p.advance(500)
        p.done()
    msgs = [r.getMessage() for r in caplog.records if r.name == "mft_engine"]
    assert msgs[0].startswith("progress evaluate after 0.1: 500/872 samples (57%), 45 samples/s, eta 8 s"), msgs
    assert msgs[-1].startswith("progress evaluate after 0.1: 872/872 samples")


def test_a_closed_stream_is_dropped_not_fatal():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(stream=out, log=False, interval=1, clock=clock)
    out.close()
    p.phase("train lora", 4)
    clock.t += 2
    p.advance(1)
    p.done()
    assert p.stream is None


def test_group_reports_to_every_member_and_stringio_is_no_terminal():
    a, b, clock = io.StringIO(), io.StringIO(), Clock()
    g = ProgressGroup(LineProgress(a, log=False, interval=1, clock=clock), None,
                      LineProgress(b, log=False, interval=1, clock=clock))
    with g:
        g.phase("sweep", 2)
        clock.t += 5
        g.advance(1)
        g.done()
    assert a.getvalue() == b.getvalue() and "1/2 cells" in a.getvalue()
    assert not is_terminal(a)


def test_progress_for_sinks_picks_lines_off_a_terminal():
    from mft_engine.report.progress import progress_for_sinks

    class Tty(io.StringIO):
        def isatty(self):
            return True

    made = []
    bars = lambda: made.append(1) or ProgressGroup()
    piped = progress_for_sinks(bars, stream=io.StringIO())
    assert not made and len(piped.members) == 1 and piped.members[0].stream is not None
    tty = progress_for_sinks(bars, stream=Tty())
    assert made == [1] and len(tty.members) == 2 and tty.members[1].stream is None  # run log only
    quiet = progress_for_sinks(bars, quiet=True, stream=Tty())
    assert len(quiet.members) == 1 and quiet.members[0].stream is None and made == [1]
