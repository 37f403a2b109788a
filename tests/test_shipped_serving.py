"""`dsm serve` on the shipped default models, with real speech.

A client written to Kyutai's published protocol transcribes the bundled sample (a sentence
spoken by a voice held out of training) through `dsm serve` and gets the same words, at the
same times, as `dsm transcribe` on the same file; and they are the sentence's words. A
Kyutai-style TTS client (`format=PcmMessagePack`) gets 1920-sample frames of speech that the
default ASR model understands, and a Text message for every word.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets
from helpers import kyutai_asr_client, serving

from dsm.recipes.asr_task import transcribe_pcms
from dsm.recipes.metrics import normalize_text, word_errors
from dsm.streaming import cmd_serve, cmd_transcribe
from dsm.streaming.model_dir import load_model_dir, read_audio, resolve_model
from dsm.streaming.protocol import FRAME_SIZE, SAMPLE_RATE

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
    assert asr is not None and tts is not None  # both default models are installed
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


def test_kyutai_tts_client_gets_intelligible_speech_and_every_word() -> None:
    text = "The museum opens at nine in the morning."
    asr, tts = _default_services()

    async def speak() -> tuple[list[list[float]], list[str]]:
        async with serving(asr, tts, api_keys=["public_token"]) as server:
            url = server.url + "/api/tts_streaming?format=PcmMessagePack"
            frames: list[list[float]] = []
            spoken: list[str] = []
            async with websockets.connect(
                    url, additional_headers={"kyutai-api-key": "public_token"}) as ws:
                for word in text.split():
                    await ws.send(msgpack.packb({"type": "Text", "text": word + " "}))
                await ws.send(msgpack.packb({"type": "Eos"}))
                async for message in ws:
                    data = msgpack.unpackb(message)
                    if data["type"] == "Audio":
                        frames.append(data["pcm"])
                    elif data["type"] == "Text":
                        spoken.append(data["text"])
                    elif data["type"] == "Error":
                        raise AssertionError(data["message"])
            return frames, spoken

    frames, spoken = asyncio.run(asyncio.wait_for(speak(), 300))
    assert frames and all(len(frame) == FRAME_SIZE for frame in frames)
    assert normalize_text(" ".join(spoken)) == normalize_text(text)
    pcm = np.concatenate([np.asarray(f, dtype=np.float32) for f in frames])
    assert np.isfinite(pcm).all() and np.abs(pcm).max() > 1e-2
    model = load_model_dir(resolve_model(None, "asr"))
    (transcript,) = transcribe_pcms(model, [pcm], num_slots=1)
    assert word_errors(text, transcript.text).rate <= 0.25, transcript.text
