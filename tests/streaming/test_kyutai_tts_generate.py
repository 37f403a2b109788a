"""Kyutai's DSM TTS generation against moshi's `TTSModel.generate`, token for token.

The tiny model of tests/kyutai_tts.py (tts-1.6b-en_fr's flags) with a tiny 32-codebook
Mimi, a sentencepiece tokenizer and voice files in Kyutai's layout is written as a model
directory. dsm's streaming session (engine, text feeding, voice conditioning, audio delay)
gives, greedily in float32, the audio and text tokens of moshi's generate for several
sentences: every frame moshi returns, then the `max_delay` frames Kyutai's server adds.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from helpers import moshi_tiny_mimi_24k, varied_pcm
from kyutai_tts import (
    MAX_SPEAKERS,
    MODEL_ID,
    SCHEDULE,
    moshi_tts_lm,
    save_kyutai_lm,
    tts_raw,
    write_voice,
)

from dsm.cli import main as dsm_main
from dsm.codecs import save_codec
from dsm.models.voices import voice_suffix
from dsm.streaming.kyutai_tts import DEFAULT_VOICE
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.testing import train_tiny_tokenizer

SENTENCES = [
    "the cat sat on the mat",
    "a small dog ran to the door and back",
    "hello world",
]
AUDIO_DELAY_S = 0.32  # 4 frames


def write_kyutai_tts_dir(root: Path, raw: dict, reference: torch.nn.Module) -> Path:
    """A model directory as Kyutai's tts repos are laid out, plus a voices/ folder."""
    directory = root / "model"
    directory.mkdir(parents=True, exist_ok=True)
    save_kyutai_lm(reference, directory / "dsm_tts_tiny.safetensors")
    config = {**raw, "moshi_name": "dsm_tts_tiny.safetensors", "codec": "codec",
              "tokenizer_name": "tokenizer.model"}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "tokenizer.model").write_bytes((root / "tok" / "tiny.model").read_bytes())
    return directory


@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("kyutai-tts")
    tokenizer = train_tiny_tokenizer(root / "tok")
    raw = tts_raw(text_card=tokenizer.vocab_size)
    reference = moshi_tts_lm(raw)
    with torch.no_grad():  # a text head that hesitates between pad and new word
        weight = reference.text_linear.weight
        keep = torch.zeros(weight.shape[0], 1)
        keep[[0, 3]] = 1.0
        weight[0] = weight[3] + 0.3 * weight[0]
        weight.mul_(keep)
    directory = write_kyutai_tts_dir(root, raw, reference)
    reference_mimi, mimi = moshi_tiny_mimi_24k(root / "mimi.safetensors", n_q=32)
    save_codec(mimi, directory / "codec")
    suffix = voice_suffix(MODEL_ID)
    voices = [write_voice(directory / "voices" / "expresso" / f"v{i}.wav{suffix}", seed=10 + i)
              for i in range(2)]
    write_voice(directory / "voices" / f"{DEFAULT_VOICE}{suffix}", seed=30)
    return SimpleNamespace(root=root, directory=directory, raw=raw, reference=reference,
                           reference_mimi=reference_mimi, voices=voices)


def moshi_tts(tts: SimpleNamespace, n_q: int = 32, cfg_coef: float = 1.0):
    """moshi's TTSModel over the same weights (as `from_checkpoint_info` builds it)."""
    import sentencepiece
    from moshi.models.tts import StateMachine, TokenIds, TTSModel

    lm = tts.reference
    lm.dep_q = lm.n_q  # TTSModel.generate lowers it to n_q on its own model
    machine = StateMachine(TokenIds(lm.text_card + 1), second_stream_ahead=2, max_padding=8,
                           initial_padding=2)
    return TTSModel(
        lm=lm, mimi=SimpleNamespace(frame_rate=12.5),
        tokenizer=sentencepiece.SentencePieceProcessor(str(tts.directory / "tokenizer.model")),
        voice_suffix=voice_suffix(MODEL_ID), voice_repo="", machine=machine,
        delay_steps=round(AUDIO_DELAY_S * 12.5), temp=0.0, n_q=n_q, cfg_coef=cfg_coef)


