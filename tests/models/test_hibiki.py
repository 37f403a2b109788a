"""Hibiki's and Hibiki-Zero's feature flags against moshi: the "description" lookup-table
conditioner fused by sum, conditioning-based guidance, grouped-query attention and
non-interleaved RoPE (Hibiki-Zero), the text-embedding detail and the end-of-input frame.

A tiny `moshi.models.lm.LMModel` is built with Hibiki's flags (16 audio rows, 8 generated
with an acoustic delay of 2, multi-linear depformer with per-step weights, a LUT
conditioner and the "sum" fuser); its random weights, saved in Kyutai's layout, load in
dsm. Logits agree within 1e-4 and greedy generation is token-exact with moshi's LMGen under
the same condition, with and without guidance.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from helpers import (
    assert_same_tokens,
    moshi_conditioned_lm,
    moshi_tiny_mimi_24k,
    run_session_to_end,
    varied_pcm,
)
from safetensors.torch import save_file

from dsm.cli import main as dsm_main
from dsm.models import LMConfig, LMConfigError, load_lm
from dsm.models.conditioners import ConditionError
from dsm.models.model_dir import ModelDirError, write_model_dir
from dsm.streaming import LMStreamer
from dsm.streaming.model_dir import load_model_dir
from dsm.streaming.translation import TranslationSession
from dsm.streams.testing import train_tiny_tokenizer

TOL = 1e-4
DESCRIPTIONS = ["very_bad", "bad", "neutral", "good", "very_good"]


def hibiki_raw(**fields: object) -> dict:
    """The shape of kyutai/hibiki's config.json, scaled down."""
    raw = dict(
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=40, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope", card=64, n_q=16,
        dep_q=8, text_card=100, existing_text_padding_id=3,
        delays=[0, 0] + [2] * 7 + [0] + [2] * 7,
        depformer_dim=32, depformer_num_heads=2, depformer_num_layers=2,
        depformer_dim_feedforward=64, depformer_multi_linear=True,
        depformer_weights_per_step=True, depformer_pos_emb="none",
        conditioners={"description": {"type": "lut", "lut": {
            "n_bins": 5, "dim": 16, "tokenizer": "noop", "possible_values": DESCRIPTIONS}}},
        fuser={"sum": ["description"], "cross": [], "prepend": []},
    )
    raw.update(fields)
    return raw


def moshi_hibiki(raw: dict) -> torch.nn.Module:
    """moshi's LMModel with the conditioner and fuser its loader builds from `raw`."""
    return moshi_conditioned_lm(raw, 0)


def conditions(model: torch.nn.Module, values: list[str]) -> dict:
    from moshi.conditioners import ConditionAttributes

    attributes = [ConditionAttributes(text={"description": v}, tensor={}) for v in values]
    return model.condition_provider.prepare_and_provide(attributes)


# Hibiki-Zero adds grouped-query attention and non-interleaved RoPE to Hibiki's flags.
FLAVOURS = {"hibiki": {}, "hibiki-zero": {"kv_repeat": 2, "positional_embedding": "rope_concat"}}


