"""A model's shape for the memory planner, counted exactly on the meta device from its
config: parameters per recipe part and the cache geometry. No weights are read, so a
12B-shaped config is counted without its 24 GB of tensors."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from gemma_edge.quantize.recipes import Part
from gemma_edge.quantize.weight_roles import checkpoint_part
from gemma_edge.targets.planner import ModelShape

from .hf_patches import apply_transformers_patches
from .layout import cache_layers


def _persistent_buffer_elements(module: torch.nn.Module) -> int:
    saved = set(module.state_dict())
    return sum(buffer.numel() for name, buffer in module.named_buffers() if name in saved)


def shape_from_configs(target_config: dict, drafter_config: dict | None = None) -> ModelShape:
    """Count parameters per part on the meta device (needs torch + transformers)."""
    apply_transformers_patches()  # an assistant config does not build without it

    def build(config_dict: dict) -> torch.nn.Module:
        config = AutoConfig.for_model(**config_dict)
        factory = AutoModelForImageTextToText if config_dict["model_type"] == "gemma4_unified" else AutoModelForCausalLM
        with torch.device("meta"):
            return factory.from_config(config)

    parameters = {part: 0 for part in Part}
    target = build(target_config)
    other = _persistent_buffer_elements(target)  # e.g. per-layer scalars, stored with the weights
    for name, parameter in target.named_parameters():  # a tied lm_head appears once, as embed_tokens
        # by the weight-role table, as the quantizers decide; an unknown weight matrix is an error
        part = checkpoint_part(name, tuple(parameter.shape))
        if part is None:  # norms, scalars, biases, position tables: kept float32
            other += parameter.numel()
        else:
            parameters[part] += parameter.numel()
    if target_config.get("tie_word_embeddings", True) or target_config.get("text_config", {}).get("tie_word_embeddings"):
        parameters[Part.LM_HEAD] += parameters[Part.EMBEDDING]  # the decoder graph holds its own copy
    if drafter_config is not None:
        drafter = build(drafter_config)
        for name, parameter in drafter.named_parameters():
            checkpoint_part(name, tuple(parameter.shape), drafter=True)  # refuses a weight matrix with no role
        # The drafter graph holds all of its tensors: its norms and scalars (a few KB) are counted
        # with its weights rather than split out.
        parameters[Part.DRAFTER] = sum(p.numel() for p in drafter.parameters()) + _persistent_buffer_elements(drafter)
    text = target.config.get_text_config()
    caches = cache_layers(text)
    return ModelShape(
        parameters=parameters,
        other_parameters=other,
        hidden_size=text.hidden_size,
        vocab_size=text.vocab_size,
        intermediate_size=text.intermediate_size,
        num_heads=text.num_attention_heads,
        max_head_dim=max(cache.head_dim for cache in caches),
        cache_layers=tuple((cache.num_kv_heads, cache.head_dim) for cache in caches),
        max_context=text.max_position_embeddings,
    )
