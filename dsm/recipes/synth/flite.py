"""flite speech with word times read from flite's own utterance structure (ctypes).

Choice of timing method: `flite_synth_text` returns the synthesized utterance, whose
`Segment` relation holds every phone with its end time, and whose `Token` -> `Word` ->
`SylStructure` (syllables -> phones) relations say which phones make which word. The
waveform is generated from exactly those phone durations (diphone voices concatenate units
at these boundaries; clustergen voices generate 5 ms frames per phone), so a word's onset
is the end of the phone before its first phone and its end is the end of its last phone.
Accuracy: the boundaries are the synthesizer's own, to its frame resolution (5 ms);
no guessing. A stop consonant after a pause starts with its silent closure, which the
corpus writer then moves to the audible burst (see `synth_corpus`).

Each whitespace token of the text maps to one flite `Token` (flite strips punctuation into
features, and keeps 'o'clock' whole); a token's onset is its first word's, its end its last
word's. Speaking rate is `duration_stretch`; pitch is `int_f0_target_mean` for diphone
voices (kal16) and `f0_shift` for clustergen voices (awb, slt); rms ignores both (its
pitch is fixed), which was measured: its median F0 stays at 101 Hz for either setting.

Only `struct cst_wave` ({type, sample_rate, num_samples, num_channels, samples}) and the
first two fields of `struct cst_voice` ({name, features}) are read from C memory; the rest
goes through libflite's functions.
"""

from __future__ import annotations

import ctypes

import numpy as np

from dsm.recipes.synth.espeak import EngineUnavailable, Spoken, SynthesisError, token_spans

LIBRARY = "libflite.so.1"
# flite voices usable for general English text (awb_time only knows clock times; kal is the
# 8 kHz version of kal16, the same speaker). The corpus uses awb, rms and slt, and kal16
# only on request (see synth_corpus for why).
VOICES = ("awb", "kal16", "rms", "slt")
DIPHONE_VOICES = ("kal16",)


class _Wave(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


_P = ctypes.c_void_p
_SIGNATURES = {
    "flite_synth_text": (_P, [ctypes.c_char_p, _P]),
    "utt_wave": (ctypes.POINTER(_Wave), [_P]),
    "utt_relation": (_P, [_P, ctypes.c_char_p]),
    "relation_head": (_P, [_P]),
    "item_next": (_P, [_P]),
    "item_daughter": (_P, [_P]),
    "ffeature_float": (ctypes.c_float, [_P, ctypes.c_char_p]),
    "feat_set_float": (None, [_P, ctypes.c_char_p, ctypes.c_float]),
    "get_param_float": (ctypes.c_float, [_P, ctypes.c_char_p, ctypes.c_float]),
    "delete_utterance": (None, [_P]),
}

_WORD_START = b"daughter1.R:SylStructure.daughter1.daughter1.R:Segment.p.end"
_WORD_END = b"daughtern.R:SylStructure.daughtern.daughtern.R:Segment.end"


class FliteEngine:
    """libflite with its English voices registered on first use (one instance per process)."""

    def __init__(self, library: str = LIBRARY) -> None:
        try:
            self._lib = ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
            ctypes.CDLL("libflite_usenglish.so.1", mode=ctypes.RTLD_GLOBAL)
            ctypes.CDLL("libflite_cmulex.so.1", mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            raise EngineUnavailable(
                f"flite is not available: cannot load {library} or its English language "
                f"libraries ({error}). Install it with `apt-get install flite`."
            ) from error
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(self._lib, name)
            function.restype, function.argtypes = restype, argtypes
        self._lib.flite_init()
        self._voices: dict[str, int] = {}
        self._default_f0: dict[str, float] = {}

    def _voice(self, name: str) -> int:
        if name not in self._voices:
            try:
                voice_lib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1", mode=ctypes.RTLD_GLOBAL)
            except OSError as error:
                raise EngineUnavailable(f"flite voice {name!r} is not installed ({error})") from error
            register = getattr(voice_lib, f"register_cmu_us_{name}")
            register.restype, register.argtypes = _P, [ctypes.c_char_p]
            voice = register(None)
            if not voice:
                raise EngineUnavailable(f"flite voice {name!r} failed to register")
            self._voices[name] = voice
            self._default_f0[name] = self._lib.get_param_float(
                self._features(voice), b"int_f0_target_mean", 100.0)
        return self._voices[name]

    @staticmethod
    def _features(voice: int) -> int:
        # struct cst_voice { const char *name; cst_features *features; ... }
        return ctypes.c_void_p.from_address(voice + ctypes.sizeof(ctypes.c_void_p)).value

    def speak(self, text: str, voice: str, stretch: float = 1.0, pitch: float = 1.0) -> Spoken:
        """Speak `text` with flite voice `voice`; `stretch` > 1 is slower, `pitch` scales F0."""
        lib = self._lib
        handle = self._voice(voice)
        features = self._features(handle)
        lib.feat_set_float(features, b"duration_stretch", float(stretch))
        if voice in DIPHONE_VOICES:
            lib.feat_set_float(features, b"int_f0_target_mean",
                               float(self._default_f0[voice] * pitch))
        else:
            lib.feat_set_float(features, b"f0_shift", float(pitch))
        utterance = lib.flite_synth_text(text.encode("utf-8"), handle)
        if not utterance:
            raise SynthesisError(f"flite failed on {text!r}")
        try:
            wave = lib.utt_wave(utterance).contents
            audio = np.ctypeslib.as_array(wave.samples, shape=(wave.num_samples,)).copy()
            sample_rate = int(wave.sample_rate)
            onsets, ends = [], []
            token = lib.relation_head(lib.utt_relation(utterance, b"Token"))
            while token:
                if lib.item_daughter(token):  # tokens that became no word are skipped
                    onsets.append(float(lib.ffeature_float(token, _WORD_START)))
                    ends.append(float(lib.ffeature_float(token, _WORD_END)))
                token = lib.item_next(token)
        finally:
            lib.delete_utterance(utterance)
        if len(onsets) != len(token_spans(text)):
            raise SynthesisError(
                f"flite made {len(onsets)} word tokens from {len(token_spans(text))} in {text!r}")
        return Spoken(audio.astype(np.float32) / 32768.0, sample_rate, onsets, ends)
