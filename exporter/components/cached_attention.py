"""Attention that appends to a K/V cache, as one op: `torch.ops.gemma_edge.cached_attention`.

In torch (tests, training: `append_and_attend`) it is what it says: concatenate the new K/V to the past and attend
under the additive mask. The ONNX writer translates it to onnxruntime's GroupQueryAttention
(exporter/onnx/contrib_ops.py), which runs in one of two modes, chosen by the runtime per call:

- past [B,KV,P,D] as plain arrays: present = past ++ new [B,KV,P+S,D], as in torch;
- past and present bound to the same buffer [B,KV,C,D] (capacity C >= P+S, runtime/kv_cache):
  the new rows are written in place at P..P+S-1 and nothing is copied per step.

The mask [B,1,S,T] (T = P+S) carries every rule (causal, window, image blocks), so the op is
run with causal=0 and the mask as attention_bias; rows >= T of a bound buffer are never read.
RoPE is applied inside the op too (do_rotary, from per-position cos/sin tables of the
context length): about 14 small kernels per layer fewer. The q/k norms stay outside: CPU
GroupQueryAttention does not take their weights (onnxruntime 1.32).
"""

from __future__ import annotations

import torch

from .attention import grouped_attention, rotate


def rotate_by_table(
    states: torch.Tensor, position_ids: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor
) -> torch.Tensor:
    """RoPE from a per-position table, as GroupQueryAttention's do_rotary computes it:
    states [B,N,S,D], position_ids [B,S], tables [P, D/2] (cos/sin of position x inv_freq;
    rotate_half pairs dims i and i + D/2) -> [B,N,S,D]."""
    cos = cos_table[position_ids]  # [B, S, D/2]
    sin = sin_table[position_ids]
    return rotate(states, torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1))


def append_and_attend(
    query: torch.Tensor,
    new_key: torch.Tensor,
    new_value: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
    seqlens_k: torch.Tensor,
    total_length: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """query [B,Hq,S,D] and new_key [B,KV,S,D] normed but not rotated, new_value [B,KV,S,D],
    past [B,KV,P,D], mask [B,1,S,P+S] additive, position_ids [B,S], RoPE tables [L,D/2]
    -> attention [B,S,Hq*D], present_key (rotated), present_value [B,KV,P+S,D].
    seqlens_k [B] = T-1 and total_length [] = T (int32) are what GroupQueryAttention takes;
    the step computes them once for all layers, and the math here does not need them.
    Plain torch (autograd works: training runs this); export traces the op below instead."""
    query = rotate_by_table(query, position_ids, cos_table, sin_table)
    new_key = rotate_by_table(new_key, position_ids, cos_table, sin_table)
    present_key = torch.cat([past_key, new_key], dim=2)
    present_value = torch.cat([past_value, new_value], dim=2)
    return grouped_attention(query, present_key, present_value, mask), present_key, present_value


def cached_attention_for_export(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op while torch.export traces (one node the ONNX writer translates), else the math."""
    if torch.compiler.is_exporting():
        return torch.ops.gemma_edge.cached_attention(*args)
    return append_and_attend(*args)


# The op is the same function; its fake (shape) implementation too, run on fake tensors.
cached_attention = torch.library.custom_op("gemma_edge::cached_attention", mutates_args=())(append_and_attend)
cached_attention.register_fake(append_and_attend)


def visible_prefix(cache: torch.Tensor, mask: torch.Tensor, axis: int = 2) -> torch.Tensor:
    """The first T = mask.shape[-1] positions of a cache: a bound buffer holds C >= T rows and
    only those T are valid (for an array cache T is its length, and this is a no-op)."""
    return cache.narrow(axis, 0, mask.shape[-1])
