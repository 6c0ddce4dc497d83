"""The target decoder as one export-friendly step: prefill, decode and verify in one graph.

    inputs_embeds [B,S,H] ─┬─> layer 0 ── ... ── layer N-1 ─> norm ─┬─> lm_head ─> softcap ─> logits [B,S,V]
    position_ids  [B,S]    │     │ past_key_i [B,KV,P,D] ┐           └─> hidden [B,S,H]  (drafter input)
    mask_full     [B,1,S,T]      │ past_value_i          ├─ cached_attention ─> present_key_i / present_value_i
    mask_sliding  [B,1,S,T]      └ (KV-shared layers read the store layer's first T rows instead)
    logit_rows    [N]            (logits [B,N,V] only for these rows: the last in prefill)

T = P + S. Each cache layer's attention is one `cached_attention` op (GroupQueryAttention in
ONNX): given arrays, present = past ++ new [B,KV,T,D]; given one buffer of capacity C bound
as both past and present, the new rows are written in place (components/cached_attention.py).
Token embeddings come in as `inputs_embeds` so image and audio soft tokens are merged outside
the graph; masks are additive (0 / -inf-like) and built by the runtime, which is what lets
one image's soft tokens attend to each other on sliding layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from gemma_edge.artifact.manifest import CacheLayer, LayerType

from .attention import grouped_attention, normed_key_value, normed_query, residual_block, rotate
from .cached_attention import cached_attention_for_export, visible_prefix


@dataclass
class Rope:
    """RoPE of one layer type at the step's positions: cos/sin [B,S,D], position_ids [B,S]."""

    layer_type: str
    cos: torch.Tensor
    sin: torch.Tensor
    position_ids: torch.Tensor