def moshi_frames(tts: SimpleNamespace, text: str, voices: list[Path], *, n_q: int = 32,
                 cfg: float | None = 2.0, cfg_coef: float = 1.0) -> list[torch.Tensor]:
    model = moshi_tts(tts, n_q=n_q, cfg_coef=cfg_coef)
    entries = model.prepare_script([text], padding_between=1)
    attributes = model.make_condition_attributes(voices, cfg_coef=cfg)
    result = model.generate([entries], [attributes])
    assert result.end_steps[0] is not None
    return [frame[0, :, 0] for frame in result.frames]


def dsm_frames(directory: Path, text: str, voices: list[Path], *, n_q: int | None = None,
               cfg_alpha: float | None = 2.0, cfg_coef: float = 1.0) -> list[torch.Tensor]:
    model = load_model_dir(directory)
    engine = model.engine(1, temp=0.0, temp_text=0.0, n_q=n_q, cfg_coef=cfg_coef)
    names = [str(v) for v in voices]
    session = model.tts_session(voice=names if len(names) > 1 else names[0], cfg_alpha=cfg_alpha)
    with engine:
        engine.attach(session)
        session.push_text(text)
        session.end_text()
        while not session.finished:
            engine.step()
    return [torch.from_numpy(t) for t in session.tokens]


def assert_frames_equal(got: list[torch.Tensor], expected: list[torch.Tensor], max_delay: int) -> None:
    assert len(got) == len(expected) + max_delay  # Kyutai's server runs max_delay steps more
    for t, e in enumerate(expected):
        assert torch.equal(got[t].long(), e.long()), f"frame {t}: {got[t].tolist()} != {e.tolist()}"
    audio = torch.stack(expected)[:, 1:]
    assert (audio >= 0).any() and len(set(audio[audio >= 0].tolist())) > 5  # real audio


@pytest.mark.parametrize("text", SENTENCES)
def test_greedy_codes_equal_moshi_generate(tts, text) -> None:
    expected = moshi_frames(tts, text, tts.voices[:1])
    got = dsm_frames(tts.directory, text, tts.voices[:1])
    assert_frames_equal(got, expected, max(tts.raw["delays"]))


def test_two_speakers_and_a_pause_equal_moshi_generate(tts) -> None:
    text = 'the dog <break time="0.4s"/> ran to the door'
    expected = moshi_frames(tts, text, tts.voices, cfg=1.5)
    got = dsm_frames(tts.directory, text, tts.voices, cfg_alpha=1.5)
    assert_frames_equal(got, expected, max(tts.raw["delays"]))
    single = moshi_frames(tts, text, tts.voices[:1], cfg=1.5)
    assert any(not torch.equal(a, b) for a, b in zip(single, expected))  # the voices matter


def test_fewer_codebooks_than_the_depformer_equal_moshi_generate(tts) -> None:
    text = SENTENCES[1]
    expected = moshi_frames(tts, text, tts.voices[:1], n_q=16)
    got = dsm_frames(tts.directory, text, tts.voices[:1], n_q=16)
    assert got[0].shape == (1 + 16,)
    assert_frames_equal(got, expected, max(tts.raw["delays"]))


def test_streams_sharing_an_engine_equal_their_solo_runs(tts) -> None:
    """Two streams, their own voices and texts, in one batch: each as moshi alone."""
    model = load_model_dir(tts.directory)
    texts = [SENTENCES[0], SENTENCES[1]]
    sessions = [model.tts_session(voice=str(tts.voices[i])) for i in range(2)]
    with model.engine(2, temp=0.0, temp_text=0.0) as engine:
        engine.attach(sessions[0])
        sessions[0].push_text(texts[0])
        for _ in range(5):  # the second stream joins later
            engine.step()
        engine.attach(sessions[1])
        sessions[1].push_text(texts[1])
        for session in sessions:
            session.end_text()
        while not all(s.finished for s in sessions):
            engine.step()
    for i, session in enumerate(sessions):
        expected = moshi_frames(tts, texts[i], tts.voices[i:i + 1])
        got = [torch.from_numpy(t) for t in session.tokens]
        assert_frames_equal(got, expected, max(tts.raw["delays"]))


