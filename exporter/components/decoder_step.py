"""The target decoder as one export-friendly step: prefill, decode and verify in one graph.

    inputs_embeds [B,S,H] ─┬─> layer 0 ── ... ── layer N-1 ─> norm ─┬─> lm_head ─> softcap ─> logits [B,S,V]
    position_ids  [B,S]    │     │ past_key_i [B,KV,P,D] ┐           └─> hidden [B,S,H]  (drafter input)
    mask_full     [B,1,S,T]      │ past_value_i          ├─ concat ─> present_key_i / present_value_i [B,KV,T,D]
    mask_sliding  [B,1,S,T]      └ (KV-shared layers read the store layer's T-long K/V instead)

T = P + S. Token embeddings come in as `inputs_embeds` so image and audio soft tokens are
merged outside the graph; masks are additive (0 / -inf-like) and built by the runtime,
which is what lets one image's soft tokens attend to each other on sliding layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gemma_edge.runtime.manifest import CacheLayer, LayerType

from .attention import grouped_attention, project_key_value, project_query, residual_block

# (layer index, new key [B,KV,S,D], new value [B,KV,S,D]) -> (key, value) the layer attends to
KVStore = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class DecoderLayers(nn.Module):
    """The HF text decoder's weights run layer by layer, with the K/V bookkeeping left to the
    caller: the ONNX step concatenates growing caches, the LiteRT step writes fixed buffers."""

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
        store_kv: KVStore,
        value_transposed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs_embeds [B,S,H], position_ids [B,S], masks[layer type] [B,1,S,T] additive
        -> logits [B,S,V], final-norm hidden [B,S,H]."""
        rope = {
            layer_type: self.rotary_emb(inputs_embeds, position_ids, layer_type)
            for layer_type in set(self.text_config.layer_types)
        }
        attended: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        hidden = inputs_embeds
        for index, layer in enumerate(self.layers):
            layer_type = self.text_config.layer_types[index]
            cos, sin = rope[layer_type]
            normed = layer.input_layernorm(hidden)
            query = project_query(layer.self_attn, normed, cos, sin)  # [B, Hq, S, D]
            if index in self.cache_layer_indices:
                new_key, new_value = project_key_value(layer.self_attn, normed, cos, sin)  # [B, KV, S, D]
                attended[index] = store_kv(index, new_key, new_value)
            else:
                attended[index] = attended[self.stores[layer_type]]  # KV-shared layer
            key, value = attended[index]
            attention_out = grouped_attention(query, key, value, masks[layer_type], value_transposed)
            hidden = residual_block(layer, hidden, attention_out)

        hidden = self.norm(hidden)
        logits = self.lm_head(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits, hidden


class DecoderStep(nn.Module):
    def __init__(self, hf_model: nn.Module, cache_layers: tuple[CacheLayer, ...], stores: dict[LayerType, int]):
        super().__init__()
        self.body = DecoderLayers(hf_model, cache_layers, stores)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        mask_full: torch.Tensor,
        mask_sliding: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """past = (past_key_i, past_value_i) per cache layer, in layer order."""
        layer_order = self.body.cache_layer_indices
        past_kv = {layer: (past[2 * n], past[2 * n + 1]) for n, layer in enumerate(layer_order)}
        present: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def concatenate(layer: int, new_key: torch.Tensor, new_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            past_key, past_value = past_kv[layer]
            present[layer] = (torch.cat([past_key, new_key], dim=2), torch.cat([past_value, new_value], dim=2))
            return present[layer]

        masks = {LayerType.FULL.value: mask_full, LayerType.SLIDING.value: mask_sliding}
        logits, hidden = self.body.run(inputs_embeds, position_ids, masks, concatenate)
        flat_present = [tensor for layer in layer_order for tensor in present[layer]]
        return (logits, hidden, *flat_present)
