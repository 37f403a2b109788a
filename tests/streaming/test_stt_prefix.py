"""stt-2.6b-en end to end: the silence prefix and the text delay, against moshi's pipeline.

Kyutai's stt-2.6b-en is run by moshi's `run_inference` with `audio_silence_prefix_seconds`
of silence before the audio (1 s: 12.5 frames, so the frame grid shifts by half a frame) and
a text delay of 2.5 s (31.25 frames). Here a tiny model with its feature flags (32 frames'
of delay and 12.5 frames of prefix, with a Mimi of the real rates and tiny widths) runs through moshi's own
`InferenceState.run` (moshi's Mimi and LMGen, greedy) and through `dsm transcribe`'s path
(dsm's model directory, engine and ASR session): the text tokens are the same, and dsm's
word times are on the clock of the audio the user gave.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from helpers import moshi_tiny_mimi_24k, run_session_to_end, varied_pcm
from safetensors.torch import save_file

from dsm.cli import main as dsm_main
from dsm.models import LMConfig, load_lm
from dsm.models.model_dir import write_model_dir
from dsm.streaming.asr import ASRSession
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.testing import train_tiny_tokenizer

FRAME_RATE = 12.5
DELAY_S = 2.5  # stt-2.6b-en's stt_config
PREFIX_S = 1.0
def stt_2_6b_tiny(text_card: int) -> dict:
    """kyutai/stt-2.6b-en's config.json flags, tiny (4 codebooks of the small Mimi)."""
    return dict(
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=200,
        max_period=100_000.0, norm="rms_norm_f32", gating="silu", positional_embedding="rope",
        card=64, n_q=4, dep_q=0, text_card=text_card, delays=[0] * 5,
        existing_text_padding_id=3, depformer_dim=32, depformer_num_heads=2,
        depformer_num_layers=1, depformer_multi_linear=True, depformer_weights_per_step=True,
        depformer_pos_emb="none", model_type="stt",
        stt_config={"audio_delay_seconds": DELAY_S, "audio_silence_prefix_seconds": PREFIX_S},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("stt26")
    tokenizer = train_tiny_tokenizer(root / "tok")
    raw = stt_2_6b_tiny(tokenizer.vocab_size)
    config = LMConfig.from_dict(raw)
    from moshi.models.lm import LMModel

    torch.manual_seed(0)
    reference_lm = LMModel(**config.moshi_kwargs()).eval()
    with torch.no_grad():
        for p in reference_lm.parameters():
            p.normal_(0.0, 0.2)
    with torch.no_grad():  # text that follows the audio, with word starts (id 0) in it
        reference_lm.text_emb.weight.mul_(0.3)
        reference_lm.text_linear.weight[0] = 1.05 * reference_lm.text_linear.weight[91]
    lm_path = root / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in reference_lm.state_dict().items()}, str(lm_path))
    reference_mimi, mimi = moshi_tiny_mimi_24k(root / "mimi.safetensors")
    directory = write_model_dir(root / "model", load_lm(lm_path, config), mimi,
                                root / "tok" / "tiny.model", "asr")
    config_file = directory / "config.json"
    written = json.loads(config_file.read_text())
    written["stt_config"] = raw["stt_config"]
    config_file.write_text(json.dumps(written))
    pcm = varied_pcm(2.37)  # not whole frames
    return SimpleNamespace(root=root, directory=directory, reference_lm=reference_lm,
                           reference_mimi=reference_mimi, pcm=pcm, tokenizer=tokenizer)


def moshi_tokens(setup: SimpleNamespace) -> list[int]:
    """Text tokens of moshi's run_inference pipeline (its InferenceState.run), greedy."""
    import sentencepiece
    from moshi.run_inference import InferenceState

    tokens: list[int] = []
    info = SimpleNamespace(model_type="stt", stt_config={
        "audio_delay_seconds": DELAY_S, "audio_silence_prefix_seconds": PREFIX_S})
    processor = sentencepiece.SentencePieceProcessor(str(setup.root / "tok" / "tiny.model"))
    state = InferenceState(info, setup.reference_mimi, processor, setup.reference_lm, 1, 1.0,
                           "cpu", use_sampling=False,
                           on_text_hook=lambda t: tokens.append(int(t[0])))
    state.run(torch.from_numpy(setup.pcm)[None, None])
    return tokens


