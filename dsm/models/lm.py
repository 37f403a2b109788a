"""`MultistreamLM`: one decoder over time-aligned text and audio-token streams.

Token tensor `[B, K, T]` with K = 1 + n_q rows: row 0 text, rows 1..dep_q the audio
codebooks the model generates, the rest input audio. Each step sums one embedding per row
(-1 gives a zero vector: "nothing here"), runs the temporal transformer, normalises, and
predicts the next step's text with `text_linear`. Audio of the next step comes either from
Kyutai's depth transformer (the "depformer", which goes through the dep_q codebooks of the
step in order, each conditioned on the previous one) or from dep_q parallel linear heads
(used with a codebook pattern from `dsm.streams.patterns`). Extra heads (Kyutai's semantic
VAD) read the same normalised hidden state.

Module and parameter names are Kyutai's, so `state_dict()` is a Kyutai checkpoint.
`forward` has the meaning of `moshi.models.lm.LMModel.forward`: codes are given undelayed,
the model applies `config.delays` and the initial tokens itself, and the logits come back
aligned with the codes, with masks of the positions that have a valid prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dsm.models.conditioners import Conditioning, ConditionProvider, ConditionValues
from dsm.models.config import LMConfig
from dsm.modules.norm import make_norm
from dsm.modules.streaming import StreamingModule
from dsm.modules.transformer import StreamingTransformer, TransformerConfig, kyutai_gated_hidden

ZERO_TOKEN = -1  # input value meaning "no token": zero embedding, no loss


class TokenEmbedding(nn.Module):
    """Embedding where id -1 gives a zero vector; Kyutai's options and parameter names.

    `low_rank`: the table has `low_rank` columns and `low_rank.weight` maps them to `dim`.
    `demux`: ids encode two tokens `(second + 1) * num_embeddings + first` (second -1 when
    absent); both are looked up in the same table and mixed by `out1` / `out2`.
    `norm`: a LayerNorm after the lookup.
    """

    def __init__(self, num_embeddings: int, dim: int, *, norm: bool = False,
                 low_rank: int | None = None, demux: bool = False) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        width = low_rank or dim
        self.weight = nn.Parameter(torch.randn(num_embeddings, width) / width**0.5)
        self.norm = nn.LayerNorm(width, eps=1e-5) if norm else None
        self.low_rank = nn.Linear(low_rank, dim, bias=False) if low_rank is not None else None
        self.demux = demux
        if demux:
            self.out1 = nn.Linear(width, dim, bias=False)
            self.out2 = nn.Linear(width, dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids `[...]` -> `[..., dim]`."""
        absent = (ids == ZERO_TOKEN)[..., None]
        ids = ids.clamp(min=0)
        if self.demux:
            first = F.embedding(ids % self.num_embeddings, self.weight)
            second_ids = ids // self.num_embeddings - 1
            second = F.embedding(second_ids.clamp(min=0), self.weight)
            y = self.out1(first) + torch.where((second_ids < 0)[..., None], 0.0, self.out2(second))
            return torch.where(absent, 0.0, y)
        y = F.embedding(ids, self.weight)
        if self.norm is not None:
            y = self.norm(y)
        y = torch.where(absent, 0.0, y)
        if self.low_rank is not None:
            y = self.low_rank(y)
        return y


@dataclass
class LMOutput:
    """Teacher-forced predictions aligned with the input codes (moshi's meaning)."""

    logits: torch.Tensor  # [B, dep_q, T, card], NaN where mask is False
    mask: torch.Tensor  # [B, dep_q, T] bool: valid prediction and target not -1
    text_logits: torch.Tensor  # [B, 1, T, text_card_out]
    text_mask: torch.Tensor  # [B, 1, T]


@dataclass
class LMLoss:
    total: torch.Tensor  # weighted mean of the per-stream losses
    text: torch.Tensor  # scalar
    audio: torch.Tensor  # [dep_q] one per generated codebook


def delay_streams(codes: torch.Tensor, delays: list[int], initial: torch.Tensor) -> torch.Tensor:
    """Shift row k right by delays[k], filling the gap with `initial[k]`. codes `[B, K, T]`."""
    B, K, T = codes.shape
    rows = []
    for k, delay in enumerate(delays):
        fill = initial[k].expand(B, min(delay, T)).to(codes.dtype)
        rows.append(torch.cat([fill, codes[:, k, : T - delay]], dim=1) if delay else codes[:, k])
    return torch.stack(rows, dim=1)


