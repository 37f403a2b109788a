"""Helpers shared by several test files: chunked streaming with a slot reset, random LMs
whose text head says something, a server for the length of a block, the local run a
protocol client is compared with, and a tiny moshi Mimi at the real rates for pipeline
conformance. Import explicitly: `from helpers import ...`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file

if TYPE_CHECKING:
    from dsm.streaming.asr import ASRSession
    from dsm.streaming.engine import BatchedEngine
    from dsm.streaming.events import Event
    from dsm.streaming.serve.server import StreamingServer
    from dsm.streaming.serve.service import ModelService


def feed_in_chunks(step: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module,
                   x: torch.Tensor, chunk: int, reset_at: int | None = None,
                   reset_slot: int = 1) -> torch.Tensor:
    """`step` on `x` `[B, ..., T]` in chunks of `chunk` along T, outputs joined on the last
    dim; before chunk number `reset_at`, `module.reset_slots` resets slot `reset_slot`.
    The caller holds `module`'s streaming context."""
    outputs = []
    for index, start in enumerate(range(0, x.shape[-1], chunk)):
        if index == reset_at:
            mask = torch.zeros(x.shape[0], dtype=torch.bool)
            mask[reset_slot] = True
            module.reset_slots(mask)
        outputs.append(step(x[..., start:start + chunk]))
    return torch.cat(outputs, dim=-1)


def stream_in_chunks(module: torch.nn.Module, x: torch.Tensor, chunk: int,
                     reset_at: int | None = None, reset_slot: int = 1) -> torch.Tensor:
    """`module` called on `x` `[B, C, T]` chunk by chunk inside `module.streaming(B)`
    (see `feed_in_chunks`)."""
    with module.streaming(x.shape[0]):
        return feed_in_chunks(module, module, x, chunk, reset_at, reset_slot)


def keep_text_pieces(lm: torch.nn.Module, pieces: Iterable[int]) -> None:
    """Random text heads rarely end a word: keep only pad (3), word start (0) and `pieces`
    in `lm.text_linear`, scaled up so that they win, in place."""
    with torch.no_grad():
        weight = lm.text_linear.weight
        keep = torch.zeros(weight.shape[0], dtype=torch.bool)
        keep[[0, 3, *pieces]] = True
        weight[~keep] = 0.0
        weight[keep] *= 20.0


@asynccontextmanager
async def serving(asr: ModelService | None = None, tts: ModelService | None = None,
                  **config: Any) -> AsyncIterator[StreamingServer]:
    """A started `StreamingServer` (`ServerConfig(**config)`, port 0 unless given) serving
    `asr` / `tts`, shut down when the block ends."""
    from dsm.streaming.serve.server import ServerConfig, StreamingServer

    config.setdefault("port", 0)
    server = StreamingServer(ServerConfig(**config), asr, tts)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def run_until_marker(engine: BatchedEngine, session: ASRSession, pcm: np.ndarray
                     ) -> list[Event]:
    """What a protocol client gets, run locally: `pcm`, a marker, then silence frames until
    the marker is back; the events before the marker. Closes `engine`."""
    from dsm.streaming.events import MarkerEvent
    from dsm.streaming.serve.protocol import FRAME_SIZE

    engine.attach(session)
    session.push_pcm(pcm)
    session.marker(1)
    events: list[Event] = []
    while not any(isinstance(e, MarkerEvent) for e in events):
        if not engine.ready():
            session.push_pcm(np.zeros(FRAME_SIZE, dtype=np.float32))
        events.extend(engine.step().get(session, []))
    engine.close()
    return events[:-1]


async def kyutai_asr_client(url: str, pcm: np.ndarray, api_key: str = "public_token"
                            ) -> tuple[list[tuple], list[dict]]:
    """A client written to Kyutai's published protocol (msgpack, 1920-sample frames,
    a Marker, then silence until the marker echo)."""
    import asyncio

    import msgpack
    import websockets

    from dsm.streaming.serve.protocol import FRAME_SIZE

    async with websockets.connect(url + "/api/asr-streaming",
                                  additional_headers={"kyutai-api-key": api_key}) as ws:
        async def send() -> None:
            for i in range(0, len(pcm), FRAME_SIZE):
                await ws.send(msgpack.packb({"type": "Audio",
                                             "pcm": [float(x) for x in pcm[i:i + FRAME_SIZE]]},
                                            use_single_float=True))
            await ws.send(msgpack.packb({"type": "Marker", "id": 0}))
            for _ in range(35):
                await ws.send(msgpack.packb({"type": "Audio", "pcm": [0.0] * FRAME_SIZE},
                                            use_single_float=True))
                await asyncio.sleep(0.005)

        sender = asyncio.create_task(send())
        words: list[list[Any]] = []
        steps: list[dict] = []
        async for message in ws:
            data = msgpack.unpackb(message)
            if data["type"] == "Word":
                words.append([data["text"], data["start_time"], None])
            elif data["type"] == "EndWord":
                words[-1][2] = data["stop_time"]
            elif data["type"] == "Step":
                steps.append(data)
            elif data["type"] == "Marker":
                break
            elif data["type"] == "Error":
                raise AssertionError(data["message"])
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return [tuple(w) for w in words], steps


