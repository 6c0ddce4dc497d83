"""Attention math shared by the decoder step and the drafter step.

The HF modules are reused for every weight-bearing leaf (projections, norms, MLP, RoPE);
only the parts that do not export (Cache objects, mask factories, repeat_kv copies) are
rewritten here. Masks are additive float tensors built by the runtime, so one graph serves
causal prefill, decode, speculative verify and the bidirectional image blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.gemma4_unified.modeling_gemma4_unified import apply_rotary_pos_emb

from .norms import FusableRMSNorm


def grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    value_transposed: bool = False,
) -> torch.Tensor:
    """Scaled-by-one GQA without materialising repeated K/V (Gemma 4 scales via q_norm).

    query [B, Hq, S, D], key [B, KV, T, D], value [B, KV, T, D] (or [B, KV, D, T] when
    `value_transposed`, LiteRT-LM's cache layout), mask [B, 1, S, T] additive -> [B, S, Hq*D]
    """
    batch, num_heads, seq, head_dim = query.shape
    num_kv = key.shape[1]
    groups = num_heads // num_kv
    # Heads h = kv * groups + g share K/V head kv, so fold the group into the query rows.
    grouped_query = query.reshape(batch, num_kv, groups * seq, head_dim)  # [B, KV, G*S, D]
    scores = torch.matmul(grouped_query, key.transpose(2, 3))  # [B, KV, G*S, T]
    scores = scores.reshape(batch, num_kv, groups, seq, -1) + mask.unsqueeze(2)  # [B, KV, G, S, T]
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    values = value.transpose(2, 3) if value_transposed else value  # [B, KV, T, D]
    out = torch.matmul(probs.reshape(batch, num_kv, groups * seq, -1), values)  # [B, KV, G*S, D]
    out = out.reshape(batch, num_heads, seq, head_dim).transpose(1, 2)  # [B, S, Hq, D]
    return out.reshape(batch, seq, num_heads * head_dim)


def normed_query(attn: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """hidden [B, S, H] -> q_norm'ed query [B, Hq, S, D], not rotated yet."""
    batch, seq, _ = hidden.shape
    return attn.q_norm(attn.q_proj(hidden).view(batch, seq, -1, attn.head_dim)).transpose(1, 2)


def normed_key_value(attn: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [B, S, H] -> key (k_norm'ed, not rotated), value (v_norm'ed) [B, KV, S, D], new positions only.

    With attention_k_eq_v (full layers of the 12B) V is the raw K projection; K gets k_norm
    (and later RoPE), V only the scale-free v_norm, so the cached tensors differ.
    """
    batch, seq, _ = hidden.shape
    key = attn.k_proj(hidden).view(batch, seq, -1, attn.head_dim)
    if attn.v_proj is None and _one_rms_serves_both(attn, key):
        # k_norm(x) = (x / rms(x)) * w and v_norm(x) = (x / rms(x)) * 1: exported as two norms of
        # one x, the optimiser merges their common x / rms(x), which onnxruntime then cannot fuse
        # (6 kernels per such layer). Computed as V, then K = V * w, it is one fused norm and a
        # Mul, with the same float32 numbers (a product by 1 is exact).
        value = attn.v_norm(key)
        return (value * attn.k_norm.weight).transpose(1, 2), value.transpose(1, 2)
    value = attn.v_proj(hidden).view(batch, seq, -1, attn.head_dim) if attn.v_proj is not None else key
    return attn.k_norm(key).transpose(1, 2), attn.v_norm(value).transpose(1, 2)


def _one_rms_serves_both(attn: nn.Module, key: torch.Tensor) -> bool:
    """Whether K's norm is V's (scale-free) norm times a float32 weight, exactly (the fusable
    norms of an ONNX export, in float32)."""
    k_norm, v_norm = attn.k_norm, attn.v_norm
    return (
        isinstance(k_norm, FusableRMSNorm)
        and isinstance(v_norm, FusableRMSNorm)
        and k_norm.weight is not None
        and v_norm.weight is None
        and k_norm.eps == v_norm.eps
        and key.dtype == k_norm.weight.dtype == torch.float32
    )


def rotate(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: states [B, N, S, D], cos/sin [B, S, D] -> [B, N, S, D]."""
    return apply_rotary_pos_emb(states, cos, sin, unsqueeze_dim=1)


def project_query(attn: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """hidden [B, S, H] -> rotated, normed query [B, Hq, S, D]."""
    return rotate(normed_query(attn, hidden), cos, sin)


def residual_block(layer: nn.Module, hidden: torch.Tensor, attention_out: torch.Tensor) -> torch.Tensor:
    """The post-attention half of a Gemma 4 layer: sandwich norms, MLP, layer scalar.

    hidden [B, S, H] is the layer input (residual), attention_out [B, S, Hq*D] before o_proj.
    """
    hidden = hidden + layer.post_attention_layernorm(layer.self_attn.o_proj(attention_out))
    mlp_out = layer.mlp(layer.pre_feedforward_layernorm(hidden))
    hidden = hidden + layer.post_feedforward_layernorm(mlp_out)
    return hidden * layer.layer_scalar
