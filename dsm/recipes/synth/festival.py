"""Festival speech with word times read from Festival's own utterance structure.

Festival adds English speakers that neither espeak nor flite has: the diphone voice ked
(festvox-kdlpc16k) and an HTS statistical voice (slt_hts, festvox-us-slt-hts: the same
speaker as flite's slt, made by another synthesis method), and on request the diphone
voice kal (festvox-kallpc16k). The corpus leaves kal out unless asked (`rough_voices`) for
the reason it leaves flite's kal16 out: breath noises before and after its words, which
the independent timing check in tests/recipes/test_synth.py finds as sound outside every word.

One `festival --pipe` process per engine takes Scheme requests on stdin. For each text it
synthesizes the utterance, saves the wave to a temporary file, and prints one line per
whitespace token of the text with the token's first phone start and last phone end,
read from the `Token` -> `Word` -> `SylStructure` -> `Segment` relations (words without
syllables, such as punctuation, are skipped). The waveform is made from exactly those
phone durations (diphone units are joined at them; the HTS engine writes the durations
it generated back into the segments), so the times are the synthesizer's own.

Speaking rate and pitch: diphone voices take `Duration_Stretch` and a scaled
`target_f0_mean` in their intonation parameters; the HTS voice takes the engine's own
speed (`-r`) and keeps its pitch (Festival's HTS module accepts a half-tone shift, `-fm`,
but the audio does not change: measured, same bytes). Every request selects its voice
again, which resets these, so a request does not depend on the ones before it (checked
by test: the same request gives the same bytes after other texts).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from dsm.recipes.synth.espeak import EngineUnavailable, Spoken, SynthesisError, token_spans

PROGRAM = "festival"
# speaker name -> (Festival voice function, Debian package that provides it, kind)
VOICES = {
    "ked": ("voice_ked_diphone", "festvox-kdlpc16k", "diphone"),
    "slt_hts": ("voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts", "hts"),
    "kal": ("voice_kal_diphone", "festvox-kallpc16k", "diphone"),
}
INSTALL_HINT = "apt-get install festival festvox-kdlpc16k festvox-us-slt-hts festvox-kallpc16k"

# Scheme run once per process: the request handler. Times are printed with %f (µs).
_PRELUDE = r"""
(define (dsm_token_times tok)
  (let ((start nil) (end nil))
    (mapcar
     (lambda (w)
       (if (item.relation.daughter1 w 'SylStructure)
           (begin
             (if (not start)
                 (set! start (item.feat w "R:SylStructure.daughter1.daughter1.R:Segment.p.end")))
             (set! end (item.feat w "R:SylStructure.daughtern.daughtern.R:Segment.end")))))
     (item.daughters tok))
    (if start
        (format t "DSM-TOKEN %f %f\n" start end)
        (format t "DSM-TOKEN -\n"))))

(define (dsm_speak text wav)
  (let ((u (utt.synth (eval (list 'Utterance 'Text text)))))
    (utt.save.wave u wav 'riff)
    (let ((tok (utt.relation.first u 'Token)))
      (while tok
        (dsm_token_times tok)
        (set! tok (item.next tok))))))

(define (dsm_diphone_voice voice stretch pitch)
  (eval (list voice))
  (Parameter.set 'Duration_Stretch stretch)
  (set! int_lr_params
        (cons (list 'target_f0_mean
                    (* pitch (car (cdr (assoc 'target_f0_mean int_lr_params)))))
              int_lr_params)))

(define (dsm_hts_voice voice speed)
  (eval (list voice))
  (Parameter.set 'Duration_Stretch 1.0)
  (set! hts_engine_params (append hts_engine_params (list (list "-r" speed)))))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine:
    """A `festival --pipe` process (started on first use) speaking the voices in VOICES."""

    def __init__(self, program: str = PROGRAM) -> None:
        path = shutil.which(program)
        if path is None:
            raise EngineUnavailable(
                f"Festival is not available: {program!r} is not on PATH. Install it and its "
                f"English voices with `{INSTALL_HINT}`.")
        self._program = path
        self._process: subprocess.Popen[str] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="dsm-festival-"))
        self._requests = 0
        self._checked: set[str] = set()

    def _start(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [self._program, "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, bufsize=1)
            self._send(_PRELUDE)
        return self._process

    def _send(self, scheme: str) -> list[str]:
        """Run `scheme`, then return the lines it printed (an error is a SynthesisError)."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        self._requests += 1
        marker = f"DSM-DONE {self._requests}"
        try:
            process.stdin.write(f'{scheme}\n(format t "{marker}\\n")\n(fflush nil)\n')
            process.stdin.flush()
        except BrokenPipeError as error:
            raise SynthesisError(f"festival exited (status {process.poll()})") from error
        lines = []
        while True:
            line = process.stdout.readline()
            if not line:
                raise SynthesisError(f"festival exited (status {process.wait()}) after: "
                                     + " | ".join(lines[-3:]))
            line = line.rstrip("\n")
            if line == marker:
                break
            lines.append(line)
        errors = [line for line in lines if "SIOD ERROR" in line or line.startswith("Error")]
        if errors:
            raise SynthesisError(f"festival: {errors[0]}")
        return lines

    def check_voice(self, voice: str) -> None:
        """Raise EngineUnavailable unless `voice` loads (names the package to install)."""
        if voice in self._checked:
            return
        if voice not in VOICES:
            raise EngineUnavailable(f"unknown Festival voice {voice!r}: expected one of "
                                    f"{', '.join(VOICES)}")
        function, package, _ = VOICES[voice]
        self._start()
        try:
            self._send(f"({function})")
        except SynthesisError as error:
            raise EngineUnavailable(f"Festival voice {voice!r} is not installed ({error}); "
                                    f"install it with `apt-get install {package}`") from error
        self._checked.add(voice)

    def speak(self, text: str, voice: str, stretch: float = 1.0, pitch: float = 1.0) -> Spoken:
        """Speak `text` with Festival voice `voice`; `stretch` > 1 is slower, `pitch` scales
        F0 (diphone voices; the HTS voice keeps its own)."""
        self.check_voice(voice)
        self._start()  # a no-op while the process lives; restarts it if it died
        function, _, kind = VOICES[voice]
        if kind == "hts":
            setup = f"(dsm_hts_voice '{function} {1.0 / stretch:.6f})"
        else:
            setup = f"(dsm_diphone_voice '{function} {stretch:.6f} {pitch:.6f})"
        wav = self._workdir / "speech.wav"
        lines = self._send(f"{setup}\n(dsm_speak {_scheme_string(text)} {_scheme_string(str(wav))})")
        onsets, ends = [], []
        for line in lines:
            fields = line.split()
            if len(fields) == 3 and fields[0] == "DSM-TOKEN":
                onsets.append(float(fields[1]))
                ends.append(float(fields[2]))
        expected = len(token_spans(text))
        if len(onsets) != expected:
            raise SynthesisError(
                f"festival made {len(onsets)} word tokens from {expected} in {text!r}")
        audio, sample_rate = sf.read(wav, dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        return Spoken(np.ascontiguousarray(audio), int(sample_rate), onsets, ends)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.stdin.close()  # type: ignore[union-attr]
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
