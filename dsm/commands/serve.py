"""Serve streaming ASR and TTS over websockets, speaking Kyutai's protocol.

Endpoints: /api/asr-streaming (Audio{pcm} 24 kHz or OggOpus{data}, Marker{id} in; Ready,
Word, EndWord, Step (models with VAD heads), Marker, Error out), /api/tts_streaming (Text, Eos
in, each Text whole words; ?format= OggOpus (the default, as Kyutai's), OggOpusMessagePack,
Pcm or PcmMessagePack: audio, with Ready, Text and Error in the MessagePack ones; and Kyutai's
per-stream seed, temperature, top_k, max_seq_len, voice, cfg_alpha), /api/health (JSON), the
batch endpoints POST /api/asr-streaming (a sound file in, JSON words out) and POST /api/tts
(Kyutai's JSON in, a WAV out), and the browser demo at /. A stream waiting for input skips
the steps (nothing is ever added to what a client sent).
Clients written for Kyutai's server work unchanged.

Examples:
  dsm serve                               # the default models shipped in dsm/assets
  dsm serve --asr models/stt --tts models/tts --port 8080 --api-key public_token
  dsm serve --asr kyutai/stt-1b-en_fr     # a Hugging Face repo id (HF_HUB_OFFLINE=1: cache only)
  dsm serve --scripted-asr words.json     # a test double: no model, answers with a script

With --api-key, clients must send the key in the `kyutai-api-key` header or the `auth_id`
query parameter. Ctrl+C (or SIGTERM) stops accepting, lets open streams finish for
--shutdown-grace seconds, then closes the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from dsm.streaming.serve.engine_service import DEFAULT_STREAM_TOP_K
from dsm.streaming.serve.http_post import DEFAULT_MAX_BODY_BYTES
from dsm.streaming.serve.scripted_service import ScriptedASRService, ScriptedTTSService, ScriptWord
from dsm.streaming.serve.server import DEFAULT_DEMO_DIR, ServerConfig, run_server
from dsm.streaming.serve.service import DEFAULT_MAX_BUFFERED_S, ModelService


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--asr", metavar="REF", help="ASR model: a model directory or a Hugging "
                        "Face repo id (kyutai/stt-1b-en_fr[@REVISION]); with neither --asr nor "
                        "--tts: the shipped default models")
    parser.add_argument("--tts", metavar="REF", help="TTS model: a model directory or a Hugging "
                        "Face repo id (kyutai/stt-1b-en_fr[@REVISION])")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    parser.add_argument("--api-key", action="append", default=[], metavar="K",
                        help="accepted API key (repeatable); none given: no auth")
    parser.add_argument("--max-streams", type=int, default=64, metavar="N",
                        help="concurrent streams per model, the engine's batch size "
                        "(default: %(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="run steps eagerly on GPU")
    parser.add_argument("--max-buffered-s", type=float, default=DEFAULT_MAX_BUFFERED_S,
                        metavar="S", help="seconds of a client's audio held ahead of the model; "
                        "past that the server reads that client no further until the model "
                        "catches up (memory: 96 KB per second per stream; default: %(default)s, "
                        "room for the trailing silence of Kyutai's file client)")
    parser.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                        help="close a stream whose client sends nothing for S seconds")
    parser.add_argument("--ping-interval", type=float, default=20.0, metavar="S",
                        help="websocket ping every S seconds (default: %(default)s)")
    parser.add_argument("--ping-timeout", type=float, default=20.0, metavar="S",
                        help="close a connection whose pong is S seconds late "
                        "(default: %(default)s)")
    parser.add_argument("--max-message-bytes", type=int, default=1 << 20, metavar="B",
                        help="largest websocket message accepted; a larger one closes its "
                        "stream with code 1009 (default: %(default)s)")
    parser.add_argument("--max-post-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        metavar="B", help="largest POST body (a sound file, a TTS query) "
                        "accepted; a larger one gets HTTP 413 (default: %(default)s, Kyutai's)")
    parser.add_argument("--post-slot-wait", type=float, default=30.0, metavar="S",
                        help="seconds a POST request waits for a free stream before HTTP 503 "
                        "(default: %(default)s)")
    parser.add_argument("--stream-top-k", type=int, default=DEFAULT_STREAM_TOP_K, metavar="K",
                        help="largest top_k a TTS stream may ask for with its temperature "
                        "(Kyutai's query parameters; 0: streams cannot choose their sampling; "
                        "default: %(default)s)")
    parser.add_argument("--tts-n-q", type=int, default=None, metavar="N",
                        help="Kyutai TTS models: audio codebooks to generate (fewer: faster, "
                        "coarser; default all)")
    parser.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                        help="seconds open streams get to finish on shutdown")
    parser.add_argument("--demo-dir", type=Path, default=DEFAULT_DEMO_DIR,
                        help="folder of the browser page served at / (default: the page installed with dsm)")
    parser.add_argument("--scripted-asr", type=Path, metavar="WORDS.json",
                        help="test double instead of an ASR model: every stream gets these "
                        'words ([{"word", "start", "end"}, ...]) at 12.5 steps/s')
    parser.add_argument("--scripted-tts", action="store_true",
                        help="test double instead of a TTS model: a short tone per word")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")


def read_script(path: Path) -> list[ScriptWord]:
    """`[{"word": str, "start": s, "end": s}, ...]` (a manifest row's "words" field)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = data.get("words")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of {{word, start, end}} objects")
    words = []
    for i, item in enumerate(data):
        try:
            words.append(ScriptWord(str(item["word"]), float(item["start"]), float(item["end"])))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: word {i} needs word, start and end ({error})") from None
    return words


def build_services(args: argparse.Namespace) -> tuple[ModelService | None, ModelService | None]:
    asr: ModelService | None = None
    tts: ModelService | None = None
    if args.asr and args.scripted_asr:
        raise ValueError("give --asr or --scripted-asr, not both")
    if args.tts and args.scripted_tts:
        raise ValueError("give --tts or --scripted-tts, not both")
    if args.scripted_asr:
        asr = ScriptedASRService(read_script(args.scripted_asr), args.max_streams)
    if args.scripted_tts:
        tts = ScriptedTTSService(args.max_streams)
    asr_dir, tts_dir = args.asr, args.tts
    if not (asr_dir or tts_dir or asr or tts):  # nothing named: the shipped default models
        from dsm.models.model_dir import installed_default

        asr_dir, tts_dir = installed_default("asr"), installed_default("tts")
    if asr_dir or tts_dir:
        from dsm.streaming.serve.engine_service import load_engine_service

        if asr_dir:
            asr = load_engine_service("asr", asr_dir, args.max_streams, device=args.device,
                                      cuda_graph=not args.no_cuda_graph,
                                      max_buffered_s=args.max_buffered_s)
        if tts_dir:
            tts = load_engine_service("tts", tts_dir, args.max_streams, device=args.device,
                                      cuda_graph=not args.no_cuda_graph,
                                      max_buffered_s=args.max_buffered_s,
                                      stream_top_k=args.stream_top_k,
                                      **({} if args.tts_n_q is None else {"n_q": args.tts_n_q}))
    if asr is None and tts is None:
        raise ValueError("nothing to serve: no default model is installed in dsm/assets; "
                         "give --asr REF and/or --tts REF (or a scripted test double)")
    return asr, tts


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        asr, tts = build_services(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"dsm serve: {error}")
        return 2
    config = ServerConfig(
        host=args.host, port=args.port, api_keys=list(args.api_key),
        max_message_bytes=args.max_message_bytes, idle_timeout=args.idle_timeout,
        ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
        shutdown_grace=args.shutdown_grace, demo_dir=args.demo_dir,
        max_post_bytes=args.max_post_bytes, post_slot_wait=args.post_slot_wait,
    )

    async def serve() -> None:
        await run_server(config, asr, tts)

    try:
        asyncio.run(serve())
    except OSError as error:
        print(f"dsm serve: cannot listen on {args.host}:{args.port}: {error}")
        return 1
    return 0