class RecordingSession(ASRSession):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tokens: list[int] = []
        self.events: list[object] = []

    def on_output(self, output):  # type: ignore[no-untyped-def]
        if output.tokens is not None:
            self.tokens.append(int(output.tokens[0]))
        events = super().on_output(output)
        self.events.extend(events)
        return events


def dsm_run(directory: Path, pcm: np.ndarray) -> RecordingSession:
    model = load_model_dir(directory)
    session = RecordingSession(
        model.tokenizer, sample_rate=model.codec.sample_rate, frame_size=model.codec.frame_size,
        frame_rate=model.frame_rate, text_delay=model.text_delay, max_delay=model.max_delay,
        silence_prefix=model.silence_prefix)
    return run_session_to_end(model.engine(1), session, pcm)


def test_the_model_directory_reads_the_prefix_and_the_delay(setup) -> None:
    model = load_model_dir(setup.directory)
    assert model.silence_prefix == 24000  # 1 s: 12.5 frames of 1920 samples
    assert model.text_delay == 32  # round(31.25 + 12.5) - round(12.5), as Kyutai's server


def test_tokens_equal_moshi_run_inference_with_the_silence_prefix(setup) -> None:
    expected = moshi_tokens(setup)
    session = dsm_run(setup.directory, setup.pcm)
    got = session.tokens
    # moshi steps every whole frame of prefix + audio + (delay + 1 s) padding; dsm stops after
    # its own flush (the delays plus one frame), which covers every frame holding audio.
    common = min(len(got), len(expected))
    audio_frames = math.ceil((24000 + setup.pcm.size) / 1920)
    assert common >= audio_frames + 32
    assert got[:common] == expected[:common]
    assert len(set(expected)) > 3  # words come out (not a constant stream)
    # Without the prefix the frames are cut elsewhere: the tokens differ (the test can fail).
    config_file = setup.directory / "config.json"
    raw = json.loads(config_file.read_text())
    try:
        config_file.write_text(json.dumps({**raw, "stt_config": {"audio_delay_seconds": DELAY_S}}))
        unprefixed = dsm_run(setup.directory, setup.pcm).tokens
    finally:
        config_file.write_text(json.dumps(raw))
    assert unprefixed[:common] != expected[:common]


def test_word_times_are_on_the_clock_of_the_given_audio(setup) -> None:
    session = dsm_run(setup.directory, setup.pcm)
    starts = [e.start_time for e in session.events if type(e).__name__ == "WordEvent"]
    assert starts
    # A word that starts at text position p is about padded time (p + 1) / rate - delay,
    # that is (p + 1) / rate - delay - prefix in the given audio: dsm is within half a frame.
    boundaries = [p for p, t in enumerate(session.tokens) if t == 0]
    exact = [(p + 1) / FRAME_RATE - DELAY_S - PREFIX_S for p in boundaries]
    for start in starts[1:]:
        assert min(abs(start - e) for e in exact) <= 0.5 / FRAME_RATE + 1e-9


def test_transcribe_command_runs_the_prefixed_model(setup, capsys) -> None:
    path = setup.root / "clip.wav"
    soundfile.write(path, setup.pcm, 24000, subtype="FLOAT")
    assert dsm_main(["transcribe", str(path), "--model", str(setup.directory), "--json"]) == 0
    words = json.loads(capsys.readouterr().out)
    session = dsm_run(setup.directory, setup.pcm)
    starts = [e.start_time for e in session.events if type(e).__name__ == "WordEvent"]
    assert [w["start"] for w in words] == pytest.approx(starts, abs=1e-3)
