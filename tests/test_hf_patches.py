"""The transformers 5.23 workarounds: each needed today, each detected when upstream fixes it."""

from __future__ import annotations

import pytest
from transformers.models.gemma4_unified_assistant import (
    Gemma4UnifiedAssistantConfig,
    Gemma4UnifiedAssistantForCausalLM,
)

from gemma_edge.exporter.checkpoint.hf_patches import apply_transformers_patches, original_kv_sharing_modes
from gemma_edge.exporter.training.reference_model import drafter_config_dict


def test_upstream_still_rejects_an_all_shared_assistant() -> None:
    """Fails once transformers accepts assistant configs itself: then delete the patch."""
    config = Gemma4UnifiedAssistantConfig(**drafter_config_dict())
    with pytest.raises(ValueError, match="set of layer types producing a cache"):
        original_kv_sharing_modes(config.text_config)


def test_patched_assistant_builds_and_every_layer_reuses() -> None:
    apply_transformers_patches()
    config = Gemma4UnifiedAssistantConfig(**drafter_config_dict())
    model = Gemma4UnifiedAssistantForCausalLM(config)
    assert config.text_config.kv_sharing_modes == ["reuse", "reuse"]
    assert all(not hasattr(layer.self_attn, "k_proj") for layer in model.model.layers)


def test_patch_leaves_targets_unchanged() -> None:
    from transformers import Gemma4UnifiedConfig

    from gemma_edge.exporter.training.reference_model import target_config_dict

    apply_transformers_patches()
    text = Gemma4UnifiedConfig(**target_config_dict()).text_config
    assert text.kv_sharing_modes == original_kv_sharing_modes(text)
    assert text.kv_sharing_modes.count("store") == 2