@pytest.fixture(scope="module")
def guided(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A Kyutai TTS model without CFG distillation (no "cfg" conditioner): guided by batch
    doubling with nulled conditions and no text, as moshi's TTSModel with cfg_coef != 1."""
    root = tmp_path_factory.mktemp("kyutai-tts-guided")
    tokenizer = train_tiny_tokenizer(root / "tok")
    base = tts_raw()
    conditioners = {k: v for k, v in base["conditioners"].items() if k != "cfg"}
    raw = tts_raw(text_card=tokenizer.vocab_size, conditioners=conditioners,
                  fuser={**base["fuser"], "sum": ["control"]})
    reference = moshi_tts_lm(raw, seed=3)
    directory = write_kyutai_tts_dir(root, raw, reference)
    reference_mimi, mimi = moshi_tiny_mimi_24k(root / "mimi.safetensors", n_q=32)
    save_codec(mimi, directory / "codec")
    voices = [write_voice(directory / "voices" / f"g{i}.wav{voice_suffix(MODEL_ID)}", seed=20 + i)
              for i in range(1)]
    return SimpleNamespace(root=root, directory=directory, raw=raw, reference=reference,
                           reference_mimi=reference_mimi, voices=voices)


def test_batch_doubling_guidance_equals_moshi_generate(guided) -> None:
    text = SENTENCES[0]
    expected = moshi_frames(guided, text, guided.voices, cfg=None, cfg_coef=2.0)
    got = dsm_frames(guided.directory, text, guided.voices, cfg_alpha=None, cfg_coef=2.0)
    assert_frames_equal(got, expected, max(guided.raw["delays"]))
    plain = moshi_frames(guided, text, guided.voices, cfg=None, cfg_coef=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(plain, expected))  # guidance acts
    model = load_model_dir(guided.directory)
    with pytest.raises(ValueError, match="cfg_coef"):
        model.tts_session(voice=str(guided.voices[0]), cfg_alpha=2.0)


def test_voice_names_resolve_like_kyutai_server_and_bad_voices_are_refused(tts, tmp_path) -> None:
    from dsm.models.voices import VoiceError

    model = load_model_dir(tts.directory)
    assert model.takes_voice
    named = model.tts_session(voice="expresso/v0.wav")  # voices/expresso/v0.wav.<model_id>...
    by_path = model.tts_session(voice=str(tts.voices[0]))
    assert torch.equal(named.conditions["speaker_wavs"].tensor,
                       by_path.conditions["speaker_wavs"].tensor)
    with pytest.raises(VoiceError, match="unknown voice 'expresso/nobody.wav'"):
        model.tts_session(voice="expresso/nobody.wav")
    with pytest.raises(VoiceError, match="unknown voice"):
        model.tts_session(voice="../voices/expresso/v0.wav")  # names stay in their folder
    with pytest.raises(VoiceError, match="at most 5"):
        model.tts_session(voice=[str(tts.voices[0])] * (MAX_SPEAKERS + 1))
    wrong_shape = write_voice(tmp_path / f"w.wav{voice_suffix(MODEL_ID)}", seed=1, dim=7)
    with pytest.raises(VoiceError, match="shape"):
        model.tts_session(voice=str(wrong_shape))
    other_model = write_voice(tmp_path / "w.wav.0badc0de@1.safetensors", seed=1)
    with pytest.raises(VoiceError, match="0badc0de@1"):
        model.tts_session(voice=str(other_model))
    with pytest.raises(ValueError, match="1.0, 1.5"):
        model.tts_session(voice=str(tts.voices[0]), cfg_alpha=9.0)
    with model.engine(1, temp=0.0, temp_text=0.0) as engine:
        assert engine.free_slots == 1  # nothing above took a slot


def moshi_audio(tts: SimpleNamespace, frames: list[torch.Tensor]) -> np.ndarray:
    """moshi's Mimi decoding of the frames from the audio delay on, as Kyutai's server."""
    delay = round(AUDIO_DELAY_S * 12.5)
    mimi = tts.reference_mimi
    with torch.no_grad(), mimi.streaming(1):
        pcm = [mimi.decode(f[1:].clamp(min=0)[None, :, None])[0, 0] for f in frames[delay:]]
    return np.clip(torch.cat(pcm).numpy(), -0.99, 0.99)


def test_speak_command_with_a_voice_writes_moshis_audio(tts, tmp_path, capsys) -> None:
    text = SENTENCES[1]
    out = tmp_path / "speech.wav"
    voice = "expresso/v1.wav"
    assert dsm_main(["speak", text, "--model", str(tts.directory), "--voice", voice,
                     "--temp", "0", "--cfg-alpha", "2", "-o", str(out)]) == 0
    words = [line.split()[-1] for line in capsys.readouterr().out.splitlines()]
    assert words == text.split()
    audio, rate = soundfile.read(out, dtype="float32")
    expected_frames = moshi_frames(tts, text, tts.voices[1:2])
    expected = moshi_audio(tts, expected_frames)
    max_delay = max(tts.raw["delays"])
    assert rate == 24000 and audio.size == expected.size + 1920 * max_delay
    diff = float(np.abs(audio[: expected.size] - expected).max())
    assert diff < 1e-4, diff  # 16-bit wav, dsm's Mimi against moshi's
    assert float(np.abs(expected).max()) > 1e-3, "silent audio"


def test_dsm_speak_with_a_voice_and_guidance_equals_moshi_generate(tts) -> None:
    import dsm

    text = SENTENCES[0]
    speech = dsm.speak(text, model=tts.directory, voice="expresso/v1.wav", cfg_alpha=2.0,
                       temp=0.0, temp_text=0.0, device="cpu", cuda_graph=False)
    assert [w[0] for w in speech.words] == text.split()
    expected = moshi_audio(tts, moshi_frames(tts, text, tts.voices[1:2]))
    diff = float(np.abs(speech.pcm[: expected.size] - expected).max())
    assert diff < 1e-4, diff
    with pytest.raises(ValueError, match="unknown voice"):
        dsm.speak(text, model=tts.directory, voice="expresso/nobody.wav", device="cpu")


def test_speak_command_refuses_what_a_model_does_not_take(tts, tmp_path, capsys) -> None:
    out = str(tmp_path / "x.wav")
    assert dsm_main(["speak", "hello", "--model", str(tts.directory), "--voice",
                     "expresso/nobody.wav", "-o", out]) == 2
    assert "unknown voice" in capsys.readouterr().err
    assert dsm_main(["speak", "hello", "--model", str(tts.directory), "--n-q", "40",
                     "--voice", "expresso/v0.wav", "-o", out]) == 2
    assert "n_q=40" in capsys.readouterr().err
    assert dsm_main(["speak", "hello", "--model", str(tts.directory), "--voice",
                     "expresso/nothing.wav", "-o", out]) == 2
    assert "unknown voice 'expresso/nothing" in capsys.readouterr().err


def test_dsm_serve_speaks_kyutai_tts_with_its_voices(tts) -> None:
    """`/api/tts_streaming` as Kyutai's clients use it: words in, moshi's audio out, the
    default voice or the `voice` query's; clients at once, each as if alone, and a client
    asking for an unknown voice gets a clear error without disturbing the others."""
    import asyncio

    from helpers import serving

    from dsm.streaming.serve.clients import RemoteError, stream_text_tts
    from dsm.streaming.serve.engine_service import load_engine_service

    service = load_engine_service("tts", tts.directory, 3, device="cpu", temp=0.0, temp_text=0.0)
    default = tts.directory / "voices" / f"{DEFAULT_VOICE}{voice_suffix(MODEL_ID)}"
    clients = [(SENTENCES[0], None, [default]), (SENTENCES[2], "expresso/v1.wav", tts.voices[1:2])]

    async def run() -> tuple[list, BaseException | None]:
        async with serving(None, service) as server:
            good = [stream_text_tts(server.url, text, params={} if voice is None else {"voice": voice})
                    for text, voice, _ in clients]
            bad = stream_text_tts(server.url, "hello", params={"voice": "expresso/nobody.wav"})
            *results, refused = await asyncio.gather(*good, bad, return_exceptions=True)
            return results, refused

    results, refused = asyncio.run(run())
    assert isinstance(refused, RemoteError) and "unknown voice" in str(refused), refused
    max_delay = max(tts.raw["delays"])
    for (text, _, voices), result in zip(clients, results):
        assert not isinstance(result, BaseException), result
        expected = moshi_audio(tts, moshi_frames(tts, text, voices))
        assert result.pcm.size == expected.size + 1920 * max_delay
        diff = float(np.abs(result.pcm[: expected.size] - expected).max())
        assert diff < 1e-5, diff
        assert [w.text for w in result.words] == text.split()


def test_the_depformer_is_skipped_while_the_audio_delay_runs(tts) -> None:
    model = load_model_dir(tts.directory)
    calls: list[int] = []
    step = model.lm.depformer_step

    def counted(k, hidden, prev):  # type: ignore[no-untyped-def]
        calls.append(k)
        return step(k, hidden, prev)

    model.lm.depformer_step = counted
    session = model.tts_session(voice="expresso/v0.wav")
    per_step = []
    with model.engine(1, temp=0.0, temp_text=0.0, n_q=8) as engine:
        engine.attach(session)
        session.push_text(SENTENCES[2])
        session.end_text()
        while not session.finished:
            before = len(calls)
            engine.step()
            per_step.append(len(calls) - before)
    delay = round(AUDIO_DELAY_S * 12.5)
    assert per_step[:delay] == [0] * delay
    assert set(per_step[delay:]) == {8}


@pytest.fixture(scope="module", params=["distilled", "batch-doubling"])
def prefixed(request, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """tts-0.75b-en-public's way: no speaker conditioning, 16 codebooks, the voice an audio
    prefix; "control" (and for the distilled flavour "cfg") conditioners fused by sum."""
    root = tmp_path_factory.mktemp("kyutai-tts-prefix")
    tokenizer = train_tiny_tokenizer(root / "tok")
    base = tts_raw()
    names = ["control", "cfg"] if request.param == "distilled" else ["control"]
    conditioners = {k: v for k, v in base["conditioners"].items() if k in names}
    raw = tts_raw(text_card=tokenizer.vocab_size, conditioners=conditioners, cross_attention=False,
                  fuser={"sum": names, "cross": [], "prepend": []}, n_q=16, dep_q=16,
                  delays=[0, 0] + [2] * 15, depformer_weights_per_step_schedule=SCHEDULE[:16])
    reference = moshi_tts_lm(raw, seed=5)
    directory = write_kyutai_tts_dir(root, raw, reference)
    reference_mimi, mimi = moshi_tiny_mimi_24k(root / "mimi.safetensors", n_q=16)
    save_codec(mimi, directory / "codec")
    voice = root / "voice.wav"
    soundfile.write(voice, varied_pcm(1.2), 24000, subtype="FLOAT")
    return SimpleNamespace(root=root, directory=directory, raw=raw, reference=reference,
                           reference_mimi=reference_mimi, voice=voice,
                           distilled=request.param == "distilled")


def test_an_audio_prefix_voice_equals_moshi_generate_with_prefixes(prefixed) -> None:
    text = SENTENCES[1]
    pcm, _ = soundfile.read(prefixed.voice, dtype="float32")
    with torch.no_grad():  # moshi's TTSModel.get_prefix
        codes = prefixed.reference_mimi.encode(torch.from_numpy(pcm)[None, None])[0, :, :-2]
    prefix = torch.cat([torch.full_like(codes[:1], -1), codes])
    cfg_coef = 1.0 if prefixed.distilled else 2.0  # guided by batch doubling otherwise
    cfg_label = 2.0 if prefixed.distilled else None
    model = moshi_tts(prefixed, n_q=16, cfg_coef=cfg_coef)
    entries = model.prepare_script([text], padding_between=1)
    result = model.generate([entries], [model.make_condition_attributes([], cfg_coef=cfg_label)],
                            prefixes=[prefix])
    expected = [frame[0, :, 0] for frame in result.frames]
    ours = load_model_dir(prefixed.directory)
    assert ours.takes_voice
    session = ours.tts_session(voice=str(prefixed.voice), cfg_alpha=cfg_label)
    assert torch.equal(session.audio_prefix, codes)  # dsm's Mimi codes the voice as moshi's
    with ours.engine(1, temp=0.0, temp_text=0.0, cfg_coef=cfg_coef) as engine:
        engine.attach(session)
        session.push_text(text)
        session.end_text()
        while not session.finished:
            engine.step()
    got = [torch.from_numpy(t) for t in session.tokens]
    assert_frames_equal(got, expected, max(prefixed.raw["delays"]))
    delay = round(AUDIO_DELAY_S * 12.5)
    assert torch.equal(torch.stack(got[delay:delay + 3])[:, 1], codes[0, :3])  # the voice first
    assert session.audio_frames == len(got) - delay - codes.shape[1]  # its audio not sent
    from dsm.models.voices import VoiceError

    with pytest.raises(VoiceError, match="audio file"):
        ours.tts_session(voice=str(prefixed.root / "missing.wav"))
