"""Causal transformer with a sliding context, offline or streaming over a ring KV cache.

Offline, `StreamingTransformer(x)` runs causal attention over the whole `[B, T, D]`
sequence, each position seeing the last `context` positions (itself included). Inside
`with transformer.streaming(B):` each call processes the next T positions of every batch
slot. Each slot has its own position counter (RoPE restarts at 0 after `reset_slots`), and
every attention layer owns a ring KV cache of `context` (or `max_seq_len`) entries,
allocated once at `init_state` and written in place with `scatter_`, with no host syncs,
so that a step can be captured in a CUDA graph. Streaming output equals offline output.

Parameter names follow Kyutai's checkpoints, so a Kyutai state dict loads once its prefix
is stripped: `self_attn.in_proj_weight` (q, k, v stacked), `self_attn.out_proj.weight`,
`norm1.*`, `norm2.*`, `linear1/linear2` or `gating.linear_in/linear_out`,
`layer_scale_1.scale`, `layer_scale_2.scale`. The per-step weights of Kyutai's depth
transformer (`weights_per_step`) are stacked along the output dim of the same keys. State
dicts written by `moshi` itself (`in_projs.{i}.weight`, `out_projs.{i}.weight`) load too.

Grouped-query attention (`kv_repeat`, Kyutai's name): `num_heads // kv_repeat` key/value
heads, each shared by `kv_repeat` consecutive query heads. `in_proj_weight` then holds
`d_model` query rows and `2 * d_model // kv_repeat` key/value rows per weight set, and the
KV cache holds only the key/value heads. RoPE is interleaved ("rope", "sin_rope") or not
("rope_concat"; see dsm.modules.rope).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from dsm.modules.layer_scale import LayerScale
from dsm.modules.norm import NORM_KINDS, make_norm
from dsm.modules.rope import rope_tables, rotate_halves, rotate_pairs
from dsm.modules.streaming import StreamingModule, StreamingState, active_slots

POSITIONAL_EMBEDDINGS = ("rope", "none", "sin", "sin_rope", "rope_concat")
GATING_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def kyutai_gated_hidden(d_model: int, dim_feedforward: int) -> int:
    """Hidden size Kyutai's gated FFN uses for a nominal `dim_feedforward`.

    A gated FFN has three matrices instead of two, so Kyutai shrinks the hidden size to
    2/3 of the nominal one (21/8 of d_model when the nominal size is exactly 4 d_model).
    """
    if dim_feedforward == 4 * d_model:
        return (21 * d_model) // 8
    return (2 * dim_feedforward) // 3


@dataclass
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int  # FFN hidden size (callers compute Kyutai's gated size)
    causal: bool = True
    context: int | None = None  # sliding window: positions attended, the current included
    # "rope" | "rope_concat" (non-interleaved) | "none" ("sin", "sin_rope" for Kyutai's depformer)
    positional_embedding: str = "rope"
    max_period: float = 10_000.0
    norm: str = "layer_norm"  # "layer_norm" | "layer_norm_f32" | "rms_norm" | "rms_norm_f32"
    gating: str = "none"  # "none" (GELU MLP: linear1/linear2) | "silu" (gated) | other activations
    layer_scale: float | None = None
    bias_ff: bool = False
    bias_attn: bool = False
    max_seq_len: int | None = None  # KV capacity when context is None (streaming only)
    # Kyutai's depth transformer: position t uses weight set schedule[t] (or t).
    weights_per_step: int = 0
    weights_per_step_schedule: list[int] | None = field(default=None)
    positional_scale: float = 1.0  # scale of the "sin" embedding
    kv_repeat: int = 1  # grouped-query attention: query heads per key/value head
    cross_attention: bool = False  # a cross-attention block after each self-attention

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"TransformerConfig.{name}: {why}")

        for name in ("d_model", "num_heads", "dim_feedforward"):
            if int(getattr(self, name)) < 1:
                raise bad(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.num_layers < 0:
            raise bad("num_layers", f"must be >= 0, got {self.num_layers}")
        if self.d_model % self.num_heads:
            raise bad("num_heads", f"{self.num_heads} does not divide d_model {self.d_model}")
        kv_repeat = self.kv_repeat
        if not isinstance(kv_repeat, int) or kv_repeat < 1 or self.num_heads % kv_repeat:
            raise bad("kv_repeat", f"must be a positive divisor of num_heads {self.num_heads}, "
                                   f"got {kv_repeat!r}")
        if self.positional_embedding not in POSITIONAL_EMBEDDINGS:
            raise bad("positional_embedding", f"{self.positional_embedding!r} not in {POSITIONAL_EMBEDDINGS}")
        if "rope" in self.positional_embedding and (self.d_model // self.num_heads) % 2:
            raise bad("num_heads", "RoPE needs an even head dimension")
        if self.norm not in NORM_KINDS:
            raise bad("norm", f"{self.norm!r} not in {NORM_KINDS}")
        if self.gating != "none" and self.gating not in GATING_ACTIVATIONS:
            raise bad("gating", f"{self.gating!r} not in {('none', *GATING_ACTIVATIONS)}")
        if self.context is not None and self.context < 1:
            raise bad("context", f"must be >= 1 or None, got {self.context}")
        if self.max_seq_len is not None and self.max_seq_len < 1:
            raise bad("max_seq_len", f"must be >= 1 or None, got {self.max_seq_len}")
        if self.max_period <= 0:
            raise bad("max_period", f"must be positive, got {self.max_period}")
        if self.weights_per_step < 0:
            raise bad("weights_per_step", f"must be >= 0, got {self.weights_per_step}")
        if self.cross_attention and (self.weights_per_step or self.kv_repeat != 1):
            raise bad("cross_attention", "is not supported with weights_per_step or kv_repeat > 1")
        if self.weights_per_step and self.gating == "none":
            raise bad("weights_per_step", "needs a gated FFN (gating != 'none'), as in Kyutai's models")
        schedule = self.weights_per_step_schedule
        if schedule is not None:
            if not self.weights_per_step:
                raise bad("weights_per_step_schedule", "given without weights_per_step")
            if len(schedule) != self.weights_per_step:
                raise bad(
                    "weights_per_step_schedule",
                    f"has {len(schedule)} entries, weights_per_step is {self.weights_per_step}",
                )
            if min(schedule) < 0:
                raise bad("weights_per_step_schedule", "entries must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads (and heads of the KV cache): num_heads / kv_repeat."""
        return self.num_heads // self.kv_repeat

    @property
    def in_proj_features(self) -> int:
        """Rows of one in_proj weight set: d_model query rows, then keys and values."""
        return self.d_model + 2 * self.num_kv_heads * self.head_dim

    @property
    def rope_interleaved(self) -> bool:
        """RoPE channel pairs (2i, 2i+1), or (i, i + head_dim/2) for "rope_concat"."""
        return self.positional_embedding != "rope_concat"

    @property
    def num_weight_sets(self) -> int:
        """How many weight sets each per-step layer holds (1 without weights_per_step)."""
        if not self.weights_per_step:
            return 1
        if self.weights_per_step_schedule is not None:
            return max(self.weights_per_step_schedule) + 1
        return self.weights_per_step

    @property
    def kv_capacity(self) -> int | None:
        """Entries of the streaming ring KV cache (None: streaming is impossible)."""
        if self.context is not None:
            return self.context
        if self.max_seq_len is not None:
            return self.max_seq_len
        if self.weights_per_step:
            return self.weights_per_step
        return None


