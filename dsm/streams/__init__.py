"""Streams: how time-aligned text and audio become one token tensor, and back.

- `tokenizer`: sentencepiece `TextTokenizer` (pad 3, word start 0 reserved).
- `alignment`: the DSM text-stream convention (words with times <-> one token per frame).
- `patterns`: codebook layouts (parallel, delay, flatten, stack-and-delay).
- `spec`: stream specifications and each task's token-tensor rows.
"""
