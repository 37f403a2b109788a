"""A loaded model directory (the format: dsm.models.model_dir): its LM, codec and tokenizer,
and the engine and sessions of its task.

A conditioned TTS model (`conditioners` with speaker_wavs / cfg / control) is Kyutai's DSM
TTS (tts-1.6b-en_fr, ...): `tts_session(voice=, cfg_alpha=)` gives a
`dsm.streaming.kyutai_tts.KyutaiTTSSession`, voices resolved in voices/ and in the cached
kyutai/tts-voices repo; `engine(n_q=)` generates fewer codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsm.models.model_dir import ModelDirError, codec_spec, read_audio, task_of

# Hibiki's conditions, as moshi's run_inference sets them: the label it is steered towards,
# and (with guidance) the one it is steered away from.
HIBIKI_CONDITIONS = {"description": "very_good"}
HIBIKI_NULL_CONDITIONS = {"description": "very_bad"}
# Hibiki's text EOS (sentencepiece eos id): the translation is complete.
HIBIKI_EOS_ID = 2
MAX_PREFIX_FRAMES = 256  # longest voice prefix of Kyutai's audio-prefix TTS (20 s at 12.5 Hz)
SAMPLING_KEYS = ("temp", "temp_text", "top_k", "top_k_text", "top_p", "top_p_text", "cfg_coef")


@dataclass
class ModelDir:
    """A loaded model directory: LM, codec, tokenizer and the task's timing."""

    path: Path
    task: str
    lm: Any
    codec: Any
    tokenizer: Any
    text_delay: int  # frames of text behind audio (ASR, translation)
    audio_delay: int  # frames of audio behind text (TTS)
    sampling: dict[str, Any] = field(default_factory=dict)
    model_type: str | None = None  # config.json's model_type, as written
    silence_prefix: int = 0  # samples of silence fed before the audio (stt_config)
    conditions: dict[str, str | None] | None = None  # a conditioned model's default conditions
    null_conditions: dict[str, str | None] | None = None  # ... and its guidance's opposite
    kyutai_tts: Any = None  # a Kyutai DSM TTS model's settings (streaming.kyutai_tts)

    @property
    def takes_voice(self) -> bool:
        """Whether the model speaks with a voice: Kyutai's TTS, by speaker conditioning (a
        voice file or name) or by an audio prefix (a sound file, tts-0.75b-en-public)."""
        return self.kyutai_tts is not None

    @property
    def frame_rate(self) -> float:
        return float(self.codec.frame_rate)

    @property
    def max_delay(self) -> int:
        return max(self.lm.config.delays)

    def engine(self, num_slots: int = 1, *, cuda_graph: bool = True, **sampling: Any) -> Any:
        """A `BatchedEngine` over this model (sampling: the directory's, then `sampling`).

        A Kyutai TTS model also takes `n_q`: how many audio codebooks to generate (default
        all of the model's), as moshi's TTSModel."""
        from dsm.streaming.engine import BatchedEngine

        settings = {"temp": 0.0, "temp_text": 0.0, **self.sampling, **sampling}
        n_q = settings.pop("n_q", None)
        if self.kyutai_tts is not None:
            dep_q = self.lm.config.dep_q
            if n_q is not None and not 0 < int(n_q) <= dep_q:
                raise ModelDirError(f"n_q={n_q}: this model generates 1..{dep_q} codebooks")
            settings["dep_q"] = dep_q if n_q is None else int(n_q)
            settings.setdefault("cfg_is_no_text", True)
            if settings["dep_q"] < dep_q:
                settings["input_fill"] = -1  # the codebooks not generated read "no token"
            if self.kyutai_tts.speaker_dim is None:  # voices are audio prefixes
                settings.setdefault("max_prefix", MAX_PREFIX_FRAMES)
        elif n_q is not None:
            raise ModelDirError("n_q (generated codebooks) applies to Kyutai's TTS models only")
        return BatchedEngine(self.lm, self.codec, num_slots, cuda_graph=cuda_graph,
                             conditions=self.conditions, null_conditions=self.null_conditions,
                             **settings)

    def guidance(self, cfg_alpha: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(engine options, session options) for guidance strength `cfg_alpha`: a
        CFG-distilled Kyutai model is told it per session; any other model is guided by
        batch doubling (the engine's `cfg_coef`)."""
        if cfg_alpha is None:
            return {}, {}
        if self.kyutai_tts is not None and self.kyutai_tts.cfg_distilled:
            return {}, {"cfg_alpha": float(cfg_alpha)}
        return {"cfg_coef": float(cfg_alpha)}, {}

    def asr_session(self, **kwargs: Any) -> Any:
        from dsm.streaming.asr import ASRSession

        return ASRSession(
            self.tokenizer, sample_rate=self.codec.sample_rate, frame_size=self.codec.frame_size,
            frame_rate=self.frame_rate, text_delay=self.text_delay, max_delay=self.max_delay,
            silence_prefix=self.silence_prefix, **kwargs,
        )

    def tts_session(self, *, voice: str | list[str] | None = None, cfg_alpha: float | None = None,
                    **kwargs: Any) -> Any:
        """A TTS session for this model: dsm's own, or Kyutai's (by the directory's config).

        `voice` (Kyutai's models with speaker conditioning): a voice name as Kyutai's server
        takes it, a voice file path, or a list of them (one per speaker); default Kyutai's
        default voice. `cfg_alpha`: the guidance a CFG-distilled model is told to follow
        (default 2.0, Kyutai's); models guided by batch doubling take `cfg_coef` on the
        engine instead. Bad voices raise `VoiceError` before any slot is taken.
        """
        if self.kyutai_tts is None:
            if voice is not None:
                from dsm.models.voices import VoiceError

                raise VoiceError(f"{self.path}: this model has no speaker conditioning; it "
                                 "takes no voice")
            if cfg_alpha is not None:
                raise ModelDirError(f"{self.path}: cfg_alpha applies to Kyutai's CFG-distilled "
                                    "TTS models; guide this one with the engine's cfg_coef")
            from dsm.streaming.tts import TTSSession

            return TTSSession(
                self.tokenizer, frame_rate=self.frame_rate, audio_delay=self.audio_delay, **kwargs
            )
        return self._kyutai_tts_session(voice, cfg_alpha, **kwargs)

    def _kyutai_tts_session(self, voice: str | list[str] | None, cfg_alpha: float | None,
                            **kwargs: Any) -> Any:
        from dsm.streaming.kyutai_tts import DEFAULT_VOICE, KyutaiTTSSession, nulled_conditions

        settings = self.kyutai_tts
        names: list[str] = []
        prefix = None
        if settings.speaker_dim is not None:
            names = [voice] if isinstance(voice, str) else list(voice or [DEFAULT_VOICE])
        elif voice is not None:
            prefix = self._voice_prefix(voice)
        if settings.cfg_distilled:
            cfg_alpha = 2.0 if cfg_alpha is None else cfg_alpha
        elif cfg_alpha is not None:
            raise ModelDirError(f"{self.path}: this model was not distilled for a cfg value; "
                                "guide it with the engine's cfg_coef (batch doubling)")
        conditions = settings.conditions([settings.resolve_voice(n) for n in names], cfg_alpha)
        self.lm.conditioning([conditions])  # bad shapes fail here, before a slot is taken
        session = KyutaiTTSSession(
            self.tokenizer, frame_rate=self.frame_rate, audio_delay=self.audio_delay,
            text_card=self.lm.config.text_card, conditions=conditions,
            null_conditions=nulled_conditions(conditions),
            second_stream_ahead=settings.second_stream_ahead,
            multi_speaker=settings.speaker_dim is not None, audio_prefix=prefix, **kwargs,
        )
        session.forced_audio_delay = self.audio_delay
        return session

    def _voice_prefix(self, voice: str | list[str]) -> torch.Tensor:
        """An audio-prefix model's voice: a sound file's codes `[K, P]`, without its last two
        frames (as moshi's TTSModel.get_prefix)."""
        from dsm.models.voices import VoiceError

        if not isinstance(voice, str):
            raise VoiceError(f"{self.path}: this model speaks with one voice (an audio prefix)")
        path = voice.removeprefix("file://")
        try:
            pcm = read_audio(path, self.codec.sample_rate)
        except ModelDirError as error:
            raise VoiceError(f"voice {voice!r}: this model takes a voice as an audio file "
                             f"({error})") from None
        device = next(self.lm.parameters()).device
        with torch.no_grad():
            codes = self.codec.encode(torch.from_numpy(pcm).to(device)[None, None])[0, :, :-2]
        if codes.shape[-1] < 1 or codes.shape[-1] > MAX_PREFIX_FRAMES:
            raise VoiceError(f"voice {voice!r}: {codes.shape[-1]} frames of audio prefix, this "
                             f"model takes 1..{MAX_PREFIX_FRAMES}")
        return codes.long()

    def translation_session(self, **kwargs: Any) -> Any:
        from dsm.streaming.translation import TranslationSession

        if self.model_type == "hibiki":
            kwargs.setdefault("end_of_input", True)
            kwargs.setdefault("eos_id", HIBIKI_EOS_ID)
        return TranslationSession(
            self.tokenizer, sample_rate=self.codec.sample_rate, frame_size=self.codec.frame_size,
            frame_rate=self.frame_rate, text_delay=self.text_delay, max_delay=self.max_delay,
            silence_prefix=self.silence_prefix, **kwargs,
        )


def load_model_dir(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> ModelDir:
    """Read a model directory (layout in the module docstring); errors name what is missing."""
    from dsm.codecs import load_codec
    from dsm.models import load_lm
    from dsm.streams.tokenizer import TextTokenizer

    directory = Path(path)
    if not directory.is_dir():
        raise ModelDirError(f"model directory not found: {directory}")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelDirError(f"{directory}: no config.json (not a model directory)")
    lm = load_lm(directory, device=device, dtype=dtype).eval()
    extras = dict(lm.config.extras)
    if dtype is None and extras.get("weights_dtype"):
        lm = lm.float()  # stored in half precision by `dsm ship --dtype` to save bytes
    task = task_of(extras, lm.config)
    tokenizer_file = directory / str(extras.get("tokenizer_name", "tokenizer.model"))
    if not tokenizer_file.is_file():
        raise ModelDirError(f"{directory}: tokenizer file {tokenizer_file.name} not found")
    tokenizer = TextTokenizer.load(tokenizer_file)
    codec = load_codec(codec_spec(directory, extras), device=device)
    codec.eval()
    frame_rate = float(codec.frame_rate)
    stt = extras.get("stt_config") or {}
    tts = extras.get("tts_config") or {}
    delay_s = float(stt.get("audio_delay_seconds", 0.5))
    prefix_s = float(stt.get("audio_silence_prefix_seconds", 0.0))
    if delay_s < 0 or prefix_s < 0:
        raise ModelDirError(f"{directory}: stt_config delays must not be negative")
    silence_prefix = round(prefix_s * codec.sample_rate)
    # Text lag behind the *padded* stream, rounded as a whole: with stt-2.6b-en's 1 s prefix
    # (12.5 frames) and 2.5 s delay that is 44 frames, 32 past the prefix's 12, as Kyutai's
    # server uses; without a prefix it is round(delay * frame rate) (stt-1b: 6).
    text_delay = round((delay_s + prefix_s) * frame_rate) - round(prefix_s * frame_rate)
    audio_delay = round(float(tts.get("audio_delay", 1.28)) * frame_rate)
    config = lm.config
    model_type = extras.get("model_type")
    conditions = null_conditions = None
    kyutai_tts = None
    if model_type == "hibiki":
        # moshi's loader: an EOS fed back reads as padding, so an early EOS changes nothing.
        with torch.no_grad():
            lm.text_emb.weight[HIBIKI_EOS_ID] = lm.text_emb.weight[tokenizer.pad_id]
        if lm.is_conditioned:
            conditions, null_conditions = dict(HIBIKI_CONDITIONS), dict(HIBIKI_NULL_CONDITIONS)
    elif lm.is_conditioned and task == "tts":
        from dsm.streaming.kyutai_tts import kyutai_tts_settings

        try:
            kyutai_tts = kyutai_tts_settings(directory, lm, extras)
        except ValueError as error:
            raise ModelDirError(str(error)) from None
        # moshi's TTSModel truncates (int), where dsm's own models round
        audio_delay = int(float(tts.get("audio_delay", 1.28)) * frame_rate)
    elif lm.is_conditioned:
        raise ModelDirError(
            f"{directory}: the LM is conditioned on {lm.condition_provider.names}, and dsm "
            f"knows the conditions to give only for model_type 'hibiki' (got {model_type!r})"
        )
    if tokenizer.vocab_size > config.text_card:
        raise ModelDirError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} pieces, the LM's text_card "
            f"is {config.text_card}"
        )
    if task == "tts" and config.delays[0] != 0:
        raise ModelDirError(f"{directory}: a TTS model's text row must have delay 0")
    n_in = config.n_q - config.dep_q
    if n_in > codec.num_codebooks or config.dep_q > codec.num_codebooks:
        raise ModelDirError(
            f"{directory}: the LM uses {max(n_in, config.dep_q)} audio codebooks, the codec "
            f"has {codec.num_codebooks}"
        )
    if task in ("asr", "translation") and n_in == 0:
        raise ModelDirError(f"{directory}: a {task} model needs audio input rows (n_q > dep_q)")
    if task == "tts" and config.dep_q == 0:
        raise ModelDirError(f"{directory}: a TTS model needs generated audio rows (dep_q > 0)")
    if task == "dialogue" and (config.dep_q == 0 or n_in == 0):
        raise ModelDirError(f"{directory}: a full-duplex (moshi) model both hears and speaks "
                            "audio (0 < dep_q < n_q)")
    gen = extras.get("lm_gen_config") or {}
    sampling = {k: gen[k] for k in SAMPLING_KEYS if k in gen}
    if kyutai_tts is not None:  # moshi's TTSModel samples text and audio at 0.6
        sampling = {"temp": 0.6, "temp_text": 0.6, **sampling}
    return ModelDir(directory, task, lm, codec, tokenizer, text_delay, audio_delay, sampling,
                    model_type=model_type, silence_prefix=silence_prefix, conditions=conditions,
                    null_conditions=null_conditions, kyutai_tts=kyutai_tts)


