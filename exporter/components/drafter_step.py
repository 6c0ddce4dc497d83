"""The MTP drafter (gemma4_unified_assistant) as one export-friendly step.

    token_embeds  [B,1,Ht] ┐ (target embedding of the last token, scaled)
    target_hidden [B,1,Ht] ┴ concat ─> pre_projection ─> layers (Q only; K/V are the
    position_ids  [B,1]      target's store-layer caches [B,KV,C,D], first T rows; masks [B,1,1,T]) ─> norm ─┬─> lm_head ─> logits [B,1,V]
                                                                                            └─> post_projection ─> next_hidden [B,1,Ht]

The position is held constant through a drafting round (it is the position of the last
token, whose K/V the target has not computed yet); `next_hidden` feeds the next draft.
"""

from __future__ import annotations

import torch
from torch import nn

from gemma_edge.artifact.manifest import LayerType

from .attention import grouped_attention, project_query, residual_block
from .cached_attention import visible_prefix


def drafter_cache_types(hf_drafter: nn.Module) -> list[LayerType]:
    """The target cache types the drafter reads, in a fixed order (sliding, then full)."""
    used = {LayerType(layer_type) for layer_type in hf_drafter.config.get_text_config().layer_types}
    return [layer_type for layer_type in (LayerType.SLIDING, LayerType.FULL) if layer_type in used]


def ordered_embedding_logits(masked_embedding: nn.Module, hidden: torch.Tensor, lm_head_weight: torch.Tensor) -> torch.Tensor:
    """Export-friendly rewrite of Gemma4UnifiedAssistantMaskedEmbedder.forward (same numbers).

    Upstream fills unselected logits with `selected.min().item() - 1`; `.item()` breaks
    tracing (docs/transformers-workarounds.md, defect 4), so the fill value stays a tensor here.
    hidden [B, S, Hd] -> logits [B, S, V]
    """
    batch, seq, width = hidden.shape
    vocab = masked_embedding.vocab_size
    per_centroid = masked_embedding.vocab_size_per_centroid
    top_k = masked_embedding.centroid_intermediate_top_k
    _, top_centroids = torch.topk(masked_embedding.centroids(hidden), k=top_k, dim=-1)  # [B, S, k]
    clusters = masked_embedding.token_ordering.long().view(masked_embedding.num_centroids, per_centroid)
    selected_ids = clusters[top_centroids].reshape(batch, seq, top_k * per_centroid)  # [B, S, k*V/C]
    selected_rows = lm_head_weight[selected_ids.reshape(-1)].view(batch, seq, top_k * per_centroid, width)
    selected_logits = torch.matmul(hidden.unsqueeze(-2), selected_rows.transpose(-1, -2)).squeeze(-2)
    fill = selected_logits.min() - 1.0
    logits = torch.zeros(batch, seq, vocab, dtype=hidden.dtype, device=hidden.device) + fill
    return logits.scatter(-1, selected_ids, selected_logits)


class DrafterStep(nn.Module):
    def __init__(self, hf_drafter: nn.Module):
        """`hf_drafter` is a Gemma4UnifiedAssistantForCausalLM."""
        super().__init__()
        self.text_config = hf_drafter.config.get_text_config()
        self.pre_projection = hf_drafter.pre_projection
        self.post_projection = hf_drafter.post_projection
        self.layers = hf_drafter.model.layers
        self.norm = hf_drafter.model.norm
        self.rotary_emb = hf_drafter.model.rotary_emb
        self.lm_head = hf_drafter.lm_head
        self.masked_embedding = hf_drafter.masked_embedding
        self.cache_types = drafter_cache_types(hf_drafter)

    def forward(
        self,
        token_embeds: torch.Tensor,
        target_hidden: torch.Tensor,
        position_ids: torch.Tensor,
        mask_full: torch.Tensor,
        mask_sliding: torch.Tensor,
        *shared_kv: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """shared_kv = (key, value) of the target's store layer per `cache_types` entry, each
        [B,KV,C,D]: the target's bound cache buffers (C = capacity) or arrays (C = T); the
        first T = mask width rows are read."""
        kv = {
            layer_type.value: (visible_prefix(shared_kv[2 * n], mask_full), visible_prefix(shared_kv[2 * n + 1], mask_full))
            for n, layer_type in enumerate(self.cache_types)
        }
        masks = {LayerType.FULL.value: mask_full, LayerType.SLIDING.value: mask_sliding}
        return self.run(torch.cat([token_embeds, target_hidden], dim=-1), position_ids, masks, kv)

    def run(
        self,
        activations: torch.Tensor,
        position_ids: torch.Tensor,
        masks: dict[str, torch.Tensor],
        kv: dict[str, tuple[torch.Tensor, torch.Tensor]],
        value_transposed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """activations [B,1,2Ht] = concat(token embedding, target hidden), position_ids [B,1],
        masks/kv by layer type -> logits [B,1,V], next hidden [B,1,Ht]."""
        hidden = self.pre_projection(activations)  # [B, 1, Hd]
        rope = {
            layer_type: self.rotary_emb(hidden, position_ids, layer_type)
            for layer_type in dict.fromkeys(self.text_config.layer_types)  # first-seen order: a set's order varies per process
        }
        for index, layer in enumerate(self.layers):
            layer_type = self.text_config.layer_types[index]
            cos, sin = rope[layer_type]
            query = project_query(layer.self_attn, layer.input_layernorm(hidden), cos, sin)
            key, value = kv[layer_type]
            attention_out = grouped_attention(query, key, value, masks[layer_type], value_transposed)
            hidden = residual_block(layer, hidden, attention_out)
        hidden = self.norm(hidden)
        if self.masked_embedding is not None:
            logits = ordered_embedding_logits(self.masked_embedding, hidden, self.lm_head.weight)
        else:
            logits = self.lm_head(hidden)
        return logits, self.post_projection(hidden)
