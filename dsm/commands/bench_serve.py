"""Load-test a streaming ASR server with N concurrent real-time clients on loopback.

Starts `dsm serve` in a child process on a free loopback port (or uses --server URL),
then runs N clients at once for a bounded time. Each client streams audio at real time
in 80 ms frames, each followed by a Marker, then sends a last Marker and silence until it
comes back. The added latency of a frame is everything the server and the model add on top
of the model's own text delay: for models with VAD heads, the time from sending frame k
(from 0) to receiving `Step{step_idx: k + 1}` (Kyutai's servers count steps from 1 and
send Steps only then); for the others, from sending frame k + d to the echo of the marker
after frame k (a marker comes back once the text of the audio before it is out: d frames
later, d the text delay). p50 / p95 / max are over all frames of all clients. It also
checks that every client got its words (the script, for the scripted double; the same
words as the other clients, for a model, since all stream the same audio; the words
missing are "words lost") and that no slot is left open afterwards.
The run stops by itself: --seconds of streaming plus at most --grace seconds to finish.

Examples:
  dsm bench serve --scripted --clients 64 --seconds 30
  dsm bench serve --asr models/stt --clients 64 --seconds 30 --audio speech.wav
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

from dsm.streaming.clients import ASR_PATH, endpoint, load_audio
from dsm.streaming.events import MarkerEvent, StepEvent, WordEvent
from dsm.streaming.protocol import (
    FRAME_SIZE,
    SAMPLE_RATE,
    ErrorOut,
    decode_server_message,
    encode_audio_in,
    encode_marker_in,
)
from dsm.streams.silence import silence_pcm

BENCH_SCRIPT = [{"word": w, "start": 0.3 + 0.5 * i, "end": 0.6 + 0.5 * i}
                for i, w in enumerate("every client gets these words".split())]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--server", metavar="URL", help="an already running server")
    what.add_argument("--asr", metavar="REF", help="serve this ASR model: a model directory or "
                      "a Hugging Face repo id (kyutai/stt-1b-en_fr[@REVISION])")
    what.add_argument("--scripted", action="store_true",
                      help="serve the scripted ASR test double (no model; the default): "
                      "measures what the server itself adds")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds each client streams")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="at most this long after --seconds for clients to finish")
    parser.add_argument("--audio", type=Path, help="wav to stream, looped (default: noise)")
    parser.add_argument("--max-streams", type=int, default=None,
                        help="slots of the served model (default: --clients)")
    parser.add_argument("--device", default=None, help="torch device for --asr")
    parser.add_argument("--api-key", default=None, help="key for --server")
    parser.add_argument("--text-delay-frames", type=int, default=None, metavar="D",
                        help="the model's text delay in frames, for timing the markers when "
                        "it sends no Step (default: the fewest frames any marker took)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


END_MARKER = 1  # the marker after the last frame; frame k's own marker is k + FIRST_FRAME_MARKER
FIRST_FRAME_MARKER = 2


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per Step
    words: list[str] = field(default_factory=list)
    error: str | None = None
    sent_at: dict[int, float] = field(default_factory=dict)  # frame -> when it was sent
    # frame k's marker -> (when its echo came, how many frames had been sent by then)
    echoes: dict[int, tuple[float, int]] = field(default_factory=dict)


def marker_latencies(results: list[ClientResult], delay: int | None) -> tuple[list[float], int]:
    """Added latency per frame from the markers sent after every frame, for models without
    VAD heads (no `Step`): the marker after frame k comes back once the model has stepped
    frame k + d (d: its text delay in frames), so the latency of frame k + d is its echo
    time minus when that frame was sent. d is `delay`, or else the fewest frames any echo
    needed (exact as soon as one frame is answered within a frame period, 80 ms)."""
    if delay is None:
        spans = [sent - k - 1 for r in results for k, (_, sent) in r.echoes.items()]
        delay = max(0, min(spans)) if spans else 0
    latencies = [echo - r.sent_at[k + delay] for r in results
                 for k, (echo, _) in r.echoes.items() if k + delay in r.sent_at]
    return latencies, delay


async def run_client(url: str, pcm: np.ndarray, seconds: float, api_key: str | None,
                     start_at: float) -> ClientResult:
    """Stream `pcm` (looped) at real time for `seconds`, then flush with a marker."""
    result = ClientResult()
    sent_at = result.sent_at  # the audio's frames, then the silence's
    frames = int(seconds * SAMPLE_RATE / FRAME_SIZE)  # of the audio
    done = asyncio.Event()
    try:
        headers = {"kyutai-api-key": api_key} if api_key else {}
        async with websockets.connect(endpoint(url, ASR_PATH), additional_headers=headers,
                                      compression=None, max_size=1 << 22) as ws:

            async def send() -> None:
                for k in range(frames):
                    due = start_at + k * FRAME_SIZE / SAMPLE_RATE
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    offset = (k * FRAME_SIZE) % max(1, len(pcm) - FRAME_SIZE)
                    sent_at[k] = time.monotonic()
                    await ws.send(encode_audio_in(pcm[offset:offset + FRAME_SIZE]))
                    await ws.send(encode_marker_in(k + FIRST_FRAME_MARKER))
                await ws.send(encode_marker_in(END_MARKER))
                silence = silence_pcm(FRAME_SIZE)
                while not done.is_set():  # silence until the marker is back, at real time
                    sent_at[len(sent_at)] = time.monotonic()  # frames, for the marker timing
                    await ws.send(encode_audio_in(silence))
                    await asyncio.sleep(FRAME_SIZE / SAMPLE_RATE)

            sender = asyncio.create_task(send())
            try:
                async for data in ws:
                    message = decode_server_message(data)
                    if isinstance(message, StepEvent) and message.step_idx - 1 < frames:
                        result.latencies.append(
                            time.monotonic() - sent_at[message.step_idx - 1])
                    elif isinstance(message, WordEvent):
                        result.words.append(message.text)
                    elif isinstance(message, MarkerEvent) and message.id >= FIRST_FRAME_MARKER:
                        result.echoes[message.id - FIRST_FRAME_MARKER] = (time.monotonic(),
                                                                          len(sent_at))
                    elif isinstance(message, MarkerEvent):
                        break
                    elif isinstance(message, ErrorOut):
                        result.error = message.message
                        break
                else:
                    result.error = f"closed early: {ws.close_code} {ws.close_reason}"
            finally:
                done.set()
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    except Exception as error:  # a failed client is reported, the others go on
        result.error = f"{type(error).__name__}: {error}"
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
        return json.loads(response.read())


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def run_clients(url: str, pcm: np.ndarray, clients: int, seconds: float,
                      api_key: str | None, deadline_s: float) -> list[ClientResult]:
    start_at = time.monotonic() + 0.5
    tasks = [asyncio.create_task(run_client(url, pcm, seconds, api_key, start_at))
             for _ in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    results = []
    for task in tasks:
        if task in done:
            results.append(task.result())
        else:
            results.append(ClientResult(error="did not finish in time"))
    await asyncio.gather(*pending, return_exceptions=True)
    return results


def main(args: argparse.Namespace) -> int:
    pcm = load_audio(args.audio) if args.audio else (
        0.05 * np.random.default_rng(0).standard_normal(4 * SAMPLE_RATE)).astype(np.float32)
    server: subprocess.Popen[bytes] | None = None
    port: int | None = None
    expected: list[str] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.server:
            url = args.server
        else:
            port = _free_port()
            command = [sys.executable, "-m", "dsm.cli", "serve", "--port", str(port),
                       "--max-streams", str(args.max_streams or args.clients),
                       "--idle-timeout", "60"]
            if args.asr:
                command += ["--asr", str(args.asr)]
                if args.device:
                    command += ["--device", args.device]
            else:
                script = Path(tmp) / "words.json"
                script.write_text(json.dumps(BENCH_SCRIPT))
                command += ["--scripted-asr", str(script)]
                # the words begun before the marker (sent after --seconds of audio)
                streamed_s = int(args.seconds * SAMPLE_RATE / FRAME_SIZE) * FRAME_SIZE / SAMPLE_RATE
                expected = [w["word"] for w in BENCH_SCRIPT if w["start"] <= streamed_s]
            server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
                                          "OMP_NUM_THREADS", "1")})
            url = f"ws://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    _health(port)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        err = server.stderr.read().decode() if server.stderr else ""
                        print(f"dsm bench serve: the server did not start\n{err}")
                        return 1
                    time.sleep(0.2)
        try:
            wall = time.monotonic()
            results = asyncio.run(run_clients(url, pcm, args.clients, args.seconds,
                                              args.api_key, args.seconds + args.grace))
            wall = time.monotonic() - wall
            leaked = None
            if port is not None:
                for _ in range(50):  # sessions close right after the marker; give them 5 s
                    leaked = _health(port)["asr"]["active"]
                    if leaked == 0:
                        break
                    time.sleep(0.1)
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
    latencies = [x for r in results for x in r.latencies]
    measured_by, delay = "Step", None
    if not latencies:  # a model without VAD heads sends no Step: time the markers
        latencies, delay = marker_latencies(results, args.text_delay_frames)
        measured_by = "markers"
    errors = [r.error for r in results if r.error]
    reference = expected if expected is not None else (results[0].words if results else [])
    got_words = sum(1 for r in results if not r.error and r.words[:len(reference)] == reference
                    and len(r.words) >= len(reference))
    words_lost = sum(max(0, len(reference) - sum(a == b for a, b in zip(r.words, reference)))
                     for r in results)
    report = {
        "clients": args.clients, "seconds": args.seconds, "wall_s": round(wall, 2),
        "server": args.server or ("asr model " + str(args.asr) if args.asr else "scripted double"),
        "steps": len(latencies),
        "measured_by": measured_by, "text_delay_frames": delay,
        "steps_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
        "added_latency_ms": {
            "p50": round(1000 * _percentile(latencies, 50), 1),
            "p95": round(1000 * _percentile(latencies, 95), 1),
            "max": round(1000 * max(latencies), 1) if latencies else float("nan"),
        },
        "clients_with_all_words": got_words, "words_lost": words_lost, "errors": len(errors),
        "slots_open_after": leaked,
    }
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["added_latency_ms"]
        print(f"dsm bench serve: {args.clients} clients x {args.seconds:g} s on loopback "
              f"({report['server']}), wall {report['wall_s']} s")
        print(f"  steps answered: {report['steps']} ({report['steps_per_s']}/s)")
        how = ("frame sent -> its Step received" if measured_by == "Step" else
               f"frame sent -> the echo of the marker {delay} frames before it: the text "
               "delay, as the markers show it")
        print(f"  added latency ({how}): p50 {lat['p50']} ms, "
              f"p95 {lat['p95']} ms, max {lat['max']} ms")
        print(f"  words lost: {words_lost}; clients that got all their words: "
              f"{got_words}/{args.clients}; "
              f"errors: {len(errors)}; slots open afterwards: {leaked}")
        for error in sorted(set(errors))[:5]:
            print(f"  error: {error}")
    ok = not errors and got_words == args.clients and leaked in (0, None)
    return 0 if ok else 1
