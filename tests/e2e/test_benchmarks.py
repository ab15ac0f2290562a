"""The benchmarks still run: a few attempts each, figures printed, no timing judged.

Benchmarks are not timed tests, but one that broke goes unnoticed until somebody wants its
figures: bench/alert_latency.py waited in vain for its sixth SSH attempt once the agent's flood
control held back a source's sixth event within its window.  Small sizes, the real pieces.
"""

from __future__ import annotations

import re

import pytest

from bench import alert_latency, console_ingest
from bench._common import ROOT


def test_alert_latency_measures_more_attempts_than_one_source_may_send(capsys):
    alert_latency.main(["--attempts", "8", "--blocks", "1", "--load-devices", "4"])
    out = capsys.readouterr().out
    assert re.search(r"ssh client start -> stored  p95 +[\d.]+ ms +[\d.]+ ms", out), out
    stored = re.search(r"events_stored (\d+)", out)
    assert stored and int(stored.group(1)) >= 16, out  # 8 attempts in each condition


@pytest.mark.parametrize("against_itself", [False, True])
def test_console_ingest_counts_what_the_console_stored(capsys, tmp_path, against_itself):
    """Alone, and against a checkout of itself (the old/new table and the turns)."""
    old = str(ROOT) if against_itself else ""
    console_ingest.main(["--old", old, "--repeat", "1", "--heartbeats", "300", "--events", "100",
                         "--in-process-heartbeats", "200", "--in-process-events", "100",
                         "--paired-events", "200", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"fragments accepted / events STORED +[\d,]+ / 100\b", out), out
    if old:
        assert re.search(r"CPU per stored event .* over 4 pairs of rounds", out, re.S), out
