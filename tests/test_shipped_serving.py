"""`dsm serve` on the shipped default ASR model, with real speech.

A client written to Kyutai's published protocol transcribes the bundled sample (a sentence
spoken by a voice held out of training) through `dsm serve` (no model argument: the
defaults) and gets the same words, at the same times, as `dsm transcribe` on the same file;
and they are the sentence's words. (The TTS side of the protocol is checked with tiny
models in test_server_engine.py; no default TTS model ships yet.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from helpers import kyutai_asr_client, serving

from dsm.recipes.metrics import normalize_text
from dsm.streaming import cmd_serve, cmd_transcribe
from dsm.streaming.model_dir import read_audio
from dsm.streaming.protocol import SAMPLE_RATE

ASSETS = Path(__file__).resolve().parents[1] / "dsm" / "assets"


def _default_services():
    parser = argparse.ArgumentParser()
    cmd_serve.add_arguments(parser)
    return cmd_serve.build_services(parser.parse_args(["--max-streams", "2", "--device", "cpu"]))


def test_kyutai_client_through_dsm_serve_gets_the_words_of_dsm_transcribe(capsys) -> None:
    sample = ASSETS / "sample.wav"
    reference = json.loads((ASSETS / "sample.json").read_text())["text"]
    parser = argparse.ArgumentParser()
    cmd_transcribe.add_arguments(parser)
    assert cmd_transcribe.main(parser.parse_args([str(sample), "--json", "--device", "cpu"])) == 0
    local = json.loads(capsys.readouterr().out)

    asr, tts = _default_services()
    assert asr is not None  # the default ASR model is installed
    pcm = read_audio(sample, SAMPLE_RATE)

    async def through_server() -> list[tuple]:
        async with serving(asr, tts, api_keys=["public_token"]) as server:
            words, _ = await kyutai_asr_client(server.url, pcm)
            return words

    remote = asyncio.run(asyncio.wait_for(through_server(), 300))
    assert [w[0] for w in remote] == [w["word"] for w in local]
    assert [w[1] for w in remote] == pytest.approx([w["start"] for w in local], abs=1e-3)
    heard = " ".join(w[0] for w in remote)
    assert normalize_text(heard) == normalize_text(reference), (heard, reference)
