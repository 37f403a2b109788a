"""`dsm bench lm` runs end to end on a tiny preset (a smoke test: it asserts what it prints,
never how fast anything is)."""

from __future__ import annotations

import re

from dsm import cli


def test_bench_lm_prints_both_rates_and_their_ratio(capsys) -> None:
    code = cli.main(["bench", "lm", "--preset", "tiny-stt", "--batch", "1,2", "--steps", "2",
                     "--warmup", "1", "--rounds", "1"])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [row[0] for row in rows] == ["1", "2"]
    assert "threads 1" in out  # CPU runs default to one torch thread
    for _, ours, moshi, ratio, cpu_ratio in rows:
        assert float(ours) > 0 and float(moshi) > 0 and float(cpu_ratio) > 0
        assert abs(float(ratio) - float(ours) / float(moshi)) < 0.03 * float(ratio) + 0.01


def test_bench_lm_refuses_bad_batches(capsys) -> None:
    assert cli.main(["bench", "lm", "--batch", "one,two"]) == 2
    assert "comma-separated integers" in capsys.readouterr().out
