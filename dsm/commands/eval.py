"""Evaluate ASR, TTS, codec or translation outputs against a reference manifest.

References come from a JSONL manifest (`dsm data synth` writes them: audio, text, word
timings). Outputs come from a JSONL file given with --hyp, one object per utterance,
matched to the manifest by "id" (or by "audio" path, or by position when neither is set):

  asr          {"id": ..., "text": "the words", "words": [{"word": "the", "time": 0.92}, ...]}
               "time" is when the word was emitted, in seconds of input audio; with the
               manifest's word timings it gives the emission latency (time - true end).
  translation  {"id": ..., "text": "la traduction"}   (--manifest: the target-language one)
  codec        {"id": ..., "decoded": "decoded/0001.wav"}   (reference: the manifest audio)
  tts          {"id": ..., "wav": "tts/0001.wav", "transcript": "what an independent ASR
               model heard in it", "first_audio_s": 0.21}
               optionally "reference_transcript": what the same recognizer heard in the
               manifest's own audio (its WER is the recognizer's floor: reference_audio_wer)

Metrics: asr: WER and CER (jiwer; corpus figures pool the edits of all utterances), word
emission latency; translation: BLEU (sacrebleu); codec: SI-SNR, mel distance, STOI
(pystoi); tts: intelligibility WER/CER of the transcripts, time to first audio. Relative
paths in --hyp are taken from the hyp file's folder. Results are printed as a table and,
with --json, written as JSON (summary and per-utterance rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsm.recipes.data.manifest import ManifestError
from dsm.recipes.eval.evaluate import (
    KINDS,
    EvalError,
    format_table,
    load_references,
    model_outputs,
    read_vocabulary,
    run_eval,
)
from dsm.recipes.eval.pocketsphinx import NAME as POCKETSPHINX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to evaluate")
    parser.add_argument("--manifest", required=True,
                        help="reference JSONL manifest (for translation: the target language)")
    parser.add_argument("--hyp", help="outputs to score, JSONL (see the description above)")
    parser.add_argument("--model", metavar="REF", help="a model to produce the outputs, where "
                        "its runner is wired (instead of --hyp): a model directory or a Hugging "
                        "Face repo id (kyutai/stt-1b-en_fr[@REVISION]); for codec: a codec spec")
    parser.add_argument("--source-manifest", help="translation with --model: the source-language "
                        "manifest, paired by id (default: X.en.jsonl beside X.fr.jsonl)")
    parser.add_argument("--asr-model", metavar="REF", help="tts with --model: the independent "
                        "ASR model that transcribes the speech, a model directory or a Hugging "
                        "Face repo id (default: the shipped dsm/assets/asr), or "
                        f"'{POCKETSPHINX}': CMU PocketSphinx's US-English model, installed with "
                        "the package, an independent recognizer trained on real speech "
                        "(pip install pocketsphinx, or `make setup`)")
    parser.add_argument("--reference-audio", action="store_true", help="tts with --model: "
                        "also transcribe the manifest's own audio with the same recognizer and "
                        "report its WER and CER (reference_audio_wer, reference_audio_cer): the "
                        "recognizer's floor, against which the TTS figure is read")
    parser.add_argument("--json", dest="json_path", help="also write the results here as JSON")
    parser.add_argument("--vocabulary", nargs="+", metavar="FILE", default=None,
                        help="asr: also split the WER by reference words inside and outside "
                        "these texts' words (the model's training text: sentence files of "
                        "`dsm data text` or manifests): iv_wer, oov_wer, oov_rate")
    parser.add_argument("--per-utterance", action="store_true",
                        help="print one line per utterance after the summary")


def main(args: argparse.Namespace) -> int:
    try:
        outputs = None
        if args.reference_audio and (args.kind != "tts" or args.model is None):
            raise EvalError("--reference-audio applies to tts with --model (with --hyp, give "
                            "each output a 'reference_transcript')")
        if args.hyp is None:
            if args.model is None:
                raise EvalError("give --hyp FILE.jsonl with the outputs to score, or --model")
            rows, _ = load_references(args.kind, args.manifest)
            outputs = model_outputs(args.kind, args.model, rows, args.manifest,
                                    asr_model=args.asr_model,
                                    source_manifest=args.source_manifest,
                                    reference_audio=args.reference_audio)
        vocabulary = read_vocabulary(args.vocabulary) if args.vocabulary else None
        result, note = run_eval(args.kind, args.manifest, args.hyp, outputs, vocabulary)
    except (EvalError, ManifestError) as error:
        print(f"dsm eval: {error}", file=sys.stderr)
        return 2
    if note:
        print(f"dsm eval: {note}", file=sys.stderr)
    print(format_table(result, args.per_utterance))
    if args.reference_audio:
        print(f"reference_audio_*: {args.asr_model or 'dsm/assets/asr'} on the manifest's own "
              "audio, the recognizer's floor")
    if args.json_path:
        payload = {**result.to_json(), "manifest": args.manifest, "hyp": args.hyp,
                   "model": args.model}
        if args.kind == "tts" and args.model is not None:
            payload["asr_model"] = args.asr_model or "dsm/assets/asr"
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0
