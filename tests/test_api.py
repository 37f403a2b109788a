"""The Python API (`dsm.transcribe`, `dsm.speak`, `dsm.translate`, `dsm.load`) and the
batch runner under it: the same results as the commands, whatever the input's form."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import write_tiny_model_dir

import dsm
from dsm.models.model_dir import ModelDirError
from dsm.streaming.batch import StreamFailed, run_streams
from dsm.streaming.events import WordEvent
from dsm.streaming.serve.protocol import SAMPLE_RATE


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-models")
    return {kind: write_tiny_model_dir(root / kind, root / f"tok-{kind}", kind)
            for kind in ("asr", "tts")}


def test_import_dsm_stays_light() -> None:
    probe = subprocess.run([sys.executable, "-c", "import sys, dsm; print(callable(dsm.load),"
                            " 'torch' in sys.modules)"], capture_output=True, text=True,
                           timeout=60)
    assert probe.stdout.split() == ["True", "True"]  # dsm.load imported dsm.api, and torch
    bare = subprocess.run([sys.executable, "-c", "import sys, dsm; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert bare.stdout.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dsm.nope  # noqa: B018


def test_transcribe_takes_paths_bytes_and_arrays_and_gives_the_command_s_words(
        model_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from dsm.cli import main

    pcm = (0.3 * np.random.default_rng(4).standard_normal(int(1.5 * SAMPLE_RATE))
           ).astype(np.float32)
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, pcm, SAMPLE_RATE, subtype="FLOAT")
    assert main(["transcribe", str(wav), "--model", str(model_dirs["asr"]), "--json",
                 "--device", "cpu"]) == 0
    command = json.loads(capsys.readouterr().out)
    assert len(command) >= 2, "the random model said too little"
    model = dsm.load(model_dirs["asr"], "asr", device="cpu")
    import soxr

    pcm16k = soxr.resample(pcm, SAMPLE_RATE, 16_000).astype(np.float32)
    one = dsm.transcribe(wav, model=model)
    several = dsm.transcribe([str(wav), wav.read_bytes(), pcm], model=model, batch_size=2)
    resampled = dsm.transcribe(pcm16k, model=str(model_dirs["asr"]), sample_rate=16_000,
                               device="cpu")
    assert [w.text for w in one.words] == [w["word"] for w in command]
    assert [round(w.start, 3) for w in one.words] == [w["start"] for w in command]
    assert one.text == " ".join(w["word"] for w in command)
    assert all(t == one for t in several)
    assert all(w.emitted >= w.start for w in one.words)
    assert resampled.words and resampled.words[0].text == one.words[0].text
    with pytest.raises(ModelDirError, match="is an ASR model; this needs a TTS one"):
        dsm.speak("hi", model=model)
    with pytest.raises(ValueError, match="mono"):
        dsm.transcribe(np.zeros((2, 100), np.float32), model=model)


def test_speak_gives_the_command_s_audio(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    from dsm.cli import main

    out = tmp_path / "out.wav"
    assert main(["speak", "the cat sat on the mat", "--model", str(model_dirs["tts"]),
                 "--out", str(out), "--device", "cpu"]) == 0
    command, rate = soundfile.read(out, dtype="float32")
    speech = dsm.speak("the cat sat on the mat", model=model_dirs["tts"], device="cpu")
    assert rate == speech.sample_rate
    assert [w for w, _, _ in speech.words] == "the cat sat on the mat".split()
    written = io.BytesIO()
    soundfile.write(written, speech.pcm, rate, format="WAV", subtype="PCM_16")
    assert np.array_equal(soundfile.read(io.BytesIO(written.getvalue()), dtype="float32")[0],
                          command)
    batch = dsm.speak(["the cat", "sat on the mat"], model=model_dirs["tts"], batch_size=2,
                      device="cpu")
    assert [[w for w, _, _ in s.words] for s in batch] == [["the", "cat"],
                                                           ["sat", "on", "the", "mat"]]
    with pytest.raises(ValueError, match="text 1 is empty"):
        dsm.speak(["fine", "  "], model=model_dirs["tts"], device="cpu")


class _FakeEngine:
    """Slots and steps without a model: a session says one word per step for `words` steps."""

    def __init__(self, slots: int) -> None:
        self.sessions: list[Any] = [None] * slots
        self.attached: list[int] = []

    @property
    def free_slots(self) -> int:
        return self.sessions.count(None)

    def attach(self, session: Any) -> None:
        self.sessions[self.sessions.index(None)] = session
        self.attached.append(session.index)

    def ready(self) -> bool:
        return any(s is not None and s.steps_left > 0 for s in self.sessions)

    def step(self) -> dict[Any, list[Any]]:
        out = {}
        for slot, session in enumerate(self.sessions):
            if session is None or session.steps_left <= 0:
                continue
            session.steps_left -= 1
            if session.fail_at == session.steps_left:
                session.error = "it broke"
            out[session] = [WordEvent(f"w{session.index}", 0.0)]
            if session.steps_left == 0 or session.error:
                session.finished = True
                self.sessions[slot] = None
        return out


class _FakeSession:
    def __init__(self, index: int, steps: int, fail_at: int | None = None) -> None:
        self.index, self.steps_left, self.fail_at = index, steps, fail_at
        self.finished, self.error = False, None


def test_run_streams_refills_freed_slots_keeps_order_and_raises_on_failure() -> None:
    engine = _FakeEngine(2)
    lengths = [5, 1, 3, 2]
    seen: list[int] = []
    results = run_streams(engine, 4, lambda i: _FakeSession(i, lengths[i]),
                          on_event=lambda i, _: seen.append(i))
    assert [len(r.events) for r in results] == lengths
    assert [r.events[-1].step for r in results] == lengths
    assert engine.attached == [0, 1, 2, 3]  # 2 took the slot 1 freed after one step
    assert sorted(seen) == sorted(i for i, n in enumerate(lengths) for _ in range(n))
    with pytest.raises(StreamFailed, match="stream 1 failed: it broke") as failed:
        run_streams(_FakeEngine(2), 3, lambda i: _FakeSession(i, 4, fail_at=2 if i == 1 else None))
    assert failed.value.index == 1
    with pytest.raises(StreamFailed, match="stalled"):
        run_streams(_FakeEngine(1), 1, lambda i: _FakeSession(i, 0))
