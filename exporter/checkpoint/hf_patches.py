"""Narrow workarounds for transformers 5.23 defects that touch gemma4_unified export.

Each patch is as small as possible and has a test (tests/test_hf_patches.py) that fails
once upstream no longer needs it, so it can be deleted then.
"""

from __future__ import annotations

from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedTextConfig

_original_kv_sharing_modes = Gemma4UnifiedTextConfig.kv_sharing_modes


def _kv_sharing_modes_allowing_all_shared(self: Gemma4UnifiedTextConfig) -> list[str | None]:
    """Defect 1: an assistant config marks every layer KV-shared (it reads the target's K/V),
    and upstream's property raises "The set of layer types producing a cache is different..."
    because no layer produces a cache. For that case every layer simply reuses."""
    if self.num_kv_shared_layers >= self.num_hidden_layers:
        return ["reuse"] * self.num_hidden_layers
    return _original_kv_sharing_modes.fget(self)


def apply_transformers_patches() -> None:
    """Idempotent; call before building any gemma4_unified(_assistant) module."""
    Gemma4UnifiedTextConfig.kv_sharing_modes = property(_kv_sharing_modes_allowing_all_shared)


def original_kv_sharing_modes(config: Gemma4UnifiedTextConfig) -> list[str | None]:
    """Upstream's behaviour, for the test that detects when the patch becomes unnecessary."""
    return _original_kv_sharing_modes.fget(config)
