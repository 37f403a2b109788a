"""Clients: `transcribe_remote`, `speak_remote` (file and --play), `dsm mic`, and the
messages users get when sounddevice / PortAudio is missing.

The server runs in a background thread with the scripted test doubles; the sound device
is a fake `sounddevice` module (a test double) that plays a known signal into the input
callback and records what the output callback is given.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.abc
import sys
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from dsm.commands import mic as cmd_mic
from dsm.streaming.serve import clients
from dsm.streaming.serve.protocol import FRAME_SIZE, SAMPLE_RATE
from dsm.streaming.serve.scripted_service import ScriptedASRService, ScriptedTTSService, ScriptWord
from dsm.streaming.serve.server import ServerConfig, StreamingServer

SCRIPT = [ScriptWord("good", 0.2, 0.5), ScriptWord("morning", 0.6, 1.1),
          ScriptWord("everyone", 1.2, 1.7)]


@contextmanager
def server_in_thread(**config: Any) -> Iterator[StreamingServer]:
    loop = asyncio.new_event_loop()
    holder: dict[str, StreamingServer] = {}
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = StreamingServer(ServerConfig(port=0, **config), ScriptedASRService(SCRIPT, 4),
                                 ScriptedTTSService(4))
        loop.run_until_complete(server.start())
        holder["server"] = server
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield holder["server"]
    finally:
        asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_transcribe_remote_reads_resamples_and_returns_timed_words(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    rate = 16_000
    soundfile.write(wav, 0.1 * np.random.default_rng(0).standard_normal(2 * rate), rate)
    seen: list[str] = []
    with server_in_thread(api_keys=["secret"]) as server:
        words = clients.transcribe_remote(server.url, wav, rtf=None, api_key="secret",
                                          on_word=lambda w: seen.append(w.text))
        with pytest.raises(Exception, match="401"):
            clients.transcribe_remote(server.url, wav, rtf=None, api_key="wrong")
    assert [w.text for w in words] == seen == ["good", "morning", "everyone"]
    assert [(w.start_time, w.stop_time) for w in words] == [(s.start, s.end) for s in SCRIPT]
    assert clients.load_audio(wav).shape == (2 * SAMPLE_RATE,)  # 16 kHz -> 24 kHz


def test_speak_remote_writes_a_24khz_wav(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    with server_in_thread() as server:
        result = clients.speak_remote(server.url, "streaming is fun", out_wav=out)
    pcm, rate = soundfile.read(out, dtype="float32")
    assert rate == SAMPLE_RATE and pcm.shape == (9 * FRAME_SIZE,)
    np.testing.assert_allclose(pcm, result.pcm, atol=1 / 32768)
    assert [w.text for w in result.words] == ["streaming", "is", "fun"]
    assert result.first_audio_s is not None and result.first_audio_s > 0
    with pytest.raises(ValueError, match="out_wav or play"):
        clients.speak_remote("ws://127.0.0.1:1", "x")


def test_speak_command_sends_its_voice_and_sampling_as_the_stream_query(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dsm.cli import main

    out = str(tmp_path / "out.wav")
    with server_in_thread() as server:
        assert main(["speak", "hi there", "--server", server.url, "--voice", "any.wav",
                     "--seed", "3", "-o", out]) == 0
        assert main(["speak", "hi", "--server", server.url, "--temp", "-1", "-o", out]) == 2
        assert "temperature" in capsys.readouterr().err  # the server read and refused it
    assert main(["speak", "hi", "--server", "ws://127.0.0.1:1", "--voice", "a", "--voice", "b",
                 "-o", out]) == 2
    assert "one --voice" in capsys.readouterr().err


class FakeSoundDevice(types.ModuleType):
    """Test double of `sounddevice`: an input stream that plays `signal` into the callback,
    an output stream that records what the callback writes."""

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__("sounddevice")
        self.signal = signal
        self.played: list[np.ndarray] = []
        self.opened: list[dict[str, Any]] = []
        fake = self

        class InputStream:
            def __init__(self, **kwargs: Any) -> None:
                fake.opened.append(kwargs)
                self.kwargs = kwargs
                self.running = False

            def __enter__(self) -> InputStream:
                self.running = True
                self.thread = threading.Thread(target=self._feed, daemon=True)
                self.thread.start()
                return self

            def _feed(self) -> None:
                block = self.kwargs["blocksize"]
                at = 0
                while self.running:
                    chunk = fake.signal[at:at + block]
                    if chunk.shape[0] < block:
                        chunk = np.zeros(block, dtype=np.float32)
                    self.kwargs["callback"](chunk[:, None], block, None, None)
                    at += block
                    time.sleep(0.004)

            def __exit__(self, *exc: object) -> None:
                self.running = False
                self.thread.join()

        class OutputStream:
            def __init__(self, **kwargs: Any) -> None:
                fake.opened.append(kwargs)
                self.kwargs = kwargs
                self.running = False

            def start(self) -> None:
                self.running = True
                self.thread = threading.Thread(target=self._pull, daemon=True)
                self.thread.start()

            def _pull(self) -> None:
                block = self.kwargs["blocksize"]
                while self.running:
                    out = np.zeros((block, 1), dtype=np.float32)
                    self.kwargs["callback"](out, block, None, None)
                    fake.played.append(out[:, 0].copy())
                    time.sleep(0.002)

            def stop(self) -> None:
                self.running = False
                self.thread.join()

            def close(self) -> None:
                pass

        self.InputStream = InputStream
        self.OutputStream = OutputStream

    def query_devices(self) -> str:
        return "  0 Fake microphone, ALSA (1 in, 0 out)"


def test_mic_prints_captions_live(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeSoundDevice(np.zeros(4 * SAMPLE_RATE, dtype=np.float32))
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with server_in_thread() as server:
        words = clients.run_mic(server.url, device=0, seconds=2.5)
    assert [w.text for w in words] == ["good", "morning", "everyone"]
    assert "good morning everyone" in capsys.readouterr().out
    assert fake.opened[0]["samplerate"] == SAMPLE_RATE and fake.opened[0]["device"] == 0
    assert fake.opened[0]["blocksize"] == FRAME_SIZE and fake.opened[0]["channels"] == 1


def test_speak_remote_plays_what_it_receives(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSoundDevice(np.zeros(0, dtype=np.float32))
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with server_in_thread() as server:
        result = clients.speak_remote(server.url, "hello world", play=True)
    played = np.concatenate(fake.played)
    # the device plays silence while it waits (underruns): every received sample must be
    # played, in order, with only zeros between them
    np.testing.assert_array_equal(played[played != 0], result.pcm[result.pcm != 0])
    assert np.count_nonzero(result.pcm) > 0.9 * result.pcm.shape[0]


class _PortAudioMissing(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_sounddevice_or_portaudio_gives_clear_messages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed
    with pytest.raises(RuntimeError, match=r"pip install 'dsm\[mic\]'"):
        clients.import_sounddevice()
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.setattr(sys, "meta_path", [_PortAudioMissing(), *sys.meta_path])
    with pytest.raises(RuntimeError, match="PortAudio library.*libportaudio2"):
        clients.import_sounddevice()
    args = argparse.Namespace(server=None, device=None, list_devices=True, api_key=None,
                              seconds=None)
    assert cmd_mic.main(args) == 1
    assert "libportaudio2" in capsys.readouterr().out


def test_mic_command_lists_devices_and_needs_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(np.zeros(1)))
    parser = argparse.ArgumentParser()
    cmd_mic.add_arguments(parser)
    assert cmd_mic.main(parser.parse_args(["--list-devices"])) == 0
    assert "Fake microphone" in capsys.readouterr().out
    assert cmd_mic.main(parser.parse_args([])) == 2
    assert "--server" in capsys.readouterr().out