@pytest.fixture(scope="module", params=list(FLAVOURS))
def models(request, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[torch.nn.Module, torch.nn.Module]:
    raw = hibiki_raw(**FLAVOURS[request.param])
    reference = moshi_hibiki(raw)
    path = tmp_path_factory.mktemp("hibiki") / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    ours = load_lm(path, raw).eval()
    assert ours.config.kv_repeat == FLAVOURS[request.param].get("kv_repeat", 1)
    return reference, ours


def test_weights_load_in_kyutai_layout_with_conditioners_in_float32(models, tmp_path) -> None:
    reference, ours = models
    names = {k for k in ours.state_dict() if k.startswith("condition_provider.")}
    assert names == {k for k in reference.state_dict() if k.startswith("condition_provider.")}
    assert "condition_provider.conditioners.description.embed.weight" in names
    half = load_lm(_saved(reference, tmp_path), ours.config.to_dict(), dtype=torch.bfloat16)
    assert half.condition_provider.conditioners["description"].embed.weight.dtype == torch.float32
    assert half.text_emb.weight.dtype == torch.bfloat16


def _saved(model: torch.nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_condition_sum_equals_moshi_fuser(models) -> None:
    reference, ours = models
    values = ["very_good", "very_bad", "neutral"]
    expected = reference.fuser.get_sum(conditions(reference, values))
    got = ours.condition_sum([{"description": v} for v in values])
    assert got.shape == (3, 1, 64)
    assert (got - expected).abs().max().item() < 1e-6
    assert (got[0] - got[1]).abs().max().item() > 1e-3  # labels give different offsets
    absent = ours.condition_sum([{"description": None}])
    padding = ours.condition_provider.conditioners["description"].learnt_padding
    assert torch.equal(absent, padding.float())


def test_forward_logits_match_moshi_under_the_condition(models) -> None:
    reference, ours = models
    config = ours.config
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, config.card, (2, config.num_codebooks, 14), generator=g)
    codes[:, 0] = torch.randint(0, config.text_card, (2, 14), generator=g)
    values = ["very_good", "bad"]
    with torch.no_grad():
        expected = reference(codes, condition_tensors=conditions(reference, values))
        got = ours(codes, condition=ours.condition_sum([{"description": v} for v in values]))
        unconditioned_diff = (ours(codes, condition=torch.zeros(2, 1, 64)).logits
                              - got.logits).abs().nan_to_num().max().item()
    text_diff = (got.text_logits - expected.text_logits).abs().nan_to_num().max().item()
    audio_diff = (got.logits - expected.logits).abs().nan_to_num().max().item()
    assert torch.equal(got.mask, expected.mask)
    assert text_diff < TOL and audio_diff < TOL, (text_diff, audio_diff)
    assert unconditioned_diff > 1e-2  # the condition really reaches the logits


def test_a_conditioned_model_refuses_to_run_without_its_condition(models) -> None:
    _, ours = models
    codes = torch.zeros(1, ours.config.num_codebooks, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="conditioned"):
        ours(codes)
    with pytest.raises(ConditionError, match="very_good"):
        ours.condition_sum([{"description": "excellent"}])
    with pytest.raises(ConditionError, match="missing"):
        ours.condition_sum([{}])


def _inputs(config: LMConfig, steps: int, batch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    n_in = config.n_q - config.dep_q
    frames = [torch.randint(0, config.card, (batch, n_in, 1), generator=g) for _ in range(steps)]
    frames[steps - 8] = torch.full((batch, n_in, 1), config.card)  # Hibiki's end-of-input frame
    return frames


@pytest.mark.parametrize("cfg_coef", [1.0, 3.0], ids=["plain", "guided"])
def test_greedy_generation_equals_moshi_lmgen_under_the_condition(models, cfg_coef) -> None:
    from moshi.models.lm import LMGen

    reference, ours = models
    config = ours.config
    steps, batch = 30, 2
    inputs = _inputs(config, steps, batch)
    values = ["very_good", "good"]
    nulls = ["very_bad", "very_bad"]
    moshi_values = values + (nulls if cfg_coef != 1.0 else [])
    generator = LMGen(reference, use_sampling=False, cfg_coef=cfg_coef,
                      condition_tensors=conditions(reference, moshi_values))
    with generator.streaming(batch):
        expected = [generator.step(inputs[t]) for t in range(steps)]
    with LMStreamer(ours, batch, temp=0.0, temp_text=0.0, cfg_coef=cfg_coef) as streamer:
        for slot in range(batch):
            streamer.set_condition(
                slot, ours.condition_sum([{"description": values[slot]}]),
                ours.condition_sum([{"description": nulls[slot]}]) if cfg_coef != 1.0 else None,
            )
        got = [streamer.step(inputs[t]) for t in range(steps)]
    assert_same_tokens(got, expected)


def test_guidance_needs_the_null_condition(models) -> None:
    _, ours = models
    with LMStreamer(ours, 1, temp=0.0, temp_text=0.0, cfg_coef=2.0) as streamer:
        with pytest.raises(ValueError, match="null condition"):
            streamer.set_condition(0, ours.condition_sum([{"description": "very_good"}]))


def test_conditioner_config_errors_name_the_field() -> None:
    with pytest.raises(LMConfigError, match="fuser"):
        LMConfig.from_dict(hibiki_raw(fuser=None))
    with pytest.raises(LMConfigError, match="cross"):
        LMConfig.from_dict(hibiki_raw(fuser={"cross": ["description"]}))
    with pytest.raises(LMConfigError, match="'tensor'"):
        LMConfig.from_dict(hibiki_raw(conditioners={"speaker_wavs": {"type": "tensor"}},
                                      fuser={"sum": ["speaker_wavs"]}))
    with pytest.raises(LMConfigError, match="not a conditioner"):
        LMConfig.from_dict(hibiki_raw(fuser={"sum": ["speaker"]}))


# --- the whole pipeline: `dsm translate` against moshi's run_inference -----------------------

class RecordingSession(TranslationSession):
    """A translation session that keeps each output frame's raw text token."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tokens: list[int] = []

    def on_output(self, output):  # type: ignore[no-untyped-def]
        if output.tokens is not None:
            self.tokens.append(int(output.tokens[0]))
        return super().on_output(output)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny Hibiki model directory (Kyutai's LM layout, the tiny 24 kHz Mimi) and moshi's
    models with the same weights."""
    root = tmp_path_factory.mktemp("hibiki-dir")
    tokenizer = train_tiny_tokenizer(root / "tok")
    raw = hibiki_raw(n_q=8, dep_q=4, delays=[0, 0, 2, 2, 2, 0, 2, 2, 2],
                     text_card=tokenizer.vocab_size)
    reference = moshi_hibiki(raw)
    with torch.no_grad():  # text that follows the audio, and an EOS that comes
        reference.text_emb.weight.mul_(0.3)
        reference.text_linear.weight[EOS] = 1.02 * reference.text_linear.weight[51]
    lm_path = root / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(lm_path))
    reference_mimi, mimi = moshi_tiny_mimi_24k(root / "mimi.safetensors")
    directory = write_model_dir(root / "model", load_lm(lm_path, raw), mimi,
                                root / "tok" / "tiny.model", "translation", text_delay_s=0.16)
    config_file = directory / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "model_type": "hibiki"}))
    with torch.no_grad():  # what moshi's loader does to a Hibiki model (CheckpointInfo.get_moshi)
        reference.text_emb.weight[EOS] = reference.text_emb.weight[3]
    return SimpleNamespace(root=root, directory=directory, reference=reference,
                           reference_mimi=reference_mimi, pcm=varied_pcm(1.92))  # whole frames


