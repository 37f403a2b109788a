"""`task.init_from`: start a task's LM from a model directory, a Hugging Face repo id or a
`dsm train` checkpoint, growing it where the recipe's model is larger."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from dsm.models.hub import ModelRefError, is_repo_ref, resolve_model_ref
from dsm.recipes.config import RecipeError

# The text tables: what a token id means belongs to the tokenizer they were trained with.
TEXT_TABLES = re.compile(r"(text_emb(\.\d+)?|depformer_text_emb|text_linear)\.(weight|bias)$")


def load_initial_lm_weights(lm: nn.Module, source: str, recipe_source: str, model_name: str,
                            kind: str, text: bool = True) -> None:
    """Load `task.init_from` into `lm`: a model directory (`load_lm`), a Hugging Face repo
    id resolved to one (`dsm.models.hub`, e.g. "kyutai/stt-1b-en_fr@main") or a `dsm train`
    checkpoint whose models hold `model_name` (a run of the same kind). Every weight must
    fit (a missing, extra or differently shaped tensor is a RecipeError naming them), with
    two exceptions, both of which start out computing exactly what the source did:
    - a model that reads more audio codebooks than the source gets zero input embeddings
      for the extra ones, and training teaches it to use the finer codes;
    - a model whose temporal transformer has more layers than the source's (a multiple of
      them) gets each source layer followed by copies of it whose residual outputs are
      zero (`_with_new_layers`): a deeper model that training then puts to use.
    With `text=False` (`task.init_from_text = false`, for a new tokenizer) the text input
    embeddings and text output head keep `lm`'s fresh initialisation, of any vocabulary
    size; everything else comes from the source."""
    path = Path(source)
    where = f"{recipe_source}: key 'task.init_from'"
    if not path.exists() and is_repo_ref(source):
        try:
            path = resolve_model_ref(source)
        except ModelRefError as error:
            raise RecipeError(f"{where}: {error}") from None
    if path.is_dir():
        from dsm.models import load_lm

        try:
            weights = load_lm(path).state_dict()
        except (ValueError, OSError) as error:
            raise RecipeError(f"{where}: {error}") from None
    elif not path.is_file():
        raise RecipeError(f"{where}: {path} is neither a model directory nor a checkpoint (nor "
                          "a Hugging Face repo id, owner/name[@REVISION])")
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
        models = state.get("models") if isinstance(state, dict) else None
        if not isinstance(models, dict) or model_name not in models:
            raise RecipeError(f"{where}: {path} is not a dsm train checkpoint of a {kind} run")
        weights = models[model_name]
    weights = dict(weights)
    if not text:
        fresh = lm.state_dict()
        tables = [key for key in fresh if TEXT_TABLES.fullmatch(key)]
        weights = {key: value for key, value in weights.items() if not TEXT_TABLES.fullmatch(key)}
        weights.update({key: fresh[key] for key in tables})
    weights = _with_new_input_embeddings(lm, _with_new_layers(lm, weights))
    try:
        lm.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise RecipeError(f"{where}: its weights do not fit this recipe's model: {error}"
                          ) from None


def _with_new_input_embeddings(lm: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """`weights` plus zero tables for the audio input embeddings (`emb.K.weight`) that `lm`
    has beyond the source's `emb.0` .. `emb.{N-1}`; unchanged when anything else differs."""
    target = lm.state_dict()
    extra = [key for key in target if key not in weights]
    source_rows = sum(1 for key in weights if key.startswith("emb.") and key.endswith(".weight"))
    grown = [f"emb.{k}.weight" for k in range(source_rows, source_rows + len(extra))]
    if not extra or sorted(extra) != sorted(grown) or any(key not in target for key in weights):
        return weights
    return {**weights, **{key: torch.zeros_like(target[key]) for key in extra}}


_LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.(.+)")
# The last projection of each residual branch (attention, plain or gated feed-forward):
# zero, the layer adds nothing to the residual stream.
_RESIDUAL_OUTPUT = re.compile(r"(self_attn\.out_proj|linear2|gating(\.\d+)?\.linear_out)"
                              r"\.(weight|bias)$")


def _with_new_layers(lm: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """`weights` with the temporal transformer's N layers spread over `lm`'s M layers when
    M is a multiple of N: layer j is source layer j * N // M, and every copy after the
    first has zero residual outputs, so it passes its input through unchanged. Its other
    weights are the source layer's, a better start than noise once the outputs grow.
    Unchanged when the layer counts are equal or do not divide."""
    def layer_count(keys: Iterable[str]) -> int:
        found = [int(match.group(1)) for key in keys if (match := _LAYER_KEY.fullmatch(key))]
        return 1 + max(found) if found else 0

    source_layers, target_layers = layer_count(weights), layer_count(lm.state_dict())
    if not source_layers or target_layers <= source_layers or target_layers % source_layers:
        return weights
    per_source = target_layers // source_layers
    grown = {key: value for key, value in weights.items() if not _LAYER_KEY.fullmatch(key)}
    for key, value in weights.items():
        match = _LAYER_KEY.fullmatch(key)
        if match is None:
            continue
        layer, name = int(match.group(1)), match.group(2)
        for copy in range(per_source):
            silent = copy > 0 and _RESIDUAL_OUTPUT.search(name) is not None
            grown[f"transformer.layers.{layer * per_source + copy}.{name}"] = (
                torch.zeros_like(value) if silent else value.clone())
    return grown
