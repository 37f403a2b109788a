"""Kyutai's batch endpoints on the websocket port: `POST /api/asr-streaming` (a sound file
in, JSON words out) and `POST /api/tts` (JSON in, a WAV out), over scripted services.

Every refusal is a status and a one-line reason; after each, a websocket witness still
gets its words and no slot is left taken.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import serving
from test_server import SCRIPT, WORDS, run, scripted_server, speech, wait_for_active, witness

from dsm.streaming.serve.protocol import FRAME_SIZE, SAMPLE_RATE
from dsm.streaming.serve.scripted_service import ScriptedASRService, ScriptedTTSService


def _post_sync(port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
               content_length: bool = True) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if content_length:
            connection.request("POST", path, body=body, headers=headers or {})
        else:  # chunked: http.client sends Transfer-Encoding for an iterable body
            connection.request("POST", path, body=iter([body]), headers=headers or {},
                               encode_chunked=True)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


async def post(port: int, path: str, body: bytes, **kw: Any) -> tuple[int, str, bytes]:
    return await asyncio.to_thread(_post_sync, port, path, body, **kw)


def wav_file(pcm: np.ndarray, rate: int, channels: int = 1, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    data = np.stack([pcm] * channels, axis=1) if channels > 1 else pcm
    soundfile.write(buffer, data, rate, format=fmt)
    return buffer.getvalue()


def test_post_asr_takes_a_sound_file_and_answers_kyutai_messages() -> None:
    import soxr

    async def main() -> list[tuple[int, str, bytes]]:
        async with scripted_server(api_keys=["k"]) as server:
            pcm16k = soxr.resample(speech(), SAMPLE_RATE, 16_000).astype(np.float32)
            answers = [await post(server.port, "/api/asr-streaming",
                                  wav_file(pcm16k, 16_000, channels=2),
                                  headers={"kyutai-api-key": "k"}),
                       await post(server.port, "/api/asr-streaming",
                                  wav_file(speech(), SAMPLE_RATE, fmt="FLAC"),
                                  headers={"kyutai-api-key": "k", "Expect": "100-continue"})]
            assert server.asr is not None
            await wait_for_active(server.asr, 0)
            return answers

    for status, kind, body in run(main()):
        assert status == 200 and kind == "application/json"
        messages = json.loads(body)
        assert [m["text"] for m in messages if m["type"] == "Word"] == WORDS
        assert [m["start_time"] for m in messages if m["type"] == "Word"] == pytest.approx(
            [w.start for w in SCRIPT], abs=0.01)
        assert {m["type"] for m in messages} == {"Word", "EndWord"}


def test_post_tts_answers_a_wav_or_json_with_timestamps() -> None:
    async def main() -> tuple[tuple[int, str, bytes], tuple[int, str, bytes]]:
        async with scripted_server() as server:
            query = {"text": ["Hello there", "world"], "seed": 42, "temperature": 0.8,
                     "top_k": 250, "voice": "expresso/any.wav", "cfg_alpha": 1.5}
            plain = await post(server.port, "/api/tts", json.dumps(query).encode())
            query["return_timestamps"] = True
            timed = await post(server.port, "/api/tts", json.dumps(query).encode())
            return plain, timed

    (status, kind, wav), (timed_status, timed_kind, timed_body) = run(main())
    assert status == 200 and kind == "audio/wav"
    pcm, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    info = soundfile.info(io.BytesIO(wav))
    assert rate == SAMPLE_RATE and info.subtype == "PCM_16"
    assert pcm.shape == (3 * 3 * FRAME_SIZE,)  # three words, three frames each
    assert np.abs(pcm).max() > 0.1
    assert timed_status == 200 and timed_kind == "application/json"
    answer = json.loads(timed_body)
    assert base64.b64decode(answer["wav"]) == wav
    assert [w["text"] for w in answer["transcript"]] == ["Hello", "there", "world"]
    assert all(w["stop_s"] > w["start_s"] for w in answer["transcript"])


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "needle"),
    [
        ("/api/asr-streaming", b"not a sound file at all" * 10, {}, 400, "not a readable sound"),
        ("/api/asr-streaming", b"", {}, 400, "empty"),
        ("/api/asr-streaming", b"RIFF" + bytes(200), {}, 400, "not a readable sound"),
        ("/api/tts", b"{not json", {}, 400, "not JSON"),
        ("/api/tts", b"[1, 2]", {}, 400, "JSON object"),
        ("/api/tts", json.dumps({"txt": ["hi"]}).encode(), {}, 400, "unknown field(s) txt"),
        ("/api/tts", json.dumps({"text": [1, 2]}).encode(), {}, 400, "list of strings"),
        ("/api/tts", json.dumps({"text": ["  "]}).encode(), {}, 400, "empty"),
        ("/api/tts", json.dumps({"text": ["x" * 70_000]}).encode(), {}, 413, "characters"),
        ("/api/tts", json.dumps({"text": ["hi"], "seed": "abc"}).encode(), {}, 400, "seed"),
        ("/api/tts", json.dumps({"text": ["hi"], "temperature": -1}).encode(), {}, 400,
         "temperature"),
        ("/api/tts", json.dumps({"text": ["hi"], "voices": ["a", "b"]}).encode(), {}, 400,
         "voices"),
        ("/api/tts", json.dumps({"text": ["hi"]}).encode(), {"kyutai-api-key": "wrong"}, 401,
         "API key"),
        ("/api/elsewhere", b"{}", {}, 404, "no POST endpoint"),
        ("/api/tts", b"x" * 3000, {}, 413, "at most 2000"),
    ],
    ids=["not-audio", "empty", "truncated-wav", "bad-json", "not-object", "unknown-field",
         "text-not-strings", "blank-text", "huge-text", "bad-seed", "bad-temperature",
         "several-voices", "wrong-key", "unknown-path", "oversized"],
)
def test_bad_post_requests_get_a_status_and_a_reason(path: str, body: bytes,
                                                     headers: dict[str, str], status: int,
                                                     needle: str) -> None:
    async def main() -> tuple[int, bytes, list[str], int, int]:
        keys = ["right"] if "kyutai-api-key" in headers else []
        async with scripted_server(api_keys=keys, max_post_bytes=2000
                                   if path == "/api/tts" and len(body) == 3000 else 1 << 20
                                   ) as server:
            witness_task = asyncio.create_task(witness(server, api_key=keys[0] if keys else None))
            got_status, _, got_body = await post(server.port, path, body, headers=headers)
            words = await witness_task
            assert server.asr is not None and server.tts is not None
            await wait_for_active(server.asr, 0)
            return got_status, got_body, words, server.asr.active, server.tts.active

    got_status, got_body, words, asr_active, tts_active = run(main())
    assert got_status == status
    assert needle in got_body.decode(), got_body
    assert words == WORDS and asr_active == 0 and tts_active == 0


def test_chunked_upload_and_busy_slots_are_refused_clearly() -> None:
    async def main() -> tuple[tuple[int, str, bytes], tuple[int, str, bytes], list[str]]:
        async with serving(ScriptedASRService(SCRIPT, 1), ScriptedTTSService(1),
                           post_slot_wait=0.2) as server:
            chunked = await post(server.port, "/api/asr-streaming",
                                 wav_file(speech(), SAMPLE_RATE), content_length=False)
            holder = asyncio.create_task(witness(server, rtf=1.0))  # takes the only slot
            assert server.asr is not None
            await wait_for_active(server.asr, 1)
            busy = await post(server.port, "/api/asr-streaming", wav_file(speech(), SAMPLE_RATE))
            return chunked, busy, await holder

    chunked, busy, words = run(main())
    assert chunked[0] == 411 and b"Content-Length" in chunked[2]
    assert busy[0] == 503 and b"busy" in busy[2]
    assert words == WORDS