# --- attention ------------------------------------------------------------------------------


@dataclass
class _AttentionPlan:
    """What every layer of one call shares: positions, mask, RoPE tables, where to write.

    mode "offline": no cache. "write_first" (T == 1): write k/v at `write_index`, then attend
    over the cache. "concat" (T > 1): attend over [cache, new], then write the last entries.
    "lockstep" (T == 1, every slot at the same host-known step `lockstep_step`, Kyutai's
    depformer): write k/v at that cache entry and attend over entries 0..step, no mask.
    """

    mode: str
    positions: torch.Tensor  # [B or 1, T] positions of the new entries
    mask: torch.Tensor | None  # bool, broadcastable to [B, H, T, S]
    write_index: torch.Tensor | None = None  # [B, W] ring slots for the last W new entries
    is_causal: bool = False  # plain causal mask left to the attention kernel (fast paths)
    # cos, signed sin [B|1, T, 1, Dh/2, 2] (interleaved) or [B|1, T, 1, 2, Dh/2] ("rope_concat")
    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    write_gather: torch.Tensor | None = None  # write_index expanded to [B, Hkv, W, Dh]
    inactive: torch.Tensor | None = None  # [B, 1, 1, 1] slots that write back their own entries
    lockstep_step: int = 0


class _AttentionState(StreamingState):
    """Ring KV cache of one attention layer: `[B, Hkv, capacity, head_dim]` keys and values
    (Hkv = num_heads / kv_repeat: repeated heads are not cached).

    Which entry holds which position lives in the transformer's state, shared by all layers;
    stale entries are masked out. Resetting a slot still zeroes its entries: a masked entry
    holding NaN (a hostile stream's) would poison the next stream of the slot (0 x NaN).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys = keys
        self.values = values

    def reset(self, slots: torch.Tensor) -> None:
        self.keys.masked_fill_(slots.view(-1, 1, 1, 1), 0.0)
        self.values.masked_fill_(slots.view(-1, 1, 1, 1), 0.0)


class _StackedLinear(nn.Module):
    """A bias-optional linear whose weight may stack several per-step sets along dim 0."""

    def __init__(self, in_features: int, out_features: int, sets: int, bias: bool) -> None:
        super().__init__()
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(sets * out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(sets * out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))


def _per_step_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    weight_indices: list[int] | None,
) -> torch.Tensor:
    """`x [B, T, I]` times the weight set `weight_indices[t]` at each step t (or set 0)."""
    if weight_indices is None:
        if weight.shape[0] != out_features:
            weight = weight[:out_features]
            bias = None if bias is None else bias[:out_features]
        return F.linear(x, weight, bias)
    if len(weight_indices) == 1:  # one streaming step: no concatenation
        lo, hi = weight_indices[0] * out_features, (weight_indices[0] + 1) * out_features
        return F.linear(x, weight[lo:hi], None if bias is None else bias[lo:hi])
    outs = []
    for t, index in enumerate(weight_indices):
        lo, hi = index * out_features, (index + 1) * out_features
        outs.append(F.linear(x[:, t : t + 1], weight[lo:hi], None if bias is None else bias[lo:hi]))
    return torch.cat(outs, dim=1)


class StreamingMultiheadAttention(StreamingModule):
    """Causal multi-head self-attention with Kyutai's stacked `in_proj_weight`."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        d, sets, rows = config.d_model, config.num_weight_sets, config.in_proj_features
        self.in_proj_weight = nn.Parameter(torch.empty(sets * rows, d))
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.in_proj_bias = nn.Parameter(torch.zeros(sets * rows)) if config.bias_attn else None
        self.out_proj = _StackedLinear(d, d, sets, bias=config.bias_attn)
        self._register_load_state_dict_pre_hook(_load_moshi_attention_keys, with_module=True)

    def init_state(self, batch_size: int) -> _AttentionState:
        capacity = self.config.kv_capacity
        if capacity is None:
            raise RuntimeError(
                "streaming attention needs TransformerConfig.context or max_seq_len "
                "(the ring KV cache capacity)"
            )
        shape = (batch_size, self.config.num_kv_heads, capacity, self.config.head_dim)
        weight = self.in_proj_weight
        keys = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        return _AttentionState(keys, torch.zeros_like(keys))

    def forward(
        self, x: torch.Tensor, plan: _AttentionPlan, weight_indices: list[int] | None = None
    ) -> torch.Tensor:
        B, T, D = x.shape
        cfg = self.config
        H, Hkv, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        projected = _per_step_linear(
            x, self.in_proj_weight, self.in_proj_bias, cfg.in_proj_features, weight_indices
        )
        heads = projected.view(B, T, H + 2 * Hkv, Dh)  # q heads, then k heads, then v heads
        qk = heads[:, :, : H + Hkv]  # [B, T, H + Hkv, Dh]
        if plan.rope is not None:  # q and k rotated together
            cos, signed_sin = plan.rope
            if cfg.rope_interleaved:
                qk = rotate_pairs(qk.unflatten(-1, (Dh // 2, 2)), cos, signed_sin)
            else:
                qk = rotate_halves(qk.unflatten(-1, (2, Dh // 2)), cos, signed_sin)
            qk = qk.flatten(-2)
        q = qk[:, :, :H].transpose(1, 2)  # [B, H, T, Dh]
        k = qk[:, :, H:].transpose(1, 2)  # [B, Hkv, T, Dh]
        v = heads[:, :, H + Hkv :].transpose(1, 2)  # [B, Hkv, T, Dh]

        state = self.state
        mask, is_causal = plan.mask, plan.is_causal
        if plan.mode == "offline":
            keys, values = k, v
        else:
            assert isinstance(state, _AttentionState)
            if plan.mode == "lockstep":
                step = plan.lockstep_step
                state.keys[:, :, step : step + 1].copy_(k)
                state.values[:, :, step : step + 1].copy_(v)
                keys, values = state.keys[:, :, : step + 1], state.values[:, :, : step + 1]
            elif plan.mode == "write_first":
                _write_ring(state, k, v, plan)
                keys, values = state.keys, state.values
            else:
                keys = torch.cat([state.keys, k], dim=2)
                values = torch.cat([state.values, v], dim=2)
        out = _attend(q, keys, values, mask, is_causal, cfg.kv_repeat)
        if plan.mode == "concat":
            assert isinstance(state, _AttentionState)
            _write_ring(state, k, v, plan)
        out = out.transpose(1, 2).reshape(B, T, D)
        return _per_step_linear(out, self.out_proj.weight, self.out_proj.bias, D, weight_indices)


def _attend(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    kv_repeat: int,
) -> torch.Tensor:
    """Attention of `q [B, H, T, Dh]` over `keys`, `values` `[B, H / kv_repeat, S, Dh]`.

    Query head h uses key/value head h // kv_repeat (moshi's `expand_repeated_kv`). With a
    mask, the `kv_repeat` query heads of a group are folded into the time axis and attend to
    their key/value head once, so the (cached) keys and values are never copied; without
    one (the kernel's causal mask aligns queries with keys), keys and values are expanded.
    """
    if kv_repeat == 1:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=is_causal)
    B, H, T, Dh = q.shape
    Hkv = keys.shape[1]
    if mask is None:
        S = keys.shape[2]
        keys = keys[:, :, None].expand(B, Hkv, kv_repeat, S, Dh).reshape(B, H, S, Dh)
        values = values[:, :, None].expand(B, Hkv, kv_repeat, S, Dh).reshape(B, H, S, Dh)
        return F.scaled_dot_product_attention(q, keys, values, is_causal=is_causal)
    folded = q.reshape(B, Hkv, kv_repeat * T, Dh)  # row s * T + t: head i * kv_repeat + s at t
    S = mask.shape[-1]
    mask = mask.unsqueeze(-3).expand(*mask.shape[:-2], kv_repeat, T, S).flatten(-3, -2)
    out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=mask)
    return out.view(B, H, T, Dh)


def _write_ring(state: _AttentionState, k: torch.Tensor, v: torch.Tensor, plan: _AttentionPlan) -> None:
    """Write the last W new entries of `k`, `v` `[B, Hkv, T, Dh]` at ring slots `write_index`."""
    assert plan.write_gather is not None
    T, W = k.shape[2], plan.write_gather.shape[2]
    if W != T:
        k, v = k[:, :, T - W :], v[:, :, T - W :]
    if k.dtype != state.keys.dtype:
        k, v = k.to(state.keys.dtype), v.to(state.values.dtype)
    if plan.inactive is not None:  # skipped slots write back their own entries
        k = torch.where(plan.inactive, state.keys.gather(2, plan.write_gather), k)
        v = torch.where(plan.inactive, state.values.gather(2, plan.write_gather), v)
    state.keys.scatter_(2, plan.write_gather, k)
    state.values.scatter_(2, plan.write_gather, v)


def _stack_attention_keys(state_dict: dict, prefix: str) -> None:
    """In place, for the attention at `prefix`: moshi's `in_proj.weight`, `in_projs.{i}.weight`
    and `out_projs.{i}.weight` become Kyutai's stacked `in_proj_weight` / `out_proj.weight`."""
    if prefix + "in_proj.weight" in state_dict:
        state_dict[prefix + "in_proj_weight"] = state_dict.pop(prefix + "in_proj.weight")
    for split, stacked in (("in_projs", "in_proj_weight"), ("out_projs", "out_proj.weight")):
        parts = []
        while f"{prefix}{split}.{len(parts)}.weight" in state_dict:
            parts.append(state_dict.pop(f"{prefix}{split}.{len(parts)}.weight"))
        if parts:
            state_dict[prefix + stacked] = torch.cat(parts, dim=0)


def _load_moshi_attention_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    _stack_attention_keys(state_dict, prefix)


def normalize_attention_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a whole state dict with every attention in Kyutai's published layout.

    moshi's own `state_dict()` splits the projections per step (`in_projs.0.weight`, ...);
    Kyutai's files and dsm stack them (`in_proj_weight`, `out_proj.weight`).
    """
    out = dict(state_dict)
    prefixes = set()
    for key in state_dict:
        for marker in (".in_projs.", ".out_projs.", ".in_proj.weight"):
            if marker in key and ("self_attn" in key or "cross_attention" in key):
                prefixes.add(key[: key.index(marker) + 1])
    for prefix in prefixes:
        _stack_attention_keys(out, prefix)
    return out


# --- cross-attention ---------------------------------------------------------------------------


class _CrossAttentionState(StreamingState):
    """Keys and values `[B, H, S, head_dim]` of each slot's cross source, computed once when a
    stream attaches (`set_source`) and read by every step. Allocated at the first source
    (its length S is then fixed); a reset slot's entries are zeroed."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def reset(self, slots: torch.Tensor) -> None:
        if self.keys is not None and self.values is not None:
            self.keys.masked_fill_(slots.view(-1, 1, 1, 1), 0.0)
            self.values.masked_fill_(slots.view(-1, 1, 1, 1), 0.0)


class CrossAttention(StreamingModule):
    """Multi-head attention of the stream (queries) over a conditioning source (keys and
    values): no positions, no mask. Kyutai's `in_proj_weight` (q, k, v rows) and `out_proj`."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.out_proj = nn.Linear(d, d, bias=False)
        self._register_load_state_dict_pre_hook(_load_moshi_attention_keys, with_module=True)

    def init_state(self, batch_size: int) -> _CrossAttentionState:
        return _CrossAttentionState()

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source `[B, S, D]` -> keys, values `[B, H, S, Dh]` (in the weights' dtype)."""
        cfg = self.config
        B, S, _ = source.shape
        kv = F.linear(source.to(self.in_proj_weight.dtype), self.in_proj_weight[cfg.d_model:])
        k, v = kv.view(B, S, 2, cfg.num_heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def set_source(self, rows: torch.Tensor, source: torch.Tensor) -> None:
        """While streaming: the slots `rows` (long `[n]`) attend to `source` `[n, S, D]`."""
        state = self.state
        if not isinstance(state, _CrossAttentionState):
            raise RuntimeError("set_source needs streaming() first")
        k, v = self.keys_values(source)
        if state.keys is None or state.values is None:
            batch = self.streaming_batch_size
            assert batch is not None
            shape = (batch, *k.shape[1:])
            state.keys = torch.zeros(shape, dtype=k.dtype, device=k.device)
            state.values = torch.zeros(shape, dtype=v.dtype, device=v.device)
        if state.keys.shape[2] != k.shape[2]:
            raise ValueError(
                f"cross source of {k.shape[2]} positions, but this stream set holds sources of "
                f"{state.keys.shape[2]} (all streams of one batch share the source length)"
            )
        state.keys.index_copy_(0, rows, k)
        state.values.index_copy_(0, rows, v)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """x `[B, T, D]` attends to `source` `[B, S, D]` (offline) or to the slots' sources."""
        cfg = self.config
        B, T, D = x.shape
        q = F.linear(x, self.in_proj_weight[:D]).view(B, T, cfg.num_heads, cfg.head_dim)
        state = self.state
        if state is None:
            if source is None:
                raise ValueError("this transformer cross-attends: give it a cross source")
            keys, values = self.keys_values(source)
        else:
            assert isinstance(state, _CrossAttentionState)
            if state.keys is None or state.values is None:
                raise RuntimeError("no cross source was set for this stream set (set_source)")
            keys, values = state.keys, state.values
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


# --- feed-forward and layer -------------------------------------------------------------------


class GatedFFN(nn.Module):
    """act(x W_a) * (x W_b) then W_out; `linear_in` holds [W_a; W_b] (Kyutai's layout)."""

    def __init__(self, d_model: int, hidden: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.activation = GATING_ACTIVATIONS[activation]
        self.linear_in = nn.Linear(d_model, 2 * hidden, bias=bias)
        self.linear_out = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear_in, linear_out = self.linear_in, self.linear_out
        gate, value = F.linear(x, linear_in.weight, linear_in.bias).chunk(2, dim=-1)
        return F.linear(self.activation(gate) * value, linear_out.weight, linear_out.bias)


class StreamingTransformerLayer(nn.Module):
    """Pre-norm layer: x + ls1(attn(norm1(x))), then x + ls2(ffn(norm2(x)))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = StreamingMultiheadAttention(config)
        self.norm1 = make_norm(config.norm, d)
        self.norm2 = make_norm(config.norm, d)
        self.linear1: nn.Linear | None = None
        self.linear2: nn.Linear | None = None
        self.gating: nn.Module | None = None
        if config.gating == "none":
            self.linear1 = nn.Linear(d, config.dim_feedforward, bias=config.bias_ff)
            self.linear2 = nn.Linear(config.dim_feedforward, d, bias=config.bias_ff)
        elif config.weights_per_step:
            self.gating = nn.ModuleList(
                GatedFFN(d, config.dim_feedforward, config.gating, config.bias_ff)
                for _ in range(config.num_weight_sets)
            )
        else:
            self.gating = GatedFFN(d, config.dim_feedforward, config.gating, config.bias_ff)
        if config.layer_scale is None:
            self.layer_scale_1: nn.Module = nn.Identity()
            self.layer_scale_2: nn.Module = nn.Identity()
        else:
            self.layer_scale_1 = LayerScale(d, config.layer_scale)
            self.layer_scale_2 = LayerScale(d, config.layer_scale)
        self._has_layer_scale = config.layer_scale is not None
        self.cross_attention: CrossAttention | None = None
        if config.cross_attention:  # its norm is always a LayerNorm, as in Kyutai's models
            self.cross_attention = CrossAttention(config)
            self.norm_cross = nn.LayerNorm(d, eps=1e-5)
            self.layer_scale_cross: nn.Module = (
                nn.Identity() if config.layer_scale is None else LayerScale(d, config.layer_scale)
            )
        # Plain tuple of the per-step FFNs: indexed every step, cheaper than ModuleList.
        self._gating_sets: tuple[nn.Module, ...] = (
            tuple(self.gating) if isinstance(self.gating, nn.ModuleList) else ()
        )

    def _feed_forward(self, x: torch.Tensor, weight_indices: list[int] | None) -> torch.Tensor:
        if self.linear1 is not None and self.linear2 is not None:
            return self.linear2(F.gelu(self.linear1(x)))
        if self._gating_sets:
            assert weight_indices is not None
            if len(weight_indices) == 1:  # one streaming step
                return self._gating_sets[weight_indices[0]](x)
            return torch.cat(
                [self._gating_sets[i](x[:, t : t + 1]) for t, i in enumerate(weight_indices)], dim=1
            )
        assert self.gating is not None
        return self.gating(x)

    def forward(
        self, x: torch.Tensor, plan: _AttentionPlan, weight_indices: list[int] | None = None,
        cross_source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        update = self.self_attn(self.norm1(x), plan, weight_indices)
        x = x + (self.layer_scale_1(update) if self._has_layer_scale else update)
        if self.cross_attention is not None:
            x = x + self.layer_scale_cross(self.cross_attention(self.norm_cross(x), cross_source))
        update = self._feed_forward(self.norm2(x), weight_indices)
        return x + (self.layer_scale_2(update) if self._has_layer_scale else update)


# --- the transformer --------------------------------------------------------------------------


class _TransformerState(StreamingState):
    """Per-slot step counters and which position each ring-cache entry holds (-1: empty).

    `host_step` counts steps on the host for per-step weights (Kyutai's depformer, where
    all slots move in lockstep and are reset together); it never reads device memory.
    `lockstep` is True while every slot is known to be at step `host_step` (since the
    start or `reset_all`, with no reset of some slots only).
    """

    def __init__(self, offsets: torch.Tensor, cache_positions: torch.Tensor) -> None:
        self.offsets = offsets  # [B] long
        self.cache_positions = cache_positions  # [B, capacity] long
        self.active = active_slots(offsets.shape[0], offsets.device)  # [B] slots the step advances
        self.host_step = 0
        self.lockstep = True

    def reset(self, slots: torch.Tensor) -> None:
        self.offsets.masked_fill_(slots, 0)
        self.cache_positions.masked_fill_(slots[:, None], -1)
        self.host_step = 0
        self.lockstep = False

    def reset_all(self) -> None:
        """Every slot back to step 0 with device ops only (safe inside a CUDA graph capture)."""
        self.offsets.zero_()
        self.cache_positions.fill_(-1)
        self.host_step = 0
        self.lockstep = True


def sin_embedding(
    positions: torch.Tensor, dim: int, max_period: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal embedding `[B, T, dim]` = [cos, sin] of positions `[B, T]` (Kyutai's "sin"),
    computed in `dtype` as Kyutai does (the input's dtype)."""
    half = dim // 2
    scale = torch.arange(half, device=positions.device, dtype=dtype) / (half - 1)
    period = torch.full((), max_period, device=positions.device, dtype=dtype)
    phase = positions.to(dtype)[..., None] / (period**scale)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class StreamingTransformer(StreamingModule):
    """A stack of `StreamingTransformerLayer`, offline or streaming (see module docstring)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(StreamingTransformerLayer(config) for _ in range(config.num_layers))

    def reset_all_slots(self) -> None:
        """While streaming: restart every slot (no host-to-device copy, unlike reset_slots)."""
        state = self.state
        if not isinstance(state, _TransformerState):
            raise RuntimeError("reset_all_slots needs streaming() first")
        state.reset_all()

    def init_state(self, batch_size: int) -> _TransformerState:
        capacity = self.config.kv_capacity
        if capacity is None:
            raise RuntimeError(
                "streaming needs TransformerConfig.context or max_seq_len (the KV cache capacity)"
            )
        if not self.config.causal:
            raise RuntimeError("streaming needs a causal transformer (TransformerConfig.causal)")
        device = self._device()
        offsets = torch.zeros(batch_size, device=device, dtype=torch.long)
        cache_positions = torch.full((batch_size, capacity), -1, device=device, dtype=torch.long)
        return _TransformerState(offsets, cache_positions)

    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def _weight_indices(self, start: int, steps: int) -> list[int] | None:
        cfg = self.config
        if not cfg.weights_per_step:
            return None
        if start + steps > cfg.weights_per_step:
            raise ValueError(
                f"per-step weights cover {cfg.weights_per_step} steps, asked for steps "
                f"{start}..{start + steps - 1}; reset the streaming state between sequences"
            )
        schedule = cfg.weights_per_step_schedule
        return [schedule[t] if schedule is not None else t for t in range(start, start + steps)]

    def _offline_plan(self, T: int, device: torch.device) -> _AttentionPlan:
        positions = torch.arange(T, device=device)[None]
        context = self.config.context
        if not self.config.causal:
            return _AttentionPlan("offline", positions, None)
        if context is None or context >= T:  # the window covers everything: plain causal
            return _AttentionPlan("offline", positions, None, is_causal=True)
        delta = positions[0, :, None] - positions[0, None, :]  # query - key, [T, T]
        return _AttentionPlan("offline", positions, (delta >= 0) & (delta < context))

    def _lockstep_plan(self, state: _TransformerState) -> _AttentionPlan | None:
        """The maskless plan of one step when every slot is at step `host_step` (the depformer)."""
        cfg = self.config
        step = state.host_step
        if not (cfg.weights_per_step and state.lockstep and step < state.cache_positions.shape[1]):
            return None
        if cfg.context is not None and step >= cfg.context:
            return None
        state.cache_positions[:, step].fill_(step)
        return _AttentionPlan("lockstep", state.offsets[:, None], None, lockstep_step=step)

    def _streaming_plan(self, state: _TransformerState, T: int) -> _AttentionPlan:
        if T == 1:
            plan = self._lockstep_plan(state)
            if plan is not None:
                return plan
        capacity = state.cache_positions.shape[1]
        if T == 1:
            positions = state.offsets[:, None]  # [B, 1]
            write_index = positions & (capacity - 1) if capacity & (capacity - 1) == 0 else positions % capacity
        else:
            positions = state.offsets[:, None] + torch.arange(T, device=state.offsets.device)  # [B, T]
            write_index = positions[:, T - min(T, capacity) :] % capacity  # [B, W]
        W = write_index.shape[1]
        # Slots outside `active` keep their ring as it was. A one-step call may write: the
        # skipped slot's next step writes that same entry (same offset) before attending,
        # and the entry it replaced is past the window. Several steps at once (the codec's)
        # would overwrite entries still in the window, so those slots write back what is there.
        inactive = None if T == 1 else ~state.active
        written = positions[:, T - W:]
        if inactive is not None:
            written = torch.where(inactive[:, None], state.cache_positions.gather(1, write_index),
                                  written)
        if T == 1:
            state.cache_positions.scatter_(1, write_index, written)
            key_positions = state.cache_positions
            mode = "write_first"
        else:
            key_positions = torch.cat([state.cache_positions, positions], dim=1)
            mode = "concat"
        delta = positions[:, :, None] - key_positions[:, None, :]  # [B, T, S]
        mask = (key_positions[:, None, :] >= 0) & (delta >= 0)
        if self.config.context is not None:
            mask = mask & (delta < self.config.context)
        if mode == "concat":
            state.cache_positions.scatter_(1, write_index, written)
        B, Hkv, Dh = positions.shape[0], self.config.num_kv_heads, self.config.head_dim
        write_gather = write_index.view(B, 1, W, 1).expand(B, Hkv, W, Dh)
        return _AttentionPlan(mode, positions, mask[:, None], write_index, write_gather=write_gather,
                              inactive=None if inactive is None else inactive.view(B, 1, 1, 1))

    def set_cross_source(self, rows: torch.Tensor, source: torch.Tensor) -> None:
        """While streaming: slots `rows` (long `[n]`) cross-attend to `source` `[n, S, D]` from
        now on (keys and values computed here, once, for every layer)."""
        for layer in self.layers:
            if layer.cross_attention is None:
                raise RuntimeError("this transformer has no cross-attention")
            layer.cross_attention.set_source(rows, source)

    def forward(self, x: torch.Tensor, cross_source: torch.Tensor | None = None) -> torch.Tensor:
        """x `[B, T, D]` -> `[B, T, D]`: the whole sequence, or the next T steps when streaming.

        `cross_source` `[B, S, D]` (offline, cross-attending transformers): what every layer's
        cross-attention reads; while streaming each slot reads its own (`set_cross_source`)."""
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ValueError(f"expected input [B, T, {self.config.d_model}], got {tuple(x.shape)}")
        B, T, _ = x.shape
        state = self.state
        if state is None:
            plan = self._offline_plan(T, x.device)
            weight_indices = self._weight_indices(0, T)
        else:
            assert isinstance(state, _TransformerState)
            if B != state.offsets.shape[0]:
                raise ValueError(f"streaming batch size is {state.offsets.shape[0]}, got input with {B}")
            weight_indices = self._weight_indices(state.host_step, T)
            plan = self._streaming_plan(state, T)
        cfg = self.config
        if cfg.positional_embedding in ("sin", "sin_rope"):
            emb = sin_embedding(plan.positions, cfg.d_model, cfg.max_period, x.dtype)
            x = x + cfg.positional_scale * emb
        if "rope" in cfg.positional_embedding:
            cos, signed_sin = rope_tables(
                plan.positions, cfg.head_dim, cfg.max_period, cfg.rope_interleaved
            )
            plan.rope = cos[:, :, None], signed_sin[:, :, None]  # broadcast over the heads
        if cross_source is not None and state is not None:
            raise ValueError("while streaming, cross sources are set per slot (set_cross_source)")
        for layer in self.layers:
            x = layer(x, plan, weight_indices, cross_source)
        if state is not None:
            state.offsets.add_(state.active.long() * T)
            state.host_step += T
        return x