HELD_OUT_SEED = 2026  # the shipped models' corpora were synthesized with seeds 0, 1 and 2


def held_out_utterances(count: int, first: int = 0) -> list[Any]:
    """`count` English utterances (draws `first`, `first + 1`, ...) synthesized by dsm's
    corpus code with the eval split's voices only (espeak variants m4 / f3 / klatt3 and
    flite rms, never in a training set), from a seed no training corpus used, so the texts
    are new draws too. Checks both."""
    from dsm.recipes.synth.corpus import DEFAULT_ENGINES, Job, make_item, speakers

    utterances = []
    for index in range(first, first + count):
        (utterance,) = make_item(Job(seed=HELD_OUT_SEED, index=index, lang="en", parallel=False,
                                     engines=DEFAULT_ENGINES, eval_fraction=1.0, sample_rate=24000))
        utterances.append(utterance)
    held_out = {s.id for s in speakers("en") if s.split == "eval"}
    assert {u.speaker for u in utterances} <= held_out
    assert len({u.speaker for u in utterances}) >= 3
    return utterances


# The pipeline's `dsm data text` split (dsm/recipes/pipelines/run.py, step data/text): its
# eval sentences come from fortune files and Bible books no model trained on.
HELD_OUT_TEXT_SOURCES = ("fortunes", "kjv")
_held_out_texts: list[Path] = []


def held_out_text_file() -> Path:
    """eval.en.txt of the pipeline's text split, made once per test session (about 15 s
    from the Debian packages that `make setup` installs)."""
    import tempfile

    from dsm.recipes.text.corpus import resolve_sources, write_text_corpus

    if not _held_out_texts:
        out = Path(tempfile.mkdtemp(prefix="dsm-held-out-text-")) / "text"
        write_text_corpus(out, resolve_sources(HELD_OUT_TEXT_SOURCES, ["en"]), seed=0,
                          eval_fraction=0.1, min_words=3, max_words=20, progress=False)
        _held_out_texts.append(out / "eval.en.txt")
    return _held_out_texts[0]


def held_out_text_utterances(count: int, first: int = 0) -> list[Any]:
    """`count` English utterances spoken by the eval split's voices (as
    `held_out_utterances`) whose texts are sentences of the held-out documents of the
    pipeline's text split: new voices and texts never trained on. Checks both."""
    from dsm.recipes.synth.corpus import DEFAULT_ENGINES, Job, make_item, speakers

    path = held_out_text_file()
    sentences = set(path.read_text(encoding="utf-8").splitlines())
    utterances = []
    for index in range(first, first + count):
        (utterance,) = make_item(Job(seed=HELD_OUT_SEED, index=index, lang="en", parallel=False,
                                     engines=DEFAULT_ENGINES, eval_fraction=1.0,
                                     sample_rate=24000, eval_text_files=(str(path),),
                                     text_share=1.0))
        assert utterance.text in sentences
        utterances.append(utterance)
    held_out = {s.id for s in speakers("en") if s.split == "eval"}
    assert {u.speaker for u in utterances} <= held_out
    return utterances


# A Mimi with the real rates, frame and attention window (24 kHz, 1920 samples, 12.5 Hz, 250
# encoder steps) and tiny widths, in moshi's `get_mimi` terms: moshi's run_inference pads in
# 24 kHz samples, so its pipelines are compared at the real rates. (Past a full window,
# 10 s, moshi's streaming Mimi drops a key that its offline Mimi and dsm keep: see
# tests/codecs/test_mimi.py.)
MOSHI_TINY_MIMI_24K = dict(
    sample_rate=24000, channels=1, frame_rate=12.5,
    seanet=dict(channels=1, dimension=32, causal=True, n_filters=4, n_residual_layers=1,
                activation="ELU", compress=2, dilation_base=2, disable_norm_outer_blocks=0,
                kernel_size=7, residual_kernel_size=3, last_kernel_size=3, norm="none",
                pad_mode="constant", ratios=[8, 6, 5, 4], true_skip=True),
    quantizer=dict(dimension=16, n_q=4, bins=64, input_dimension=32, output_dimension=32),
    transformer=dict(d_model=24, num_heads=4, num_layers=2, causal=True, layer_scale=0.01,
                     context=250, conv_layout=True, max_period=10000, gating="none",
                     norm="layer_norm", positional_embedding="rope", dim_feedforward=48,
                     input_dimension=32, output_dimensions=[32]),
)


