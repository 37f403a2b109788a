"""`dsm serve` on the shipped default ASR and TTS models, with real speech.

A client written to Kyutai's published protocol transcribes the bundled sample (a sentence
spoken by a voice held out of training) through `dsm serve` (no model argument: the
defaults) and gets the same words, at the same times, as `dsm transcribe` on the same file;
and they are the sentence's words. (The TTS side of the protocol is checked with tiny
models in test_server_engine.py.) And the default TTS model, through the same server,
speaks a sentence that the default ASR model hears word for word.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from helpers import kyutai_asr_client, serving

from dsm.commands import serve as cmd_serve
from dsm.commands import transcribe as cmd_transcribe
from dsm.models.model_dir import read_audio
from dsm.recipes.eval.metrics import normalize_text
from dsm.streaming.serve.protocol import SAMPLE_RATE

ASSETS = Path(__file__).resolve().parents[2] / "dsm" / "assets"


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


def test_kyutai_tts_client_through_dsm_serve_speaks_what_the_asr_model_hears() -> None:
    """The default TTS model behind `dsm serve`: a Kyutai-protocol client sends the demo's
    sentence and Eos, gets every word back as timed Text and the speech as 1920-sample
    Audio frames, and the default ASR model, served alongside, hears the sentence in it."""
    import msgpack
    import numpy as np
    import websockets

    from dsm.commands.demo import TTS_TEXT
    from dsm.streaming.serve.protocol import FRAME_SIZE

    asr, tts = _default_services()
    assert tts is not None  # the default TTS model is installed

    async def speak_then_hear() -> tuple[list[dict], list[tuple]]:
        async with serving(asr, tts, api_keys=["public_token"]) as server:
            url = server.url + "/api/tts_streaming?format=PcmMessagePack"
            async with websockets.connect(
                    url, additional_headers={"kyutai-api-key": "public_token"}) as ws:
                for word in TTS_TEXT.split():
                    await ws.send(msgpack.packb({"type": "Text", "text": word + " "}))
                await ws.send(msgpack.packb({"type": "Eos"}))
                messages = [msgpack.unpackb(m) async for m in ws]
            frames = [m["pcm"] for m in messages if m["type"] == "Audio"]
            pcm = np.concatenate([np.asarray(f, dtype=np.float32) for f in frames])
            words, _ = await kyutai_asr_client(server.url, pcm)
            return messages, words

    messages, words = asyncio.run(asyncio.wait_for(speak_then_hear(), 300))
    assert messages[0] == {"type": "Ready"}
    spoken = [m for m in messages if m["type"] == "Text"]
    assert [m["text"] for m in spoken] == TTS_TEXT.split()
    assert all(a["stop_s"] <= b["start_s"] + 1e-9 for a, b in zip(spoken, spoken[1:]))
    assert all(len(m["pcm"]) == FRAME_SIZE for m in messages if m["type"] == "Audio")
    heard = " ".join(w[0] for w in words)
    assert normalize_text(heard) == normalize_text(TTS_TEXT), heard
