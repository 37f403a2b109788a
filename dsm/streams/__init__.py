"""Streams: how time-aligned text and audio become one token tensor, and back.

- `tokenizer`: sentencepiece `TextTokenizer` (pad 3, word start 0 reserved).
- `text_stream`: the DSM text-stream convention (words with times <-> one token per
  frame), offline and incremental (`TextStreamDecoder`, which the ASR session runs).
- `tts_text`: the TTS text rules, shared by the TTS recipe and session (`TextFeeder`).
- `silence`: the one definition of silence (zeros; their codes from a stream's start).
- `patterns`: codebook layouts (parallel, delay, flatten, stack-and-delay).
- `spec`: stream specifications and each task's token-tensor rows.
"""
