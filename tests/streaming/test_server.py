"""`dsm serve` over scripted model services (test doubles, no model): protocol, auth,
limits, faults, capacity, shutdown and a short 64-client load run.

Every fault test runs a *witness* stream next to the faulty one and checks that it still
gets exactly its words: a fault must stay inside its own connection.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgpack
import numpy as np
import pytest
import websockets
from helpers import serving
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dsm.streaming.serve import clients
from dsm.streaming.serve.protocol import (
    FRAME_SIZE,
    SAMPLE_RATE,
    encode_audio_in,
    encode_marker_in,
    encode_text_in,
)
from dsm.streaming.serve.scripted_service import ScriptedASRService, ScriptedTTSService, ScriptWord
from dsm.streaming.serve.server import ServerConfig, StreamingServer

SCRIPT = [ScriptWord(f"word{i}", 0.2 + 0.4 * i, 0.45 + 0.4 * i) for i in range(4)]  # to 1.65 s
WORDS = [w.text for w in SCRIPT]
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


@asynccontextmanager
async def scripted_server(capacity: int = 8, **config: Any) -> AsyncIterator[StreamingServer]:
    async with serving(ScriptedASRService(SCRIPT, capacity), ScriptedTTSService(capacity),
                       **config) as server:
        yield server


def speech(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))
            ).astype(np.float32)


async def witness(server: StreamingServer, rtf: float = 4.0, **kw: Any) -> list[str]:
    words = await clients.stream_pcm_asr(server.url, speech(), rtf=rtf, **kw)
    return [w.text for w in words]


async def recv_map(ws: websockets.ClientConnection) -> dict[str, Any]:
    return msgpack.unpackb(await ws.recv())


async def until_closed(ws: websockets.ClientConnection) -> list[dict[str, Any]]:
    messages = []
    try:
        async for data in ws:
            messages.append(msgpack.unpackb(data))
    except ConnectionClosed:
        pass
    return messages


async def wait_for_active(service: Any, count: int) -> None:
    await asyncio.wait_for(service.until_active(count), 30)


# --- the Kyutai protocol, as Kyutai's published clients speak it -------------------------


def test_kyutai_style_asr_client_gets_words_and_marker_echo() -> None:
    async def main() -> tuple[list[str], list[str], list[float]]:
        async with scripted_server(api_keys=["open_token"]) as server:
            url = server.url + "/api/asr-streaming"
            async with websockets.connect(
                url, additional_headers={"kyutai-api-key": "open_token"}
            ) as ws:
                async def send() -> None:
                    async def audio(pcm: Any) -> None:
                        await ws.send(msgpack.packb({"type": "Audio", "pcm": [float(x) for x in pcm]},
                                                    use_single_float=True))
                    await audio([0.0] * SAMPLE_RATE)
                    data = speech()
                    for i in range(0, len(data), FRAME_SIZE):
                        await audio(data[i:i + FRAME_SIZE])
                    for _ in range(2):
                        await audio([0.0] * SAMPLE_RATE)
                    await ws.send(msgpack.packb({"type": "Marker", "id": 0}))
                    for _ in range(5):
                        await audio([0.0] * SAMPLE_RATE)

                types, words, steps = [], [], []
                sender = asyncio.create_task(send())
                async for message in ws:
                    data = msgpack.unpackb(message, raw=False)
                    types.append(data["type"])
                    if data["type"] == "Word":
                        words.append(data["text"])
                    if data["type"] == "Step":
                        steps.append(data["step_idx"])
                    if data["type"] == "Marker":
                        break
                await sender
        return types, words, steps

    types, words, steps = run(main())
    assert types[0] == "Ready"
    assert words == WORDS
    assert set(types) == {"Ready", "Word", "EndWord", "Step", "Marker"}
    assert steps == list(range(1, len(steps) + 1))  # one Step per 1920 samples, from 1
    assert len(steps) >= (SAMPLE_RATE * 3 + len(speech())) // FRAME_SIZE


def test_kyutai_style_tts_client_gets_audio_frames_then_a_normal_close() -> None:
    async def main() -> tuple[list[dict[str, Any]], int | None]:
        async with scripted_server() as server:
            url = server.url + "/api/tts_streaming?voice=any.wav&format=PcmMessagePack"
            async with websockets.connect(url, additional_headers={"kyutai-api-key": "x"}) as ws:
                await ws.send(msgpack.packb({"type": "Text", "text": "Hello there, streaming world."}))
                await ws.send(msgpack.packb({"type": "Eos"}))
                messages = [msgpack.unpackb(m) async for m in ws]
                return messages, ws.close_code

    messages, code = run(main())
    assert code == 1000
    assert messages[0] == {"type": "Ready"}
    texts = [m for m in messages if m["type"] == "Text"]
    audio = [m for m in messages if m["type"] == "Audio"]
    assert [t["text"] for t in texts] == ["Hello", "there,", "streaming", "world."]
    assert all(len(a["pcm"]) == 1920 for a in audio) and len(audio) == 4 * 3
    assert [t["start_s"] for t in texts] == sorted(t["start_s"] for t in texts)
    assert all(t["stop_s"] > t["start_s"] for t in texts)


def test_clients_module_round_trips_both_endpoints(tmp_path: Any) -> None:
    async def main() -> tuple[list[clients.TimedWord], clients.SpeechResult]:
        async with scripted_server() as server:
            words = await clients.stream_pcm_asr(server.url, speech(), rtf=None)
            speech_out = await clients.stream_text_tts(server.url, "one two three")
        return words, speech_out

    words, out = run(main())
    assert [w.text for w in words] == WORDS
    assert [(w.start_time, w.stop_time) for w in words] == [(s.start, s.end) for s in SCRIPT]
    assert [t.text for t in out.words] == ["one", "two", "three"]
    assert out.pcm.shape == (9 * FRAME_SIZE,) and np.abs(out.pcm).max() > 0.1


def test_endpoint_urls() -> None:
    assert clients.endpoint("ws://h:1", "/api/asr-streaming") == "ws://h:1/api/asr-streaming"
    assert clients.endpoint("http://h:1/", "/api/asr-streaming") == "ws://h:1/api/asr-streaming"
    assert (clients.endpoint("h:1/api/tts_streaming?auth_id=k", "/api/tts_streaming",
                             {"format": "PcmMessagePack"})
            == "ws://h:1/api/tts_streaming?auth_id=k&format=PcmMessagePack")


# --- auth, routes, health -----------------------------------------------------------------


def test_auth_by_header_or_query_and_clear_refusals() -> None:
    async def main() -> dict[str, Any]:
        results: dict[str, Any] = {}
        async with scripted_server(api_keys=["k1", "k2"]) as server:
            base = server.url
            for name, url, headers in [
                ("missing", base + "/api/asr-streaming", {}),
                ("wrong", base + "/api/asr-streaming", {"kyutai-api-key": "nope"}),
                ("wrong_query", base + "/api/asr-streaming?auth_id=nope", {}),
                ("tts_format", base + "/api/tts_streaming?auth_id=k1", {}),
                ("tts_opus", base + "/api/tts_streaming?auth_id=k1&format=OggOpus", {}),
                ("tts_bad", base + "/api/tts_streaming?auth_id=k1&format=Mp3", {}),
                ("unknown", base + "/api/nothing", {}),
            ]:
                try:
                    async with websockets.connect(url, additional_headers=headers):
                        results[name] = "accepted"
                except InvalidStatus as error:
                    results[name] = (error.response.status_code, error.response.body.decode())
            for name, url, headers in [
                ("header", base + "/api/asr-streaming", {"kyutai-api-key": "k2"}),
                ("query", base + "/api/asr-streaming?auth_id=k1", {}),
            ]:
                async with websockets.connect(url, additional_headers=headers) as ws:
                    results[name] = await recv_map(ws)
            results["witness"] = await witness(server, api_key="k1")
        return results

    results = run(main())
    for name in ("missing", "wrong", "wrong_query"):
        assert results[name][0] == 401 and "API key" in results[name][1], name
    assert results["tts_format"] == results["tts_opus"] == "accepted"  # Kyutai's default
    assert results["tts_bad"][0] == 400 and "'Mp3'" in results["tts_bad"][1]
    assert "OggOpus, OggOpusMessagePack, Pcm, PcmMessagePack" in results["tts_bad"][1]
    assert results["unknown"][0] == 404
    assert results["header"] == results["query"] == {"type": "Ready"}
    assert results["witness"] == WORDS


def _http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_health_endpoint_counts_streams_and_frees_them() -> None:
    async def main() -> list[dict[str, Any]]:
        reports = []
        async with scripted_server(capacity=3) as server:
            http = f"http://127.0.0.1:{server.port}/api/health"
            async with websockets.connect(server.url + "/api/asr-streaming") as ws:
                await recv_map(ws)
                status, kind, body = await asyncio.to_thread(_http_get, http)
                assert status == 200 and kind == "application/json"
                reports.append(json.loads(body))
            assert server.asr is not None
            await wait_for_active(server.asr, 0)
            reports.append(json.loads((await asyncio.to_thread(_http_get, http))[2]))
        return reports

    during, after = run(main())
    assert during["status"] == "ok"
    assert during["asr"] == {"active": 1, "capacity": 3}
    assert during["tts"] == {"active": 0, "capacity": 3}
    assert after["asr"] == {"active": 0, "capacity": 3}


def test_demo_page_is_served_at_root() -> None:
    async def main() -> list[tuple[int, str, bytes]]:
        async with scripted_server() as server:
            base = f"http://127.0.0.1:{server.port}"
            return [await asyncio.to_thread(_http_get, base + p)
                    for p in ("/", "/app.js", "/worklet.js", "/../pyproject.toml", "/nope.js")]

    index, app, worklet, escape, missing = run(main())
    assert index[0] == 200 and index[1].startswith("text/html") and b"<html" in index[2]
    assert app[0] == 200 and "javascript" in app[1] and b"asr-streaming" in app[2]
    assert worklet[0] == 200 and b"registerProcessor" in worklet[2]
    assert escape[0] == 404 and missing[0] == 404


# --- faults and bad input: each contained in its connection ------------------------------


async def _fault_next_to_witness(server: StreamingServer, frames: list[bytes | str]
                                 ) -> tuple[list[dict[str, Any]], int | None, str, list[str]]:
    async def faulty() -> tuple[list[dict[str, Any]], int | None, str]:
        async with websockets.connect(server.url + "/api/asr-streaming", max_size=None) as ws:
            await recv_map(ws)  # Ready
            await ws.send(encode_audio_in(speech(0.08)))
            try:
                for frame in frames:
                    await ws.send(frame)
            except ConnectionClosed:
                pass
            messages = await until_closed(ws)
            return messages, ws.close_code, ws.close_reason

    witness_task = asyncio.create_task(witness(server))
    await asyncio.sleep(0.1)  # the witness is mid-stream when the fault happens
    messages, code, reason = await faulty()
    return messages, code, reason, await witness_task


@pytest.mark.parametrize(
    ("frames", "code", "needle"),
    [
        ([b"\xc1garbage"], 1008, "malformed msgpack"),
        ([msgpack.packb({"type": "Transcribe", "pcm": []})], 1008, "unknown message type"),
        (["text frame"], 1008, "text frame"),
        ([msgpack.packb({"type": "Audio", "pcm": [0.0, float("nan"), 0.0]})], 1008,
         "non-finite sample"),
        ([msgpack.packb({"type": "Audio", "pcm": [float("-inf")] * 10})], 1008, "non-finite"),
        ([msgpack.packb({"type": "Marker"})], 1008, 'lacks the "id" field'),
        ([encode_audio_in(np.zeros(20_000))], 1009, None),  # over max_message_bytes
        ([msgpack.packb([1, 2, 3])], 1008, "expected a msgpack map, got list"),
        ([msgpack.packb({"pcm": [0.0]})], 1008, 'no string "type"'),
        ([msgpack.packb({"type": 7, "pcm": [0.0]})], 1008, 'no string "type"'),
        ([msgpack.packb({"type": "Audio"})], 1008, 'lacks the "pcm" field'),
        ([msgpack.packb({"type": "Audio", "pcm": "0.1 0.2"})], 1008, "array of numbers"),
        ([msgpack.packb({"type": "Audio", "pcm": ["a", "b"]})], 1008, "flat array of numbers"),
        ([msgpack.packb({"type": "Audio", "pcm": [[0.0, 0.1], [0.2, 0.3]]})], 1008,
         "flat array of numbers"),
        ([msgpack.packb({"type": "Audio", "pcm": [0.0, None]})], 1008, "flat array of numbers"),
        ([msgpack.packb({"type": "Audio", "pcm": [0.0, 1e30]})], 1008, "is not audio"),
        ([msgpack.packb({"type": "Audio", "pcm": [0.0, 1e300]})], 1008, "non-finite"),
        ([msgpack.packb({"type": "Audio", "pcm": [0.0, 1e20]})], 1008, "is not audio"),
        ([msgpack.packb({"type": "Marker", "id": "seven"})], 1008, "must be an integer"),
        ([msgpack.packb({"type": "OggOpus", "data": "text"})], 1008, "must be binary"),
    ],
    ids=["malformed", "unknown-type", "text-frame", "nan", "inf", "marker-no-id", "oversized",
         "not-a-map", "no-type", "type-not-string", "audio-no-pcm", "pcm-string",
         "pcm-strings", "pcm-nested", "pcm-none", "pcm-1e30", "pcm-1e300", "pcm-1e20",
         "marker-id-string",
         "opus-not-binary"],
)
def test_bad_input_gets_error_and_close_code_and_others_go_on(
    frames: list[bytes | str], code: int, needle: str | None
) -> None:
    async def main() -> tuple[Any, ...]:
        async with scripted_server(max_message_bytes=32_000) as server:
            result = await _fault_next_to_witness(server, frames)
            assert server.asr is not None
            await wait_for_active(server.asr, 0)  # nothing leaked
            return result

    messages, close_code, reason, witness_words = run(main())
    assert close_code == code
    errors = [m["message"] for m in messages if m["type"] == "Error"]
    if needle is not None:
        assert len(errors) == 1 and needle in errors[0], errors
        assert needle in reason or len(reason) == 120
    assert witness_words == WORDS


def test_client_vanishing_mid_stream_frees_its_slot() -> None:
    async def main() -> tuple[list[str], int]:
        async with scripted_server(capacity=2) as server:
            assert server.asr is not None
            witness_task = asyncio.create_task(witness(server, rtf=2.0))
            ws = await websockets.connect(server.url + "/api/asr-streaming")
            await recv_map(ws)
            for _ in range(5):
                await ws.send(encode_audio_in(speech(0.08)))
            await wait_for_active(server.asr, 2)
            ws.transport.abort()  # no close frame: the client is just gone
            await wait_for_active(server.asr, 1)
            # its slot is free again: a new client is served while the witness goes on
            late = await witness(server, rtf=None)
            words = await witness_task
            await wait_for_active(server.asr, 0)
            return words + late, server.asr.active

    words, active = run(main())
    assert words == WORDS + WORDS and active == 0


def test_more_clients_than_slots_get_a_clear_busy_error() -> None:
    async def main() -> tuple[Any, ...]:
        async with scripted_server(capacity=2) as server:
            first = await websockets.connect(server.url + "/api/asr-streaming")
            second = await websockets.connect(server.url + "/api/tts_streaming?format=PcmMessagePack")
            witness_task = asyncio.create_task(witness(server, rtf=2.0))
            assert server.asr is not None
            await wait_for_active(server.asr, 2)
            async with websockets.connect(server.url + "/api/asr-streaming") as third:
                refused = await until_closed(third)
                refused_code = third.close_code
            tts_ok = await recv_map(second)  # TTS slots are separate
            words = await witness_task
            await first.close()
            await second.close()
            await wait_for_active(server.asr, 0)
            async with websockets.connect(server.url + "/api/asr-streaming") as again:
                ready_again = await recv_map(again)
            return refused, refused_code, tts_ok, words, ready_again

    refused, code, tts_ok, words, ready_again = run(main())
    assert code == 1013
    assert refused == [{"type": "Error",
                        "message": "all 2 ASR streams are busy; try again later"}]
    assert tts_ok == {"type": "Ready"} and ready_again == {"type": "Ready"}
    assert words == WORDS


def test_idle_client_is_told_and_closed() -> None:
    async def main() -> tuple[list[dict[str, Any]], int | None, list[str]]:
        async with scripted_server(idle_timeout=0.3) as server:
            witness_task = asyncio.create_task(witness(server, rtf=None))
            async with websockets.connect(server.url + "/api/asr-streaming") as ws:
                messages = await until_closed(ws)
            return messages, ws.close_code, await witness_task

    messages, code, words = run(main())
    assert code == 1008
    assert messages[0] == {"type": "Ready"}
    assert messages[-1] == {"type": "Error", "message": "no message for 0.3 s: closing"}
    assert words == WORDS


def test_tts_input_after_eos_is_ignored_and_marker_is_refused() -> None:
    async def main() -> list[dict[str, Any]]:
        async with scripted_server() as server:
            url = server.url + "/api/tts_streaming?format=PcmMessagePack"
            async with websockets.connect(url) as ws:
                await ws.send(encode_marker_in(1))
                return await until_closed(ws)

    messages = run(main())
    assert messages[-1]["type"] == "Error" and "expected Text or Eos" in messages[-1]["message"]


# --- graceful shutdown ---------------------------------------------------------------------


def test_shutdown_flushes_open_streams_then_closes_them() -> None:
    async def main() -> tuple[Any, ...]:
        server = StreamingServer(ServerConfig(port=0), ScriptedASRService(SCRIPT, 4),
                                 ScriptedTTSService(4))
        await server.start()
        asr = await websockets.connect(server.url + "/api/asr-streaming")
        tts = await websockets.connect(server.url + "/api/tts_streaming?format=PcmMessagePack")
        for ws in (asr, tts):
            await recv_map(ws)
        await asr.send(encode_audio_in(speech(1.2)))
        await tts.send(encode_text_in("alpha beta gam"))  # last word still being written
        await asyncio.sleep(0.1)
        asr_task = asyncio.create_task(until_closed(asr))
        tts_task = asyncio.create_task(until_closed(tts))
        await server.shutdown()
        refused = None
        try:
            await websockets.connect(server.url + "/api/asr-streaming")
        except OSError as error:
            refused = error
        return (await asr_task, asr.close_code, await tts_task, tts.close_code, refused,
                server.asr.active, server.tts.active)  # type: ignore[union-attr]

    asr_messages, asr_code, tts_messages, tts_code, refused, asr_active, tts_active = run(main())
    # the flush steps the text delay out: every word begun in the first 1.2 s comes out
    assert [m["text"] for m in asr_messages if m["type"] == "Word"] == WORDS[:3]
    assert asr_code == 1001 and tts_code == 1001
    assert [m["text"] for m in tts_messages if m["type"] == "Text"] == ["alpha", "beta", "gam"]
    assert isinstance(refused, OSError)
    assert asr_active == 0 and tts_active == 0


# --- load (short in-suite version; `dsm bench serve` runs the long one) --------------------


def test_64_concurrent_clients_all_get_their_words_and_leave_no_slot() -> None:
    async def main() -> tuple[list[list[str]], int, int]:
        async with scripted_server(capacity=64) as server:
            results = await asyncio.gather(*[witness(server, rtf=1.0) for _ in range(64)])
            assert server.asr is not None
            await wait_for_active(server.asr, 0)
            return results, server.asr.active, len(server.sessions)

    results, active, sessions = run(main(), timeout=120)
    assert len(results) == 64 and all(words == WORDS for words in results)
    assert active == 0 and sessions == 0


def test_bench_serve_command_reports_latency_and_checks(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    import argparse

    from dsm.commands import bench_serve as cmd_bench_serve

    parser = argparse.ArgumentParser()
    cmd_bench_serve.add_arguments(parser)
    args = parser.parse_args(["--scripted", "--clients", "4", "--seconds", "1.5", "--json"])
    assert cmd_bench_serve.main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["clients_with_all_words"] == 4 and report["errors"] == 0
    assert report["words_lost"] == 0 and report["measured_by"] == "Step"
    assert report["slots_open_after"] == 0
    assert report["steps"] == 4 * int(1.5 * SAMPLE_RATE / FRAME_SIZE)
    latency = report["added_latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]


def test_client_that_stops_reading_is_cut_off_and_frees_its_slot() -> None:
    async def main() -> tuple[int, list[str]]:
        async with serving(ScriptedASRService(SCRIPT, 2),
                           ScriptedTTSService(2, frames_per_word=3, max_pending_events=40)
                           ) as server:
            url = server.url + "/api/tts_streaming?format=PcmMessagePack"
            async with websockets.connect(url, max_queue=1) as stuck:
                await stuck.send(encode_text_in(" ".join(["word"] * 2000)))
                await stuck.send(msgpack.packb({"type": "Eos"}))
                assert server.tts is not None
                await wait_for_active(server.tts, 0)  # overflowed: released, never read
                words = await witness(server, rtf=None)
                stuck.transport.abort()
            return server.tts.active, words

    active, words = run(main())
    assert active == 0 and words == WORDS


def test_unresponsive_connection_is_dropped_by_ping_timeout() -> None:
    async def main() -> list[str]:
        async with scripted_server(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5,
                                   idle_timeout=60) as server:
            assert server.asr is not None
            dead = await websockets.connect(server.url + "/api/asr-streaming")
            await recv_map(dead)
            await wait_for_active(server.asr, 1)
            dead.transport.pause_reading()  # a frozen peer: pings go unanswered
            await wait_for_active(server.asr, 0)
            words = await witness(server, rtf=None)
            dead.transport.abort()
            await wait_for_active(server.asr, 0)  # and the witness's slot is free again
            return words

    assert run(main(), timeout=30) == WORDS


# --- more bad input: the TTS endpoint, query fields, bursts, paths, memory -----------------


async def _tts_fault_next_to_witness(server: StreamingServer, frames: list[bytes | str]
                                     ) -> tuple[list[dict[str, Any]], int | None, list[str]]:
    async def faulty() -> tuple[list[dict[str, Any]], int | None]:
        url = server.url + "/api/tts_streaming?format=PcmMessagePack"
        async with websockets.connect(url, max_size=None) as ws:
            await recv_map(ws)  # Ready
            try:
                for frame in frames:
                    await ws.send(frame)
            except ConnectionClosed:
                pass
            return await until_closed(ws), ws.close_code

    witness_task = asyncio.create_task(witness(server))
    await asyncio.sleep(0.1)
    messages, code = await faulty()
    after = await clients.stream_text_tts(server.url, "one two three")  # TTS goes on too
    assert [w.text for w in after.words] == ["one", "two", "three"]
    return messages, code, await witness_task


@pytest.mark.parametrize(
    ("frames", "code", "needle"),
    [
        ([encode_text_in("word " * 200_000)], 1009, None),  # a megabyte of text in one message
        ([encode_text_in("word " * 14_000)], 1008, "the limit is 65536"),
        (["word " * 14_000], 1008, "the limit is 65536"),  # the same as a text frame
        ([encode_text_in("hello\x07world")], 1008, "control character U+0007"),
        (["nul\x00inside"], 1008, "control character U+0000"),
        ([msgpack.packb({"type": "Text"})], 1008, 'lacks the "text" field'),
        ([msgpack.packb({"type": "Text", "text": 5})], 1008, "must be a string"),
        ([msgpack.packb({"type": "Audio", "pcm": [0.0]})], 1008, "expected Text or Eos"),
        ([b"\x00\x01garbage"], 1008, "malformed msgpack"),
        ([msgpack.packb("just a string")], 1008, "expected a msgpack map"),
    ],
    ids=["megabyte-text", "text-over-limit", "text-frame-over-limit", "control-char",
         "nul-in-text-frame", "text-no-field", "text-not-string", "audio-on-tts", "malformed",
         "not-a-map"],
)
def test_bad_tts_input_gets_error_and_close_code_and_others_go_on(
    frames: list[bytes | str], code: int, needle: str | None
) -> None:
    async def main() -> tuple[Any, ...]:
        async with scripted_server(max_message_bytes=128_000) as server:
            messages, close_code, words = await _tts_fault_next_to_witness(server, frames)
            assert server.asr is not None and server.tts is not None
            await wait_for_active(server.asr, 0)
            await wait_for_active(server.tts, 0)
            return messages, close_code, words

    messages, close_code, words = run(main())
    assert close_code == code
    if needle is not None:
        errors = [m["message"] for m in messages if m["type"] == "Error"]
        assert len(errors) == 1 and needle in errors[0], errors
    assert words == WORDS


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/api/tts_streaming?format=PcmMessagePack&bogus=1", "unknown field(s) bogus"),
        ("/api/tts_streaming?format=Wav", "unsupported TTS format 'Wav'"),
        ("/api/tts_streaming?seed=abc", "seed must be an integer"),
        ("/api/tts_streaming?temperature=inf", "temperature must be finite"),
        ("/api/tts_streaming?top_k=-3", "top_k must be >= 0"),
        ("/api/tts_streaming?max_seq_len=0", "max_seq_len must be >= 1"),
        ("/api/tts_streaming?seed=1&seed=2", "seed is given 2 times"),
        ("/api/tts_streaming?voices=a&voices=b", "voices"),
        ("/api/asr-streaming?voice=x", "unknown field(s) voice"),
    ],
)
def test_wrong_query_fields_are_refused_at_the_handshake(path: str, needle: str) -> None:
    async def main() -> tuple[int, bytes, list[str]]:
        async with scripted_server() as server:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(server.url + path)
            return (refused.value.response.status_code, refused.value.response.body,
                    await witness(server, rtf=None))

    status, body, words = run(main())
    assert status == 400 and needle in body.decode(), body
    assert words == WORDS


def test_a_burst_of_tiny_frames_gets_the_same_words() -> None:
    """2000 messages of 24 samples (and empty ones between) are the same audio as big ones."""
    async def main() -> list[str]:
        async with scripted_server() as server:
            async with websockets.connect(server.url + "/api/asr-streaming") as ws:
                await recv_map(ws)
                for piece in np.split(speech(), len(speech()) // 24):
                    await ws.send(encode_audio_in(piece))
                    await ws.send(encode_audio_in(np.zeros(0, np.float32)))
                await ws.send(encode_marker_in(9))
                words = []
                silence = encode_audio_in(np.zeros(FRAME_SIZE, np.float32))
                while True:
                    await ws.send(silence)
                    try:
                        data = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 0.05))
                    except TimeoutError:
                        continue
                    if data["type"] == "Word":
                        words.append(data["text"])
                    elif data["type"] == "Marker":
                        return words

    assert run(main()) == WORDS


def _http_raw(port: int, path: str) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_static_files_refuse_path_traversal_in_every_encoding() -> None:
    paths = ["/../pyproject.toml", "/..%2fpyproject.toml", "/%2e%2e/pyproject.toml",
             "/%2e%2e%2fpyproject.toml", "/%252e%252e%252fpyproject.toml", "/..\\pyproject.toml",
             "/..%5cpyproject.toml", "//etc/passwd", "/demo/../README.md", "/./app.js/../../x",
             "/app.js%00.html", "/%2fetc%2fpasswd", "/..%c0%afpyproject.toml",
             "/.%2e/pyproject.toml", "/README.md", "/index.html/.."]

    async def main() -> list[int]:
        async with scripted_server() as server:
            return [await asyncio.to_thread(_http_raw, server.port, p) for p in paths]

    statuses = run(main())
    assert all(status in (400, 404) for status in statuses), dict(zip(paths, statuses))


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_never_reading_tts_client_is_cut_off_within_a_memory_bound() -> None:
    """A client asking for an hour of speech and reading none of it: the server holds at
    most `max_pending_events` frames for it (2000 frames of 1920 float32: 15 MB), then
    cuts it off; the process grows by less than 64 MB (without the bound: over 400 MB)."""
    async def main() -> tuple[int, int, list[str]]:
        async with serving(ScriptedASRService(SCRIPT, 2), ScriptedTTSService(2)) as server:
            before = _rss_bytes()
            url = server.url + "/api/tts_streaming?format=PcmMessagePack"
            async with websockets.connect(url, max_queue=1) as stuck:
                for _ in range(20):  # 20 000 words, 1000 a message (under the text limit)
                    await stuck.send(encode_text_in(" ".join(["word"] * 1000)))
                await stuck.send(msgpack.packb({"type": "Eos"}))
                assert server.tts is not None
                await wait_for_active(server.tts, 0)  # cut off, never read
                grown = _rss_bytes() - before
                spoken = server.tts.steps
                words = await witness(server, rtf=None)
                stuck.transport.abort()
            return grown, spoken, server.tts.active, words

    grown, spoken, active, words = run(main(), timeout=120)
    assert spoken < 20_000  # cut off long before the end of its text
    assert grown < 64 * 2**20, f"grew by {grown / 2**20:.0f} MB"
    assert active == 0 and words == WORDS


def test_bench_times_markers_when_the_model_sends_no_step() -> None:
    from dsm.streaming.serve.load_clients import ClientResult, marker_latencies

    # frames sent every 80 ms; the marker after frame k comes back 5 frames later, 10 ms
    # after frame k + 5 was sent (30 ms for one slow frame, 100 ms: after the next frame)
    sent = {k: 0.08 * k for k in range(30)}
    added = {k: 0.010 for k in range(20)} | {7: 0.030, 12: 0.100}
    echoes = {k: (sent[k + 5] + added[k], k + 6 + (added[k] > 0.08)) for k in range(20)}
    result = ClientResult(sent_at=sent, echoes=echoes)
    latencies, delay = marker_latencies([result], None)
    assert delay == 5
    assert sorted(latencies) == pytest.approx(sorted(added.values()))
    forced, delay = marker_latencies([result], 4)  # a given delay is taken as is
    assert delay == 4 and min(forced) == pytest.approx(0.09)