class CacheAttention(Protocol):
    """How a step form keeps K/V: the ONNX step appends (or writes a bound buffer in place),
    the LiteRT step writes fixed buffers. Shapes: query [B,Hq,S,D], new K/V [B,KV,S,D],
    mask [B,1,S,T] additive, attention out [B,S,Hq*D]."""

    def store_and_attend(
        self, layer: int, query: torch.Tensor, new_key: torch.Tensor, new_value: torch.Tensor, mask: torch.Tensor, rope: Rope
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotate the (normed) query and new key by `rope`, store the new K/V of cache layer
        `layer`, attend -> (out, rotated key, value the KV-shared layers read)."""
        ...

    def attend_shared(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A KV-shared layer attends to its store layer's (key, value)."""
        ...


class DecoderLayers(nn.Module):
    """The HF text decoder's weights run layer by layer, with the K/V bookkeeping left to the
    caller's CacheAttention: AppendingCache below (ONNX), FixedCacheWriter (LiteRT)."""

    def __init__(self, hf_model: nn.Module, cache_layers: tuple[CacheLayer, ...], stores: dict[LayerType, int]):
        """`hf_model` is a Gemma4UnifiedForConditionalGeneration (or ...ForCausalLM)."""
        super().__init__()
        language_model = hf_model.model.language_model if hasattr(hf_model.model, "language_model") else hf_model.model
        self.text_config = language_model.config
        self.layers = language_model.layers
        self.norm = language_model.norm
        self.rotary_emb = language_model.rotary_emb
        self.lm_head = hf_model.lm_head
        self.softcap = self.text_config.final_logit_softcapping
        self.cache_layer_indices = [cache.layer for cache in cache_layers]
        self.stores = {layer_type.value: index for layer_type, index in stores.items()}

    def run(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        masks: dict[str, torch.Tensor],
        cache: CacheAttention,
        logit_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs_embeds [B,S,H], position_ids [B,S], masks[layer type] [B,1,S,T] additive,
        logit_rows [N] (None: all S) -> logits [B,N,V], final-norm hidden [B,S,H]."""
        rope = {
            layer_type: self.rotary_emb(inputs_embeds, position_ids, layer_type)
            for layer_type in dict.fromkeys(self.text_config.layer_types)  # first-seen order: a set's order varies per process
        }
        attended: dict[int, list[torch.Tensor]] = {}  # cache layer -> [key, value]
        hidden = inputs_embeds
        for index, layer in enumerate(self.layers):
            layer_type = self.text_config.layer_types[index]
            cos, sin = rope[layer_type]
            normed = layer.input_layernorm(hidden)
            query = normed_query(layer.self_attn, normed)  # [B, Hq, S, D], not rotated
            mask = masks[layer_type]
            if index in self.cache_layer_indices:
                new_key, new_value = normed_key_value(layer.self_attn, normed)  # [B, KV, S, D]
                rotary = Rope(layer_type, cos, sin, position_ids)
                attention_out, *attended[index] = cache.store_and_attend(index, query, new_key, new_value, mask, rotary)
            else:  # KV-shared layer
                key, value = attended[self.stores[layer_type]]
                attention_out = cache.attend_shared(rotate(query, cos, sin), key, value, mask)
            hidden = residual_block(layer, hidden, attention_out)

        hidden = self.norm(hidden)
        logits = self.lm_head(hidden if logit_rows is None else hidden.index_select(1, logit_rows))
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits, hidden


def rope_tables(rotary_emb: nn.Module, layer_type: str, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of RoPE at positions 0..positions-1 as GroupQueryAttention's caches [P, D/2]: the
    module's own values (transformers builds cos = cat(f, f).cos(), so the halves are equal)."""
    cos, sin = rotary_emb(torch.zeros(1), torch.arange(positions)[None], layer_type)  # [1, P, D]
    half = cos.shape[-1] // 2
    return cos[0, :, :half].contiguous(), sin[0, :, :half].contiguous()


class AppendingCache:
    """The ONNX form: cached_attention per cache layer; `present` collects its outputs."""

    def __init__(
        self,
        past: dict[int, tuple[torch.Tensor, torch.Tensor]],
        tables: dict[str, tuple[torch.Tensor, torch.Tensor]],
        batch: int,
        total: int,
    ):
        """batch and total (T = P + S) may be symbolic: they size GroupQueryAttention's
        seqlens_k [B] = T-1 and total_length [] = T, made once here for every layer."""
        self.past = past
        self.tables = tables  # layer type -> RoPE (cos, sin) [P, D/2]
        self.seqlens_k = torch.full((batch,), total - 1, dtype=torch.int32)
        self.total_length = torch.full((), total, dtype=torch.int32)
        self.present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def store_and_attend(
        self, layer: int, query: torch.Tensor, new_key: torch.Tensor, new_value: torch.Tensor, mask: torch.Tensor, rope: Rope
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        past_key, past_value = self.past[layer]
        cos_table, sin_table = self.tables[rope.layer_type]
        out, present_key, present_value = cached_attention_for_export(
            query, new_key, new_value, past_key, past_value, mask, rope.position_ids, cos_table, sin_table,
            self.seqlens_k, self.total_length,
        )  # fmt: skip
        self.present[layer] = (present_key, present_value)
        return out, present_key, present_value

    def attend_shared(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # A bound present buffer holds C >= T rows; only the first T are this sequence's.
        return grouped_attention(query, visible_prefix(key, mask), visible_prefix(value, mask), mask)


class DecoderStep(nn.Module):
    def __init__(
        self, hf_model: nn.Module, cache_layers: tuple[CacheLayer, ...], stores: dict[LayerType, int], rope_positions: int
    ):
        """`rope_positions`: the longest sequence the step serves (the export's context length);
        the RoPE tables GroupQueryAttention reads cover exactly these positions."""
        super().__init__()
        self.body = DecoderLayers(hf_model, cache_layers, stores)
        self.layer_types = sorted(set(self.body.text_config.layer_types))
        for layer_type in self.layer_types:
            cos, sin = rope_tables(self.body.rotary_emb, layer_type, rope_positions)
            self.register_buffer(f"rope_cos_{layer_type}", cos, persistent=False)
            self.register_buffer(f"rope_sin_{layer_type}", sin, persistent=False)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        mask_full: torch.Tensor,
        mask_sliding: torch.Tensor,
        logit_rows: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """logit_rows [N] indexes the S rows; past = (past_key_i, past_value_i) per cache layer, in layer order."""
        layer_order = self.body.cache_layer_indices
        tables = {t: (getattr(self, f"rope_cos_{t}"), getattr(self, f"rope_sin_{t}")) for t in self.layer_types}
        past_kv = {layer: (past[2 * n], past[2 * n + 1]) for n, layer in enumerate(layer_order)}
        cache = AppendingCache(past_kv, tables, batch=inputs_embeds.shape[0], total=mask_full.shape[-1])
        masks = {LayerType.FULL.value: mask_full, LayerType.SLIDING.value: mask_sliding}
        logits, hidden = self.body.run(inputs_embeds, position_ids, masks, cache, logit_rows)
        flat_present = [tensor for layer in layer_order for tensor in cache.present[layer]]
        return (logits, hidden, *flat_present)