EOS = 2


def moshi_translation(pipeline: SimpleNamespace, cfg_coef: float) -> list[int]:
    """Text tokens of moshi's run_inference for a Hibiki model, up to and with its EOS."""
    import sentencepiece
    from moshi.run_inference import InferenceState

    info = SimpleNamespace(model_type="hibiki", stt_config={})
    processor = sentencepiece.SentencePieceProcessor(str(pipeline.root / "tok" / "tiny.model"))
    state = InferenceState(info, pipeline.reference_mimi, processor, pipeline.reference, 1,
                           cfg_coef, "cpu", use_sampling=False)
    try:
        (text, _pcm), = state.run(torch.from_numpy(pipeline.pcm)[None, None])
    finally:  # run() leaves moshi's models streaming (streaming_forever)
        state.lm_gen._stop_streaming()
        pipeline.reference._stop_streaming()
        pipeline.reference_mimi._stop_streaming()
    return text.tolist()


def dsm_translation(directory: Path, pcm: np.ndarray, cfg_coef: float) -> RecordingSession:
    model = load_model_dir(directory)
    session = RecordingSession(
        model.tokenizer, sample_rate=model.codec.sample_rate, frame_size=model.codec.frame_size,
        frame_rate=model.frame_rate, text_delay=model.text_delay, max_delay=model.max_delay,
        end_of_input=True, eos_id=EOS)
    return run_session_to_end(model.engine(1, cfg_coef=cfg_coef), session, pcm)


@pytest.mark.parametrize("cfg_coef", [1.0, 3.0], ids=["plain", "guided"])
def test_translation_equals_moshi_run_inference_to_the_eos(pipeline, cfg_coef) -> None:
    expected = moshi_translation(pipeline, cfg_coef)
    session = dsm_translation(pipeline.directory, pipeline.pcm, cfg_coef)
    assert session.reached_eos
    assert session.tokens == expected
    source_frames = pipeline.pcm.size // 1920
    # It read the whole source and the end marker (output frames lag the input by the
    # max delay), ended on an EOS, and the EOS it wrote before the marker did not end it.
    assert len(expected) >= source_frames + 1 - max(pipeline.reference.delays)
    assert expected[-1] == EOS and EOS in expected[:-1]
    assert len(set(expected)) > 3


