"""What a client chooses per stream: Kyutai's TTS query parameters (and POST JSON fields).

`/api/tts_streaming?voice=...&seed=...` and `POST /api/tts {"text": [...], "seed": ...}`
take the same fields as Kyutai's server. Values arrive as strings (a query) or JSON
values (a POST); either way each is checked here, and an unknown or malformed field is an
`OptionError` naming it (the handshake answers 400), never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MAX_SEED = 2**63 - 1


class OptionError(ValueError):
    """A request field that is unknown, or whose value is not what the field takes."""


@dataclass(frozen=True)
class StreamOptions:
    """Per-stream choices; None: the server's default (its model's sampling settings)."""

    voice: str | None = None
    cfg_alpha: float | None = None
    seed: int | None = None
    temperature: float | None = None  # 0: greedy
    top_k: int | None = None
    max_seq_len: int | None = None  # model steps at most

    @property
    def sampling(self) -> bool:
        """Whether the stream asks for its own sampling settings."""
        return self.temperature is not None or self.top_k is not None


# The fields of Kyutai's TTS query (its websocket) and of its POST body; `format` and
# `auth_id` are read by the server itself.
TTS_STREAMING_FIELDS = ("format", "auth_id", "voice", "seed", "temperature", "top_k",
                        "cfg_alpha", "max_seq_len")
TTS_POST_FIELDS = ("text", "voice", "seed", "temperature", "top_k", "cfg_alpha", "max_seq_len",
                   "return_timestamps")
ASR_STREAMING_FIELDS = ("auth_id",)


def check_fields(given: Mapping[str, object], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if "voices" in unknown:
        raise OptionError(f"{where}: several voices in one stream (voices=) are not supported; "
                          "give one voice=")
    if unknown:
        raise OptionError(f"{where}: unknown field(s) {', '.join(unknown)}; this endpoint "
                          f"takes {', '.join(allowed)}")


def _one(value: object, name: str) -> object:
    if isinstance(value, list):  # a query: ?seed=1&seed=2
        if len(value) != 1:
            raise OptionError(f"{name} is given {len(value)} times")
        return value[0]
    return value


def _number(value: object, name: str, kind: type) -> float | int:
    value = _one(value, name)
    if isinstance(value, bool):
        raise OptionError(f"{name} must be a number, got {value!r}")
    try:
        number = kind(value) if isinstance(value, str) else value
    except ValueError:
        raise OptionError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {str(value)[:40]!r}") from None
    if kind is int and isinstance(number, float) and number.is_integer():
        number = int(number)
    if not isinstance(number, int if kind is int else int | float):
        raise OptionError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {str(value)[:40]!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise OptionError(f"{name} must be finite, got {number}")
    return number


def parse_options(values: Mapping[str, object]) -> StreamOptions:
    """`StreamOptions` from a query (`parse_qs` lists of strings) or a JSON object."""
    options: dict[str, object] = {}
    if "voice" in values:
        voice = _one(values["voice"], "voice")
        if not isinstance(voice, str) or not voice.strip() or len(voice) > 512:
            raise OptionError(f"voice must be a name or path of 1 to 512 characters, got "
                              f"{str(voice)[:40]!r}")
        options["voice"] = voice
    if "seed" in values:
        seed = int(_number(values["seed"], "seed", int))
        if not 0 <= seed <= MAX_SEED:
            raise OptionError(f"seed must be in [0, 2**63), got {seed}")
        options["seed"] = seed
    if "temperature" in values:
        temperature = float(_number(values["temperature"], "temperature", float))
        if not 0.0 <= temperature <= 10.0:
            raise OptionError(f"temperature must be in [0, 10], got {temperature}")
        options["temperature"] = temperature
    if "top_k" in values:
        top_k = int(_number(values["top_k"], "top_k", int))
        if top_k < 0:
            raise OptionError(f"top_k must be >= 0, got {top_k}")
        options["top_k"] = top_k
    if "cfg_alpha" in values:
        cfg_alpha = float(_number(values["cfg_alpha"], "cfg_alpha", float))
        if not 0.0 <= cfg_alpha <= 20.0:
            raise OptionError(f"cfg_alpha must be in [0, 20], got {cfg_alpha}")
        options["cfg_alpha"] = cfg_alpha
    if "max_seq_len" in values:
        max_seq_len = int(_number(values["max_seq_len"], "max_seq_len", int))
        if max_seq_len < 1:
            raise OptionError(f"max_seq_len must be >= 1, got {max_seq_len}")
        options["max_seq_len"] = max_seq_len
    return StreamOptions(**options)  # type: ignore[arg-type]