def moshi_tiny_mimi_24k(path: Any, seed: int = 1, n_q: int = 4) -> tuple[torch.nn.Module, Any]:
    """moshi's Mimi of `MOSHI_TINY_MIMI_24K` (with `n_q` codebooks) with random weights whose
    codes follow the audio (conv biases zeroed, codebooks at the latents' scale), saved in
    Kyutai's layout at `path`; returns (moshi's model, dsm's `Mimi` loaded from that file)."""
    from moshi.models import loaders

    from dsm.codecs import MimiConfig
    from dsm.codecs.mimi import load_mimi
    from dsm.codecs.seanet import SEANetConfig
    from dsm.codecs.testing import randomize_codebooks
    from dsm.modules.transformer import TransformerConfig

    torch.manual_seed(seed)
    mimi_config = {**MOSHI_TINY_MIMI_24K,
                   "quantizer": {**MOSHI_TINY_MIMI_24K["quantizer"], "n_q": n_q}}
    reference = loaders.get_mimi(None, mimi_config, num_codebooks=n_q)
    randomize_codebooks(reference)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "layer_scale" in name:
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
        for name, buffer in reference.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.mul_(0.1)
    reference.eval()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    config = MimiConfig(
        sample_rate=24000, frame_rate=12.5,
        seanet=SEANetConfig(dimension=32, n_filters=4, ratios=[8, 6, 5, 4]),
        transformer=TransformerConfig(d_model=24, num_heads=4, num_layers=2, dim_feedforward=48,
                                      context=250, layer_scale=0.01),
        codebook_dim=16, n_q=n_q, bins=64,
    )
    return reference, load_mimi(path, config=config)


def varied_pcm(seconds: float, seed: int = 5) -> np.ndarray:
    """24 kHz test audio whose codes change: tones and noise bursts, a new one every 0.1 s."""
    rng = np.random.default_rng(seed)
    segments = []
    for k in range(int(seconds * 10) + 1):
        t = np.arange(2400) / 24000
        tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * rng.uniform(0.05, 0.8)
        segments.append(tone if k % 2 else rng.uniform(0.0, 0.6) * rng.standard_normal(2400))
    return np.concatenate(segments)[: int(seconds * 24000)].astype(np.float32)


def assert_same_tokens(got: list[Any], expected: list[Any]) -> None:
    """Streamed frames `[B, 1 + dep_q, 1]` (None while the delays fill) equal step by step,
    and not a degenerate constant text stream."""
    assert [g is None for g in got] == [e is None for e in expected]
    for t, (g, e) in enumerate(zip(got, expected)):
        if e is not None:
            assert torch.equal(g, e), f"step {t}: {g[:, :, 0].tolist()} != {e[:, :, 0].tolist()}"
    text = torch.stack([g[:, 0, 0] for g in got if g is not None])
    assert len(set(text.flatten().tolist())) > 3


def run_session_to_end(engine: BatchedEngine, session: Any, pcm: np.ndarray) -> Any:
    """Attach `session`, push `pcm`, end it, and step `engine` until it finishes."""
    with engine:
        engine.attach(session)
        session.push_pcm(pcm)
        session.end()
        while not session.finished:
            engine.step()
    return session


def moshi_conditioned_lm(raw: dict, seed: int = 0) -> torch.nn.Module:
    """moshi's LMModel with the conditioners and fuser its loader builds from the config
    `raw`, random weights N(0, 0.2) drawn from `seed` (Hibiki's and Kyutai TTS's oracle)."""
    import copy

    from moshi.models.lm import LMModel
    from moshi.models.loaders import get_condition_fuser, get_conditioner_provider

    from dsm.models import LMConfig

    config = LMConfig.from_dict(raw)
    spec = copy.deepcopy({"conditioners": raw["conditioners"], "fuser": raw["fuser"]})
    torch.manual_seed(seed)
    model = LMModel(
        **config.moshi_kwargs(),
        condition_provider=get_conditioner_provider(config.dim, "cpu", spec),
        fuser=get_condition_fuser(spec),
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def write_tiny_model_dir(directory: Path, tokenizer_dir: Path, kind: str) -> Path:
    """A tiny random ASR or TTS model directory (its own tiny Mimi and tokenizer) in
    dsm's layout, for serving and API tests."""
    from dsm.codecs.testing import tiny_random_mimi
    from dsm.models import build_lm, preset
    from dsm.models.model_dir import write_model_dir
    from dsm.streams.testing import train_tiny_tokenizer

    codec = tiny_random_mimi(5 if kind == "asr" else 6)
    tokenizer = train_tiny_tokenizer(tokenizer_dir)
    if kind == "asr":
        config = preset("tiny-stt", num_layers=2, dim=64, text_card=tokenizer.vocab_size,
                        card=64, n_q=4, delays=[0] * 5, extra_heads_num_heads=0,
                        extra_heads_dim=0)
    else:
        config = preset("tiny-tts", num_layers=2, dim=64, text_card=tokenizer.vocab_size,
                        card=64, n_q=4, dep_q=4, delays=[0, 0, 2, 2, 2], depformer_dim=32)
    torch.manual_seed(0)
    lm = build_lm(config).eval()
    if kind == "asr":
        keep_text_pieces(lm, range(20, 26))
    write_model_dir(directory, lm, codec, tokenizer_dir / "tiny.model", kind,
                    text_delay_s=0.24, audio_delay_s=0.24)
    return directory