def test_an_eos_before_the_end_of_the_source_is_read_as_padding() -> None:
    from dsm.streaming.engine import END_OF_INPUT, SlotOutput

    tokenizer = train_tiny_tokenizer(Path(__import__("tempfile").mkdtemp()))
    session = TranslationSession(tokenizer, sample_rate=24000, frame_size=1920, frame_rate=12.5,
                                 text_delay=2, max_delay=2, end_of_input=True, eos_id=EOS)
    session.push_pcm(np.zeros(1920 * 3, dtype=np.float32))
    taken = [session.take_frame() for _ in range(2)]
    assert all(frame is not END_OF_INPUT for frame in taken)
    session.on_output(SlotOutput(tokens=np.array([EOS, 0, 0])))  # early: not the end
    assert not session.finished and not session.reached_eos
    session.end()
    session.take_frame()  # the last source frame
    assert session.take_frame() is END_OF_INPUT  # then the marker, once
    session.on_output(SlotOutput(tokens=np.array([EOS, 0, 0])))  # the model has not read it
    assert not session.finished
    assert session.take_frame() is not END_OF_INPUT
    assert session.ready()  # it goes on hearing silence ...
    session.on_output(SlotOutput(tokens=np.array([EOS, 0, 0])))
    assert session.reached_eos and session.finished  # ... until its EOS after the marker


def test_hibiki_model_directory_defaults(pipeline) -> None:
    model = load_model_dir(pipeline.directory)
    assert model.task == "translation" and model.model_type == "hibiki"
    assert model.conditions == {"description": "very_good"}
    assert model.null_conditions == {"description": "very_bad"}
    session = model.translation_session()
    assert session.end_of_input and session.eos_id == EOS
    assert torch.equal(model.lm.text_emb.weight[EOS], model.lm.text_emb.weight[3])


def test_translate_command_runs_hibiki_to_its_end(pipeline, capsys) -> None:
    path = pipeline.root / "source.wav"
    soundfile.write(path, pipeline.pcm, 24000, subtype="FLOAT")
    out = pipeline.root / "target.wav"
    assert dsm_main(["translate", str(path), "--model", str(pipeline.directory), "--json",
                     "-o", str(out), "--cfg-coef", "3"]) == 0
    words = json.loads(capsys.readouterr().out)
    expected = dsm_translation(pipeline.directory, pipeline.pcm, 3.0)
    assert isinstance(words, list)
    audio, rate = soundfile.read(out)
    assert rate == 24000 and audio.size == 1920 * len(expected.tokens)


def test_a_conditioned_model_of_unknown_type_is_refused(pipeline, tmp_path) -> None:
    import shutil

    copy_dir = tmp_path / "copy"
    shutil.copytree(pipeline.directory, copy_dir)
    config_file = copy_dir / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "model_type": "translation"}))
    with pytest.raises(ModelDirError, match="description"):
        load_model_dir(copy_dir)


def test_an_inactive_codec_slot_stays_as_it_was(pipeline) -> None:
    """The end-of-input frame: the encoder of that slot must not advance (as moshi's)."""
    model = load_model_dir(pipeline.directory)
    codec = model.codec
    frames = torch.from_numpy(pipeline.pcm[: 1920 * 6].copy()).view(6, 1, 1920)  # [T, 1, N]
    silence = torch.zeros(1, 1920)
    with torch.no_grad(), codec.streaming(2):
        first, second = [], []
        for t in range(3):  # both slots hear frames 0..2
            codes = codec.encode_step(torch.stack([frames[t], frames[t]]))
            first.append(codes[0])
            second.append(codes[1])
        # slot 0 hears frame 3 while slot 1 skips a step (given silence, inactive) ...
        codec.set_active(torch.tensor([True, False]))
        first.append(codec.encode_step(torch.stack([frames[3], silence]))[0])
        codec.set_active(None)
        # ... and then slot 1 hears frames 3..5, one step behind slot 0
        for t in range(3, 6):
            ahead = frames[t + 1] if t + 1 < 6 else silence
            codes = codec.encode_step(torch.stack([ahead, frames[t]]))
            first.append(codes[0])
            second.append(codes[1])
    first_codes, second_codes = torch.cat(first[:6], -1), torch.cat(second, -1)
    assert torch.equal(first_codes, second_codes)  # slot 1 as if the skipped step never was
