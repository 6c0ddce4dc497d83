"""Gemma 4's RMSNorm in the form onnxruntime fuses.

transformers writes it as x * pow(mean(x^2) + eps, -0.5) (for JAX parity); exported, that is
six ONNX ops per norm that onnxruntime's SimplifiedLayerNormFusion does not recognise, and a
decoder layer has up to seven norms. x / sqrt(mean(x^2) + eps) * w is the same function (the
two differ in the last bit) and is fused into one SimplifiedLayerNormalization kernel when
the session loads the graph. A source transform: nn.Module -> nn.Module, tested against the
module it replaces (tests/test_components.py).
"""

from __future__ import annotations

import torch
from torch import nn


class FusableRMSNorm(nn.Module):
    """[..., D] -> [..., D]; computes in float32 like the module it replaces, shares its weight."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.eps = float(norm.eps)
        self.weight = norm.weight if getattr(norm, "with_scale", True) else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.float()
        normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        # A scale-free norm (v_norm) is multiplied by ones, exactly: onnxruntime only fuses the
        # pattern that ends in a weight Mul, and an unfused norm costs 4 kernels (8 per decode
        # step at 165M, one per layer).
        weight = self.weight.float() if self.weight is not None else torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
        normed = normed * weight
        return normed.type_as(hidden_states)


def _is_gemma_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__.startswith("Gemma4") and type(module).__name__.endswith("RMSNorm")


def use_fusable_norms(model: nn.Module) -> int:
    """Replace every Gemma 4 RMSNorm inside `model` in place; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_gemma_rms_norm(child):
                setattr(parent, name, FusableRMSNorm(child))
                replaced += 1
    return replaced
