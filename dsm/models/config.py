"""`LMConfig`: the multistream LM's shape, read from and written to Kyutai's config.json.

Field names are Kyutai's (`dim`, `n_q`, `dep_q`, `delays`, `depformer_*`, ...), so a
published config.json loads as is and a config written here loads in `moshi`. Loader-level
keys of that file (`moshi_name`, `tokenizer_name`, `stt_config`, `lm_gen_config`, ...) and
dsm's model-directory keys (`codec`, `weights_dtype`, ...) are kept untouched in `extras` and
written back. Any other key is refused by name: a moshi argument dsm does not implement
must not load and silently compute something else. Two fields are dsm's own: `audio_heads`
("depformer", Kyutai's depth transformer, or "parallel": one linear head per generated
codebook, used with a codebook pattern) and `max_seq_len` (KV capacity when `context` is
None). Absent optional fields take the values `moshi.models.lm.LMModel` would use; absent
`depformer_*` settings inherit the temporal transformer's, as in moshi.

Every problem raises `LMConfigError` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dsm.modules.norm import NORM_KINDS
from dsm.modules.transformer import GATING_ACTIVATIONS, POSITIONAL_EMBEDDINGS

AUDIO_HEADS = ("depformer", "parallel")
# Keys of Kyutai's config.json that configure the loader, not the LM: kept in `extras`.
LOADER_KEYS = (
    "moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name", "model_type",
    "lm_gen_config", "tts_config", "stt_config", "model_id", "quantize", "depformer_causal",
    "gradient_checkpointing",
)
# Keys dsm's own model directories add (models/model_dir.py, recipes/ship.py): kept too.
MODEL_DIR_KEYS = ("codec", "codec_fingerprint", "weights_dtype")
# Conditioner types and fuser methods dsm implements (models/conditioners.py).
CONDITIONER_TYPES = ("lut", "tensor")
FUSER_METHODS = ("sum", "cross")
# Settings of the "tensor" conditioner (Kyutai's speaker embeddings) dsm knows.
TENSOR_CONDITIONER_KEYS = ("dim", "force_linear", "pad_empty", "output_bias", "learn_padding")
# Features of moshi's LMModel that dsm does not implement: refused when switched on.
UNSUPPORTED = {
    "lora": lambda v: bool(v),
}
REQUIRED = ("dim", "num_heads", "num_layers", "hidden_scale", "card", "n_q", "dep_q", "text_card", "delays")


class LMConfigError(ValueError):
    """A config.json field is missing, of the wrong type or inconsistent with another."""


@dataclass
class LMConfig:
    # temporal transformer
    dim: int
    num_heads: int
    num_layers: int
    hidden_scale: float
    # streams
    card: int
    n_q: int
    dep_q: int
    text_card: int
    delays: list[int]
    context: int | None = None
    max_period: float = 10_000.0
    norm: str = "layer_norm"
    gating: str = "none"
    positional_embedding: str = "sin"
    causal: bool = True
    kv_repeat: int = 1  # query heads per key/value head (GQA); the depformer uses it too
    layer_scale: float | None = None
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    text_card_out: int | None = None
    norm_emb: bool = False
    bias_proj: bool = False
    demux_second_stream: bool = False
    extra_heads_num_heads: int = 0
    extra_heads_dim: int = 6
    # conditioning (Kyutai's `conditioners` / `fuser`; see dsm.models.conditioners)
    cross_attention: bool = False  # a cross-attention block in every temporal layer
    conditioners: dict[str, Any] | None = None
    fuser: dict[str, Any] | None = None
    # depth transformer (Kyutai's "depformer")
    depformer_dim: int = 256
    depformer_num_heads: int | None = None
    depformer_num_layers: int | None = None  # None: num_layers
    depformer_dim_feedforward: int | None = None  # None: int(hidden_scale * depformer_dim)
    depformer_multi_linear: bool = False
    depformer_weights_per_step: bool = False
    depformer_weights_per_step_schedule: list[int] | None = None
    depformer_low_rank_embeddings: int | None = None
    depformer_pos_emb: str = "sin"
    depformer_norm: str | None = None  # per-codebook norm before each output linear
    depformer_max_period: float | None = None  # None: max_period
    depformer_gating: str | None = None  # None: gating
    depformer_layer_scale: float | None = None
    depformer_context: int | None = None  # written by Kyutai; moshi ignores it (depth = dep_q)
    # dsm's own
    audio_heads: str = "depformer"
    max_seq_len: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.depformer_num_layers is None:
            self.depformer_num_layers = self.num_layers
        if self.depformer_max_period is None:
            self.depformer_max_period = self.max_period
        if self.depformer_gating is None:
            self.depformer_gating = self.gating
        self.validate()

    # --- derived shapes -------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        """Rows of the token tensor: text, then n_q audio codebooks."""
        return 1 + self.n_q

    @property
    def has_depformer(self) -> bool:
        return self.dep_q > 0 and self.audio_heads == "depformer"

    @property
    def text_out_card(self) -> int:
        return self.text_card if self.text_card_out is None else self.text_card_out

    @property
    def dim_feedforward(self) -> int:
        """Kyutai's nominal FFN size of the temporal transformer (before gating shrinks it)."""
        return int(self.hidden_scale * self.dim)

    @property
    def depformer_feedforward(self) -> int:
        if self.depformer_dim_feedforward is not None:
            return self.depformer_dim_feedforward
        return int(self.hidden_scale * self.depformer_dim)

    @property
    def num_depformer_in(self) -> int:
        """How many `depformer_in` linears Kyutai's layout holds (it has them even at dep_q 0)."""
        if self.audio_heads != "depformer":
            return 0
        if not self.depformer_multi_linear:
            return 1
        if self.depformer_weights_per_step_schedule:
            return max(self.depformer_weights_per_step_schedule) + 1
        return self.dep_q

    # --- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        def fail(name: str, why: str) -> LMConfigError:
            return LMConfigError(f"LMConfig field '{name}': {why}")

        for name in ("dim", "num_heads", "num_layers", "card", "text_card", "depformer_dim"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise fail(name, f"must be a positive integer, got {value!r}")
        for name in ("n_q", "dep_q", "extra_heads_num_heads", "existing_text_padding_id",
                     "existing_text_end_padding_id"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise fail(name, f"must be a non-negative integer, got {value!r}")
        if not isinstance(self.hidden_scale, (int, float)) or self.hidden_scale <= 0:
            raise fail("hidden_scale", f"must be a positive number, got {self.hidden_scale!r}")
        if self.dim % self.num_heads:
            raise fail("num_heads", f"{self.num_heads} does not divide dim {self.dim}")
        if not _is_int(self.kv_repeat) or self.kv_repeat < 1 or self.num_heads % self.kv_repeat:
            raise fail("kv_repeat", f"{self.kv_repeat!r} must be a positive divisor of num_heads "
                                    f"{self.num_heads}")
        if self.dep_q > self.n_q:
            raise fail("dep_q", f"{self.dep_q} generated codebooks but only n_q={self.n_q} audio rows")
        if not isinstance(self.delays, list) or not all(_is_int(d) and d >= 0 for d in self.delays):
            raise fail("delays", f"must be a list of non-negative integers, got {self.delays!r}")
        if len(self.delays) != self.num_codebooks:
            raise fail(
                "delays",
                f"has {len(self.delays)} entries, expected 1 + n_q = {self.num_codebooks} (text first)",
            )
        for name in ("existing_text_padding_id", "existing_text_end_padding_id"):
            if getattr(self, name) >= self.text_card:
                raise fail(name, f"{getattr(self, name)} is not below text_card={self.text_card}")
        if self.text_card_out is not None and (not _is_int(self.text_card_out) or self.text_card_out < 1):
            raise fail("text_card_out", f"must be a positive integer or null, got {self.text_card_out!r}")
        if self.context is not None and (not _is_int(self.context) or self.context < 1):
            raise fail("context", f"must be a positive integer or null, got {self.context!r}")
        if self.max_seq_len is not None and (not _is_int(self.max_seq_len) or self.max_seq_len < 1):
            raise fail("max_seq_len", f"must be a positive integer or null, got {self.max_seq_len!r}")
        for name in ("max_period", "depformer_max_period"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise fail(name, f"must be a positive number, got {value!r}")
        if self.norm not in NORM_KINDS:
            raise fail("norm", f"{self.norm!r} is not one of {NORM_KINDS}")
        if self.depformer_norm is not None and self.depformer_norm not in NORM_KINDS:
            raise fail("depformer_norm", f"{self.depformer_norm!r} is not one of {NORM_KINDS}")
        gatings = ("none", *GATING_ACTIVATIONS)
        for name in ("gating", "depformer_gating"):
            if getattr(self, name) not in gatings:
                raise fail(name, f"{getattr(self, name)!r} is not one of {gatings}")
        for name in ("positional_embedding", "depformer_pos_emb"):
            if getattr(self, name) not in POSITIONAL_EMBEDDINGS:
                raise fail(name, f"{getattr(self, name)!r} is not one of {POSITIONAL_EMBEDDINGS}")
        if "rope" in self.positional_embedding and (self.dim // self.num_heads) % 2:
            raise fail("num_heads", "RoPE needs an even head dimension dim / num_heads")
        if self.extra_heads_num_heads and (not _is_int(self.extra_heads_dim) or self.extra_heads_dim < 1):
            raise fail("extra_heads_dim", f"must be a positive integer, got {self.extra_heads_dim!r}")
        if self.audio_heads not in AUDIO_HEADS:
            raise fail("audio_heads", f"{self.audio_heads!r} is not one of {AUDIO_HEADS}")
        if self.demux_second_stream and self.norm_emb:
            raise fail("demux_second_stream", "cannot be combined with norm_emb (as in moshi)")
        low_rank = self.depformer_low_rank_embeddings
        if low_rank is not None and (not _is_int(low_rank) or low_rank < 1):
            raise fail("depformer_low_rank_embeddings", f"must be a positive integer or null, got {low_rank!r}")
        if self.depformer_dim_feedforward is not None and not _is_int(self.depformer_dim_feedforward):
            raise fail(
                "depformer_dim_feedforward",
                f"must be an integer (per-step lists are not supported), got {self.depformer_dim_feedforward!r}",
            )
        schedule = self.depformer_weights_per_step_schedule
        if schedule is not None:
            if not isinstance(schedule, list) or not all(_is_int(s) and s >= 0 for s in schedule):
                raise fail("depformer_weights_per_step_schedule", f"must be a list of indices, got {schedule!r}")
            if len(schedule) != self.dep_q:
                raise fail("depformer_weights_per_step_schedule", f"has {len(schedule)} entries, dep_q is {self.dep_q}")
            if not self.depformer_weights_per_step:
                raise fail("depformer_weights_per_step_schedule", "needs depformer_weights_per_step: true")
        self._validate_conditioning()
        if self.has_depformer:
            heads = self.depformer_num_heads
            if heads is None:
                raise fail("depformer_num_heads", "missing (required when dep_q > 0 with a depformer)")
            if not _is_int(heads) or heads < 1 or self.depformer_dim % heads:
                raise fail("depformer_num_heads", f"{heads!r} must be a positive divisor of depformer_dim {self.depformer_dim}")
            if heads % self.kv_repeat:  # moshi's depformer inherits kv_repeat
                raise fail("kv_repeat", f"{self.kv_repeat} must divide depformer_num_heads {heads} "
                                        "(the depformer uses it too, as in moshi)")
            layers = self.depformer_num_layers
            if not _is_int(layers) or layers < 1:  # type: ignore[operator]
                raise fail("depformer_num_layers", f"must be a positive integer, got {layers!r}")
            if self.depformer_weights_per_step and self.depformer_gating == "none":
                raise fail("depformer_weights_per_step", "needs a gated FFN (depformer_gating != 'none')")

    def _validate_conditioning(self) -> None:
        """`conditioners`: {name: {"type": "lut", "lut": {n_bins, dim, tokenizer, ...}}};
        `fuser`: {"sum": [names], ...}; every fused name must be a conditioner."""
        def fail(name: str, why: str) -> LMConfigError:
            return LMConfigError(f"LMConfig field '{name}': {why}")

        conditioners = self.conditioners or {}
        if not isinstance(conditioners, dict):
            raise fail("conditioners", f"must be an object, got {conditioners!r}")
        for name, spec in conditioners.items():
            where = f"conditioner '{name}'"
            if not isinstance(spec, dict) or "type" not in spec:
                raise fail("conditioners", f"{where} needs a 'type', got {spec!r}")
            kind = spec["type"]
            if kind not in CONDITIONER_TYPES:
                raise fail("conditioners", f"{where} has type {kind!r}; dsm implements "
                                           f"{list(CONDITIONER_TYPES)}")
            params = spec.get(kind)
            if not isinstance(params, dict):
                raise fail("conditioners", f"{where} needs its {kind!r} settings object")
            if kind == "tensor":
                unknown = sorted(set(params) - set(TENSOR_CONDITIONER_KEYS))
                if unknown:
                    raise fail("conditioners", f"{where}: unknown tensor setting(s) {unknown}")
                if not _is_int(params.get("dim")) or params["dim"] < 1:
                    raise fail("conditioners", f"{where}: 'dim' must be a positive integer")
                if params.get("output_bias"):
                    raise fail("conditioners", f"{where}: output_bias is not supported (as in moshi)")
                continue
            for key in ("n_bins", "dim"):
                if not _is_int(params.get(key)) or params[key] < 1:
                    raise fail("conditioners", f"{where}: '{key}' must be a positive integer")
            if params.get("tokenizer", "noop") != "noop":
                raise fail("conditioners", f"{where}: tokenizer {params['tokenizer']!r} is not "
                                           "supported (only 'noop')")
            values = params.get("possible_values")
            if values is not None and (not isinstance(values, list) or len(values) > params["n_bins"]):
                raise fail("conditioners", f"{where}: possible_values must be a list of at most "
                                           f"n_bins={params['n_bins']} strings")
            if params.get("output_bias"):
                raise fail("conditioners", f"{where}: output_bias is not supported (as in moshi)")
        fuser = self.fuser
        if fuser is None:
            if conditioners:
                raise fail("fuser", "missing: conditioners need a fuser that says how to use them")
            if self.cross_attention:
                raise fail("cross_attention", "needs a fuser with a 'cross' list (its source)")
            return
        if not isinstance(fuser, dict):
            raise fail("fuser", f"must be an object, got {fuser!r}")
        fused: dict[str, str] = {}
        for method, names in fuser.items():
            if method == "cross_attention_pos_emb":
                if not isinstance(names, bool):
                    raise fail("fuser", f"'{method}' must be true or false, got {names!r}")
                continue
            if method == "cross_attention_pos_emb_scale":
                if not isinstance(names, (int, float)) or isinstance(names, bool):
                    raise fail("fuser", f"'{method}' must be a number, got {names!r}")
                continue
            if method not in ("sum", "cross", "prepend"):
                raise fail("fuser", f"unknown key {method!r}")
            if not isinstance(names, list):
                raise fail("fuser", f"'{method}' must be a list of conditioner names")
            if names and method not in FUSER_METHODS:
                raise fail("fuser", f"fusing by {method!r} ({names}) is not supported by dsm")
            for name in names:
                if name not in conditioners:
                    raise fail("fuser", f"'{method}' names {name!r}, which is not a conditioner")
                if name in fused:
                    raise fail("fuser", f"{name!r} is fused by both {fused[name]!r} and {method!r}")
                fused[name] = method
        for name, method in fused.items():
            if method == "sum" and conditioners[name]["type"] != "lut":
                raise fail("fuser", f"'sum' names {name!r}, a {conditioners[name]['type']!r} "
                                    "conditioner (sum takes one vector per stream: 'lut' only)")
        if fuser.get("cross") and not self.cross_attention:
            raise fail("fuser", f"'cross' names {fuser['cross']} but cross_attention is false")
        if self.cross_attention and not fuser.get("cross"):
            raise fail("cross_attention", "true, but the fuser's 'cross' list is empty (no source)")
        if self.cross_attention and self.kv_repeat != 1:
            raise fail("cross_attention", f"with kv_repeat={self.kv_repeat} is not supported "
                                          "(moshi's cross-attention assumes one key/value head per "
                                          "query head)")

    @property
    def cross_conditions(self) -> list[str]:
        """Conditioners whose outputs, concatenated in time, the cross-attention reads."""
        return list((self.fuser or {}).get("cross", []))

    @property
    def cross_pos_emb_scale(self) -> float | None:
        """Scale of the sinusoidal embedding added to the cross source (None: none added)."""
        fuser = self.fuser or {}
        if not fuser.get("cross_attention_pos_emb", False):
            return None
        return float(fuser.get("cross_attention_pos_emb_scale", 1.0))

    @property
    def sum_conditions(self) -> list[str]:
        """Conditioners whose outputs are added to every step's input ("sum" fuser)."""
        return list((self.fuser or {}).get("sum", []))

    # --- config.json ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LMConfig:
        """Read a Kyutai config.json dict (errors name the offending field)."""
        if not isinstance(raw, dict):
            raise LMConfigError(f"an LM config must be a JSON object, got {type(raw).__name__}")
        for name in REQUIRED:
            if name not in raw:
                raise LMConfigError(f"LMConfig field '{name}': missing from the config")
        refused = [f"{name!r} ({raw[name]!r})" for name, switched_on in UNSUPPORTED.items()
                   if name in raw and switched_on(raw[name])]
        known = {f.name for f in fields(cls)} - {"extras"}
        values: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in raw.items():
            if key == "demux_second_text_stream":  # moshi's argument name for the same field
                key = "demux_second_stream"
            if key in known:
                values[key] = value
            elif key in LOADER_KEYS or key in MODEL_DIR_KEYS or key in UNSUPPORTED:
                extras[key] = value
            else:
                unknown.append(key)
        if refused or unknown:
            problems = []
            if refused:
                problems.append(f"unsupported feature(s) switched on: {', '.join(refused)}")
            if unknown:
                problems.append(f"unknown config field(s) {', '.join(map(repr, unknown))}")
            raise LMConfigError(
                f"LMConfig: {'; '.join(problems)}: dsm does not implement them (a model using "
                "them would compute something else)"
            )
        for name in ("max_period", "depformer_max_period", "hidden_scale"):
            if isinstance(values.get(name), int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        # moshi: absent depformer settings inherit the temporal transformer's.
        if "depformer_layer_scale" not in raw:
            values["depformer_layer_scale"] = raw.get("layer_scale")
        return cls(**values, extras=extras)

    @classmethod
    def from_json(cls, path: str | Path) -> LMConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise LMConfigError(f"LM config file not found: {path}") from None
        except json.JSONDecodeError as error:
            raise LMConfigError(f"LM config {path} is not valid JSON: {error}") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Kyutai config.json dict (loader keys from `extras` included; moshi loads it)."""
        out: dict[str, Any] = dict(self.extras)
        for f in fields(self):
            if f.name == "extras":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, list) else value
        # dsm's own fields only when they differ from Kyutai's behaviour: moshi refuses unknown
        # arguments, and loaders.get_moshi_lm passes every key to LMModel.
        for name, kyutai_default in (("audio_heads", "depformer"), ("max_seq_len", None),
                                     ("kv_repeat", 1), ("cross_attention", False)):
            if out[name] == kyutai_default:
                del out[name]
        # moshi builds conditioners whenever the key is present: write them only when used.
        for name in ("conditioners", "fuser"):
            if out[name] is None:
                del out[name]
        return out

    def moshi_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `moshi.models.lm.LMModel` for this config (oracle tests)."""
        if self.audio_heads != "depformer":
            raise LMConfigError("LMConfig field 'audio_heads': moshi only has the depformer")
        kwargs = {k: v for k, v in self.to_dict().items() if k not in self.extras}
        kwargs["demux_second_text_stream"] = kwargs.pop("demux_second_stream")
        # moshi takes built modules for these (loaders.get_conditioner_provider / _fuser).
        kwargs.pop("conditioners", None)
        kwargs.pop("fuser", None)
        return kwargs


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
