"""Token, vision and audio embedders: each maps raw inputs to text-width embeddings [B, N, H]."""

from __future__ import annotations

import torch
from torch import nn


class TokenEmbedder(nn.Module):
    """input_ids [B, S] int64 -> embeddings [B, S, H], scaled by sqrt(H) as Gemma does."""

    def __init__(self, scaled_embedding: nn.Module):
        super().__init__()
        self.embedding = scaled_embedding

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids)


class VisionEmbedder(nn.Module):
    """Encoder-free vision: pixel_values [B, N, 6912] (48x48x3 model patches) and
    image_position_ids [B, N, 2] int64 ((-1, -1) for padding) -> embeddings [B, N, H].
    Padding rows are computed too; the runtime drops them before merging."""

    def __init__(self, hf_vision_embedder: nn.Module):
        super().__init__()
        self.embedder = hf_vision_embedder

    def forward(self, pixel_values: torch.Tensor, image_position_ids: torch.Tensor) -> torch.Tensor:
        return self.embedder(pixel_values, image_position_ids, return_dict=True).pooler_output


class AudioEmbedder(nn.Module):
    """Encoder-free audio: audio_frames [B, N, 640] (40 ms of 16 kHz samples) -> embeddings [B, N, H]."""

    def __init__(self, hf_audio_embedder: nn.Module):
        super().__init__()
        self.embedder = hf_audio_embedder

    def forward(self, audio_frames: torch.Tensor) -> torch.Tensor:
        return self.embedder(audio_frames)
