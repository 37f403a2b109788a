"""Model directories (tiny random models written to a temp dir) and the local commands
`dsm transcribe`, `dsm speak`, `dsm translate` on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import keep_text_pieces

from dsm import cli
from dsm.codecs.testing import tiny_random_mimi
from dsm.models import build_lm, preset
from dsm.models.model_dir import ModelDirError, write_model_dir
from dsm.streaming.events import EndWordEvent, WordEvent
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.testing import train_tiny_tokenizer


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_tiny_tokenizer(root / "tok")
    vocab = tokenizer.vocab_size
    torch.manual_seed(0)
    asr = build_lm(preset("tiny-stt", num_layers=2, dim=64, text_card=vocab, card=64, n_q=4,
                          delays=[0] * 5, extra_heads_num_heads=1, extra_heads_dim=3)).eval()
    keep_text_pieces(asr, range(20, 26))
    tts = build_lm(preset("tiny-tts", num_layers=2, dim=64, text_card=vocab, card=64, n_q=4,
                          dep_q=4, delays=[0, 0, 2, 2, 2], depformer_dim=32)).eval()
    translation = build_lm(preset("tiny-tts", num_layers=2, dim=64, text_card=vocab, card=64,
                                  n_q=6, dep_q=3, delays=[0, 0, 1, 1, 0, 0, 0],
                                  depformer_dim=32)).eval()
    keep_text_pieces(translation, range(20, 26))
    model = root / "tok" / "tiny.model"
    return {
        "asr": write_model_dir(root / "asr", asr, tiny_random_mimi(1), model, "asr",
                               text_delay_s=0.24),
        "tts": write_model_dir(root / "tts", tts, tiny_random_mimi(1), model, "tts",
                               audio_delay_s=0.16),
        "translation": write_model_dir(root / "translation", translation, tiny_random_mimi(1),
                                       model, "translation", text_delay_s=0.16),
    }


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech16k.wav"
    rng = np.random.default_rng(3)
    soundfile.write(path, (0.3 * rng.standard_normal(int(1.5 * 16000))).astype(np.float32), 16000)
    return path


def test_model_dir_round_trip(model_dirs) -> None:
    asr = load_model_dir(model_dirs["asr"])
    assert asr.task == "asr" and asr.text_delay == 3 and asr.codec.sample_rate == 24000
    tts = load_model_dir(model_dirs["tts"])
    assert tts.task == "tts" and tts.audio_delay == 2 and tts.max_delay == 2
    assert load_model_dir(model_dirs["translation"]).task == "translation"


def test_bad_model_dirs_say_what_is_wrong(model_dirs, tmp_path) -> None:
    with pytest.raises(ModelDirError, match="not found"):
        load_model_dir(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(model_dirs["asr"], broken)
    (broken / "tokenizer.model").unlink()
    with pytest.raises(ModelDirError, match="tokenizer file tokenizer.model not found"):
        load_model_dir(broken)
    raw = json.loads((broken / "config.json").read_text())
    raw["model_type"] = "karaoke"
    (broken / "config.json").write_text(json.dumps(raw))
    shutil.copy(model_dirs["asr"] / "tokenizer.model", broken / "tokenizer.model")
    with pytest.raises(ModelDirError, match="model_type 'karaoke'"):
        load_model_dir(broken)


def _local_words(directory: Path, pcm: np.ndarray) -> list[dict]:
    model = load_model_dir(directory)
    words: list[dict] = []
    with model.engine(1) as engine:
        session = model.asr_session()
        engine.attach(session)
        for start in range(0, pcm.size, 5000):  # chunks: the same words as one push
            session.push_pcm(pcm[start : start + 5000])
        session.end()
        while engine.ready():
            for event in engine.step().get(session, []):
                if isinstance(event, WordEvent):
                    words.append({"word": event.text, "start": round(event.start_time, 3)})
                elif isinstance(event, EndWordEvent):
                    words[-1]["end"] = round(event.stop_time, 3)
    return words


def test_transcribe_command(model_dirs, speech_file, capsys) -> None:
    assert cli.main(["transcribe", str(speech_file), "--model", str(model_dirs["asr"]),
                     "--json"]) == 0
    words = json.loads(capsys.readouterr().out)
    assert words, "the random model said nothing"
    assert all(set(w) == {"word", "start", "end"} and w["end"] >= w["start"] for w in words)
    from dsm.models.model_dir import read_audio

    assert words == _local_words(model_dirs["asr"], read_audio(speech_file, 24000))
    assert cli.main(["transcribe", str(speech_file), "--model", str(model_dirs["asr"])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[1] for line in lines] == [w["word"] for w in words]


def test_transcribe_bad_input(model_dirs, tmp_path, capsys) -> None:
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 24000)
    assert cli.main(["transcribe", str(empty), "--model", str(model_dirs["asr"])]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli.main(["transcribe", str(tmp_path / "missing.wav"),
                     "--model", str(model_dirs["asr"])]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["transcribe", str(empty), "--model", str(model_dirs["tts"])]) == 2
    assert "not a speech-to-text" in capsys.readouterr().err


def test_speak_command(model_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "out.wav"
    assert cli.main(["speak", "the cat sat", "-o", str(out), "--model",
                     str(model_dirs["tts"])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[2] for line in lines] == ["the", "cat", "sat"]
    audio, rate = soundfile.read(out)
    assert rate == 24000 and audio.size % 1920 == 0
    assert audio.size / rate >= float(lines[-1].split()[1])  # covers the last word's span
    assert cli.main(["speak", "   ", "-o", str(out), "--model", str(model_dirs["tts"])]) == 2
    assert "empty" in capsys.readouterr().err


def test_own_tts_models_take_no_voice(model_dirs, tmp_path, capsys) -> None:
    from dsm.models.voices import VoiceError
    from dsm.streaming.model_dir import load_model_dir

    out = str(tmp_path / "out.wav")
    assert cli.main(["speak", "the cat", "-o", out, "--model", str(model_dirs["tts"]),
                     "--voice", "expresso/ex03.wav"]) == 2
    assert "takes no voice" in capsys.readouterr().err
    model = load_model_dir(model_dirs["tts"])
    assert not model.takes_voice
    with pytest.raises(VoiceError, match="no speaker conditioning"):
        model.tts_session(voice="expresso/ex03.wav")


def test_translate_command(model_dirs, speech_file, tmp_path, capsys) -> None:
    out = tmp_path / "target.wav"
    assert cli.main(["translate", str(speech_file), "--model", str(model_dirs["translation"]),
                     "-o", str(out), "--json"]) == 0
    words = json.loads(capsys.readouterr().out)
    assert isinstance(words, list)
    audio, rate = soundfile.read(out)
    assert rate == 24000 and audio.size >= 1.5 * 24000


def test_step_events_carry_the_vad_heads(model_dirs) -> None:
    from dsm.streaming.events import StepEvent

    model = load_model_dir(model_dirs["asr"])
    with model.engine(1) as engine:
        session = model.asr_session(step_events=True)
        engine.attach(session)
        session.push_pcm(np.zeros(1920 * 4, np.float32))
        steps = []
        while engine.ready() and len(steps) < 4:
            steps += [e for e in engine.step().get(session, []) if isinstance(e, StepEvent)]
        vad = engine.streamer.extra_probs[0]  # [heads, classes] of the last step
    assert [s.step_idx for s in steps] == [1, 2, 3, 4]
    assert len(steps[-1].prs) == 1 and 0.0 < steps[-1].prs[0] < 1.0
    assert steps[-1].prs[0] == pytest.approx(float(vad[0, 0]))
    assert steps[-1].buffered_pcm == 0


def test_tts_audio_is_the_codec_decoding_of_its_frames_from_the_audio_delay(model_dirs) -> None:
    """The first `audio_delay` frames are not audio: the slot's decoder starts afresh after
    them, so the streamed pcm equals an offline decode of the real frames alone, even with
    another stream running next to it."""
    from dsm.streaming.events import AudioEvent

    model = load_model_dir(model_dirs["tts"])
    recorded: list[np.ndarray] = []
    with model.engine(2) as engine:
        other = model.tts_session(seed=5)
        engine.attach(other)
        other.push_text("bonjour marie antoine est noir")
        other.end_text()
        for _ in range(3):
            engine.step()
        session = model.tts_session()
        original = session.on_output

        def record(output):
            if output.tokens is not None:
                recorded.append(output.tokens.copy())
            return original(output)

        session.on_output = record  # type: ignore[method-assign]
        engine.attach(session)
        session.push_text("the cat sat on the mat")
        session.end_text()
        pcm = []
        while engine.ready() and not session.finished:
            pcm += [e.pcm for e in engine.step().get(session, []) if isinstance(e, AudioEvent)]
    codes = torch.tensor(np.stack(recorded)[model.audio_delay :, 1:]).T[None]  # [1, dep_q, T]
    offline = model.codec.decode(codes)[0, 0].numpy()
    streamed = np.concatenate(pcm)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-4


def test_step_events_only_for_a_model_with_vad_heads(model_dirs) -> None:
    """Kyutai's server sends Step only when the model has VAD heads (its clients read
    prs[2] and crash on an empty list)."""
    from dsm.streaming.events import StepEvent

    model = load_model_dir(model_dirs["translation"])  # no extra heads
    with model.engine(1) as engine:
        session = model.translation_session(step_events=True)
        engine.attach(session)
        session.push_pcm(np.zeros(1920 * 4, np.float32))
        events = []
        for _ in range(4):
            events += engine.step().get(session, [])
    assert events and not any(isinstance(e, StepEvent) for e in events)


def test_a_slot_reused_after_non_finite_state_gives_a_fresh_streams_words(model_dirs) -> None:
    """Absurd samples are refused before the codec; and a slot's whole state, KV caches
    included, is reset on attach, so a poisoned slot cannot pass NaN to the next stream."""
    from dsm.streaming.asr import AudioInputError

    model = load_model_dir(model_dirs["asr"])
    pcm = (0.3 * np.random.default_rng(2).standard_normal(1920 * 10)).astype(np.float32)
    fresh = _local_words(model_dirs["asr"], pcm)
    with model.engine(1) as engine:
        hostile = model.asr_session()
        engine.attach(hostile)
        with pytest.raises(AudioInputError, match="peak of 1e\\+20"):
            hostile.push_pcm(np.full(1920, 1e20, np.float32))
        with pytest.raises(AudioInputError, match="int16"):
            hostile.push_pcm(np.full(1920, 1000.0, np.float32))
        hostile.push_pcm(pcm[:1920 * 3])
        for _ in range(3):
            engine.step()
        # what a NaN that got through would leave behind, in every cache of the slot
        for module in list(model.lm.modules()) + list(model.codec.modules()):
            state = getattr(module, "_streaming_state", None)
            for value in (vars(state) if state is not None else {}).values():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    value.fill_(float("nan"))
        engine.detach(hostile)
        session = model.asr_session()
        engine.attach(session)
        session.push_pcm(pcm)
        session.end()
        events = []
        while engine.ready():
            events += engine.step().get(session, [])
    words = [e.text for e in events if type(e).__name__ == "WordEvent"]
    assert words == [w["word"] for w in fresh] and words
