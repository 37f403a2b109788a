"""`dsm bench codec` runs end to end (a tiny duration; never a timed assertion)."""

from __future__ import annotations

import argparse

from dsm.commands import bench_codec as cmd_bench


def test_bench_codec_reports_both_codecs_and_same_codes(capsys):
    parser = argparse.ArgumentParser()
    cmd_bench.add_arguments(parser)
    args = parser.parse_args(["--seconds", "0.16", "--batch", "2", "--warmup-frames", "1"])
    assert cmd_bench.main(args) == 0
    out = capsys.readouterr().out
    assert "moshi" in out and "dsm" in out and "real-time factor" in out
    assert "ratio moshi/dsm" in out
    assert "identical codes: True" in out