def undelay_logits(logits: torch.Tensor, delays: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `delay_streams` on `[B, K, T, C]` logits: NaN and mask False at the tail."""
    B, K, T = logits.shape[:3]
    mask = torch.ones(B, K, T, dtype=torch.bool, device=logits.device)
    if K == 0:
        return logits, mask
    rows = []
    for k, delay in enumerate(delays):
        row = logits[:, k]
        if delay:
            tail = torch.full_like(row[:, : min(delay, T)], float("nan"))
            row = torch.cat([row[:, delay:], tail], dim=1)
            mask[:, k, T - min(delay, T):] = False
        rows.append(row)
    return torch.stack(rows, dim=1), mask


class MultistreamLM(StreamingModule):
    """Temporal transformer over summed stream embeddings, text head, audio heads, extra heads."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.emb = nn.ModuleList(TokenEmbedding(c.card + 1, c.dim, norm=c.norm_emb) for _ in range(c.n_q))
        self.text_emb = TokenEmbedding(c.text_card + 1, c.dim, norm=c.norm_emb, demux=c.demux_second_stream)
        self.text_linear = nn.Linear(c.dim, c.text_out_card, bias=c.bias_proj)
        hidden = c.dim_feedforward
        if c.gating != "none":
            hidden = kyutai_gated_hidden(c.dim, hidden)
        self.transformer = StreamingTransformer(TransformerConfig(
            d_model=c.dim, num_heads=c.num_heads, num_layers=c.num_layers, dim_feedforward=hidden,
            causal=c.causal, context=c.context, positional_embedding=c.positional_embedding,
            max_period=c.max_period, norm=c.norm, gating=c.gating, layer_scale=c.layer_scale,
            max_seq_len=c.max_seq_len, kv_repeat=c.kv_repeat, cross_attention=c.cross_attention,
        ))
        self.out_norm = make_norm(c.norm, c.dim)
        # Kyutai's layout has the depformer input projections even without a depformer.
        self.depformer_in = nn.ModuleList(
            nn.Linear(c.dim, c.depformer_dim, bias=False) for _ in range(c.num_depformer_in)
        )
        self.depformer: StreamingTransformer | None = None
        self.depformer_emb: nn.ModuleList | None = None
        self.depformer_text_emb: TokenEmbedding | None = None
        self.depformer_norms: nn.ModuleList | None = None
        head_dim = c.dim
        if c.has_depformer:
            low_rank = c.depformer_low_rank_embeddings
            self.depformer_emb = nn.ModuleList(
                TokenEmbedding(c.card + 1, c.depformer_dim, norm=c.norm_emb, low_rank=low_rank)
                for _ in range(c.dep_q - 1)
            )
            self.depformer_text_emb = TokenEmbedding(
                c.text_card + 1, c.depformer_dim, norm=c.norm_emb, low_rank=low_rank,
                demux=c.demux_second_stream,
            )
            self.depformer_norms = nn.ModuleList(
                nn.Identity() if c.depformer_norm is None else make_norm(c.depformer_norm, c.depformer_dim)
                for _ in range(c.dep_q)
            )
            dep_gating = c.depformer_gating or "none"
            dep_hidden = c.depformer_feedforward
            if dep_gating != "none":
                dep_hidden = kyutai_gated_hidden(c.depformer_dim, dep_hidden)
            assert c.depformer_num_heads is not None and c.depformer_num_layers is not None
            self.depformer = StreamingTransformer(TransformerConfig(
                d_model=c.depformer_dim, num_heads=c.depformer_num_heads,
                num_layers=c.depformer_num_layers, dim_feedforward=dep_hidden, causal=c.causal,
                context=None, positional_embedding=c.depformer_pos_emb,
                max_period=float(c.depformer_max_period or c.max_period), norm=c.norm,
                gating=dep_gating, layer_scale=c.depformer_layer_scale,
                max_seq_len=c.dep_q, kv_repeat=c.kv_repeat,  # moshi's depformer inherits it
                weights_per_step=c.dep_q if c.depformer_weights_per_step else 0,
                weights_per_step_schedule=c.depformer_weights_per_step_schedule,
            ))
            head_dim = c.depformer_dim
        self.extra_heads = nn.ModuleList(
            nn.Linear(c.dim, c.extra_heads_dim, bias=False) for _ in range(c.extra_heads_num_heads)
        )
        self.linears = nn.ModuleList(nn.Linear(head_dim, c.card, bias=c.bias_proj) for _ in range(c.dep_q))
        # Kyutai's conditioners (Hibiki's "description" label), kept in float32.
        self.condition_provider = (
            ConditionProvider(c.conditioners, c.dim) if c.conditioners else None
        )

    # --- ids -----------------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def initial_token_id(self) -> int:
        """Audio token fed before the first frame (and in the delay gaps)."""
        return self.config.card

    @property
    def text_initial_token_id(self) -> int:
        return self.config.text_card

    @property
    def zero_token_id(self) -> int:
        return ZERO_TOKEN

    def initial_tokens(self, device: torch.device | None = None) -> torch.Tensor:
        """`[K]`: text initial token, then the audio initial token for every audio row."""
        ids = [self.text_initial_token_id] + [self.initial_token_id] * self.config.n_q
        return torch.tensor(ids, dtype=torch.long, device=device)

    def check_tokens(self, codes: torch.Tensor) -> None:
        """Raise a ValueError naming the row when `codes [B, K, T]` holds an impossible id.

        Reads the tensor on the host: used on offline calls, not in the streaming step.
        """
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"expected tokens [B, {self.num_codebooks}, T] (text + n_q={self.config.n_q} audio rows), "
                f"got {tuple(codes.shape)}"
            )
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ValueError(f"tokens must be integers, got {codes.dtype}")
        c = self.config
        text_max = (c.text_card + 1) * (c.text_card + 2) - 1 if c.demux_second_stream else c.text_card
        if codes.numel() == 0:
            return
        lows = codes.amin(dim=(0, 2)).tolist()
        highs = codes.amax(dim=(0, 2)).tolist()
        for row, (low, high) in enumerate(zip(lows, highs)):
            top = text_max if row == 0 else c.card
            name = "text row 0" if row == 0 else f"audio row {row}"
            if low < ZERO_TOKEN or high > top:
                raise ValueError(
                    f"token ids out of range in {name}: found [{low}, {high}], allowed -1..{top}"
                )

    # --- conditioning -------------------------------------------------------------------------
    @property
    def is_conditioned(self) -> bool:
        return self.condition_provider is not None

    def condition_sum(self, batch: list[ConditionValues]) -> torch.Tensor:
        """The per-step input offset `[B, 1, dim]` (float32) for each item's conditions."""
        if self.condition_provider is None:
            raise ValueError("this model has no conditioners")
        return self.condition_provider.sum_condition(batch, self.config.sum_conditions)

    def condition_cross(self, batch: list[ConditionValues]) -> torch.Tensor:
        """The cross-attention source `[B, S, dim]` (float32) for each item's conditions."""
        if self.condition_provider is None or not self.config.cross_attention:
            raise ValueError("this model has no cross-attention conditioning")
        c = self.config
        return self.condition_provider.cross_source(batch, c.cross_conditions, c.cross_pos_emb_scale)

    def conditioning(self, batch: list[ConditionValues]) -> Conditioning:
        """Everything the conditions give the temporal transformer (sum offset, cross source)."""
        c = self.config
        return Conditioning(
            sum=self.condition_sum(batch) if c.sum_conditions else None,
            cross=self.condition_cross(batch) if c.cross_attention else None,
        )

    def set_cross_source(self, rows: torch.Tensor, source: torch.Tensor) -> None:
        """While streaming: slots `rows` (long `[n]`) cross-attend to `source` `[n, S, dim]`
        (`condition_cross`); keys and values are computed here once, per layer."""
        self.transformer.set_cross_source(rows, source)

    # --- temporal transformer ---------------------------------------------------------------
    def embed(self, codes: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the row embeddings, `[B, K, T]` -> `[B, T, dim]` (audio rows first, as moshi),
        plus the "sum" condition `[B, 1, dim]` when given."""
        x = None
        for k, emb in enumerate(self.emb):
            e = emb(codes[:, 1 + k])
            x = e if x is None else x + e
        text = self.text_emb(codes[:, 0])
        x = text if x is None else x + text
        if condition is not None:
            x = x + condition.to(x.dtype)
        return x

    def forward_temporal(
        self, codes: torch.Tensor, condition: torch.Tensor | None = None,
        cross: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input tokens `[B, K, T]` -> (hidden `[B, T, dim]` after out_norm, text logits `[B, 1, T, Ct]`).

        Offline: the whole sequence. Inside `streaming(B)`: the next T steps of every slot
        (no host sync; ids are not checked there). Codes are the tokens *input* at those
        steps, already delayed and shifted by the caller. `condition` `[B, 1, dim]`: the
        conditioned model's per-step offset (`condition_sum`); required when it has one.
        `cross` `[B, S, dim]` (offline): the cross-attention source (`condition_cross`); while
        streaming each slot's is set once with `set_cross_source`.
        """
        if not self.is_streaming:
            self.check_tokens(codes)
            if self.config.sum_conditions and condition is None:
                raise ValueError("this model is conditioned: pass condition=lm.condition_sum(...)")
            if self.config.cross_attention and cross is None:
                raise ValueError("this model is conditioned by cross-attention: pass "
                                 "cross=lm.condition_cross(...)")
        hidden = self.out_norm(self.transformer(self.embed(codes, condition), cross))
        return hidden, self.text_linear(hidden)[:, None]

    # --- audio heads ------------------------------------------------------------------------
    def _depformer_parts(self, k: int) -> tuple[nn.Module, nn.Module, nn.Module | None, nn.Module]:
        """Codebook k's depformer modules: input projection, token embedding, norm, head.

        Looked up once and kept in a plain list (the streaming step asks for them every
        codebook of every frame; ModuleList indexing costs more than the tiny matmuls)."""
        parts = self.__dict__.get("_depformer_parts_cache")
        if parts is None:
            c = self.config
            assert self.depformer_text_emb is not None and self.depformer_emb is not None
            parts = []
            for q in range(c.dep_q):
                index = 0
                if c.depformer_multi_linear:
                    schedule = c.depformer_weights_per_step_schedule
                    index = schedule[q] if schedule is not None else q
                embedding = self.depformer_text_emb if q == 0 else self.depformer_emb[q - 1]
                norm = None if self.depformer_norms is None else self.depformer_norms[q]
                if isinstance(norm, nn.Identity):
                    norm = None
                parts.append((self.depformer_in[index], embedding, norm, self.linears[q]))
            self.__dict__["_depformer_parts_cache"] = parts
        return parts[k]

    def _depformer_input(self, k: int, hidden: torch.Tensor, prev_tokens: torch.Tensor) -> torch.Tensor:
        projection, embedding, _, _ = self._depformer_parts(k)
        return projection(hidden) + embedding(prev_tokens)

    def _head(self, k: int, x: torch.Tensor) -> torch.Tensor:
        _, _, norm, linear = self._depformer_parts(k)
        if norm is not None:
            x = norm(x)
        return linear(x)

    def depformer_logits(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced depformer: hidden `[B, T, dim]`, the step's tokens `[B, 1+dep_q, T]`
        (text, then generated audio) -> logits `[B, dep_q, T, card]`."""
        if self.depformer is None:
            raise RuntimeError("this model has no depformer (dep_q == 0 or parallel heads)")
        B, T, _ = hidden.shape
        dep_q = self.config.dep_q
        inputs = [self._depformer_input(k, hidden, targets[:, k]) for k in range(dep_q)]
        x = torch.stack(inputs, dim=2).reshape(B * T, dep_q, -1)  # one depth sequence per step
        out = self.depformer(x)
        logits = [self._head(k, out[:, k]).view(B, T, -1) for k in range(dep_q)]
        return torch.stack(logits, dim=1)

    def depformer_reset(self) -> None:
        """Start a new frame of the streaming depformer (all slots)."""
        if self.depformer is None:
            raise RuntimeError("this model has no depformer (dep_q == 0 or parallel heads)")
        self.depformer.reset_all_slots()

    def depformer_step(self, k: int, hidden: torch.Tensor, prev_tokens: torch.Tensor) -> torch.Tensor:
        """Streaming depformer, codebook k: hidden `[B, 1, dim]`, prev_tokens `[B, 1]` (the text
        token for k=0, else the audio token of codebook k-1) -> logits `[B, 1, card]`.
        Call `depformer_reset()` before k=0 of each frame."""
        depformer = self.depformer
        if depformer is None:
            raise RuntimeError("this model has no depformer (dep_q == 0 or parallel heads)")
        state = depformer.state
        if state is None:
            raise RuntimeError("depformer_step needs lm.streaming(batch_size)")
        if not 0 <= k < self.config.dep_q:
            raise ValueError(f"codebook index k={k} outside 0..{self.config.dep_q - 1}")
        if state.host_step != k:  # type: ignore[attr-defined]
            raise RuntimeError(
                f"depformer_step({k}) after {state.host_step} steps of this frame; "  # type: ignore[attr-defined]
                "call depformer_reset() before k=0 and go through k in order"
            )
        x = self._depformer_input(k, hidden, prev_tokens)
        return self._head(k, depformer(x))

    def parallel_audio_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Parallel heads: hidden `[B, T, dim]` -> logits `[B, dep_q, T, card]`."""
        if self.config.audio_heads != "parallel":
            raise RuntimeError("parallel_audio_logits needs audio_heads='parallel'")
        return torch.stack([linear(hidden) for linear in self.linears], dim=1)

    def extra_heads_probs(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Softmax of each extra head (Kyutai's VAD): `[B, T, dim]` -> list of `[B, T, n]`."""
        return [torch.softmax(head(hidden), dim=-1) for head in self.extra_heads]

    # --- training -------------------------------------------------------------------------
    def forward(self, codes: torch.Tensor, temporal_codes: torch.Tensor | None = None,
                condition: torch.Tensor | None = None, cross: torch.Tensor | None = None) -> LMOutput:
        """Teacher forcing on undelayed codes `[B, K, T]` (see the module docstring).

        `temporal_codes` (same shape, optional): what the temporal transformer reads instead
        of `codes`, e.g. codes with noise against exposure bias; the depformer is still
        teacher-forced with `codes` within each step. `condition`, `cross`: see
        `forward_temporal`.
        """
        if self.is_streaming:
            raise RuntimeError("forward() is offline; use forward_temporal() while streaming")
        self.check_tokens(codes)
        B, K, T = codes.shape
        c = self.config
        initial = self.initial_tokens(codes.device)
        first = initial.view(1, K, 1).expand(B, K, 1).to(codes.dtype)
        delayed = torch.cat([first, delay_streams(codes, c.delays, initial)], dim=2)
        temporal_inputs = delayed
        if temporal_codes is not None:
            if temporal_codes.shape != codes.shape:
                raise ValueError(f"temporal_codes {tuple(temporal_codes.shape)} must have the "
                                 f"shape of codes {tuple(codes.shape)}")
            self.check_tokens(temporal_codes)
            temporal_inputs = torch.cat(
                [first, delay_streams(temporal_codes, c.delays, initial)], dim=2)
        hidden, text_logits = self.forward_temporal(temporal_inputs[:, :, :-1], condition, cross)
        if c.dep_q == 0:
            audio_logits = hidden.new_zeros(B, 0, T, c.card)
        elif c.audio_heads == "parallel":
            audio_logits = self.parallel_audio_logits(hidden)
        else:
            audio_logits = self.depformer_logits(hidden, delayed[:, : 1 + c.dep_q, 1:])
        logits, mask = undelay_logits(audio_logits, c.delays[1 : 1 + c.dep_q])
        mask &= codes[:, 1 : 1 + c.dep_q] != ZERO_TOKEN
        text_logits, text_mask = undelay_logits(text_logits, c.delays[:1])
        text_mask &= codes[:, :1] != ZERO_TOKEN
        return LMOutput(logits, mask, text_logits, text_mask)

    def compute_loss(self, codes: torch.Tensor, output: LMOutput | None = None, *,
                     text_weight: float = 1.0, first_codebook_weight: float = 1.0,
                     audio_weight: float = 1.0) -> LMLoss:
        """Cross-entropy per stream over its valid positions (-1 targets ignored).

        total = (w_text L_text + w_first L_audio[0] + w_rest sum_k>0 L_audio[k]) / (sum of weights)
        """
        if output is None:
            output = self(codes)
        c = self.config
        text = _masked_cross_entropy(output.text_logits[:, 0], codes[:, 0], output.text_mask[:, 0])
        audio = [
            _masked_cross_entropy(output.logits[:, k], codes[:, 1 + k], output.mask[:, k])
            for k in range(c.dep_q)
        ]
        audio_losses = torch.stack(audio) if audio else text.new_zeros(0)
        weights = [text_weight] + [first_codebook_weight] + [audio_weight] * max(c.dep_q - 1, 0)
        weights = weights[: 1 + c.dep_q]
        losses = torch.cat([text[None], audio_losses])
        weight_tensor = torch.tensor(weights, dtype=losses.dtype, device=losses.device)
        total = (weight_tensor * losses).sum() / weight_tensor.sum().clamp(min=1e-12)
        return LMLoss(total=total, text=text, audio=audio_losses)


def _masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean CE of `[B, T, C]` logits against `[B, T]` targets where mask; 0 when none are.

    Targets that are not predictable classes (-1, or an initial token id) are ignored.
    """
    valid = mask & (targets >= 0) & (targets < logits.shape[-1])
    safe_logits = torch.where(valid[..., None], logits, 0.0).float()
    safe_targets = torch.where(valid, targets, 0).long()
    ce = F.cross_entropy(safe_logits.flatten(0, 1), safe_targets.flatten(), reduction="none")
    ce = ce.view_as(safe_targets) * valid
    return ce.sum() / valid.sum().clamp(min=1)
