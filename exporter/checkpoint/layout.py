"""What the runtime must know about a checkpoint's architecture, read off its HF config."""

from __future__ import annotations

from transformers import PreTrainedConfig

from gemma_edge.artifact.manifest import CacheLayer, LayerType, ModelSummary, TokenIds


def cache_layers(text_config: PreTrainedConfig) -> tuple[CacheLayer, ...]:
    """Layers that compute and cache their own K/V, in layer order."""
    modes = text_config.kv_sharing_modes
    layers = []
    for index, layer_type in enumerate(text_config.layer_types):
        if modes[index] == "reuse":
            continue
        layer_config = text_config.per_layer_config[index]
        layers.append(
            CacheLayer(
                layer=index,
                layer_type=LayerType(layer_type),
                num_kv_heads=layer_config.num_key_value_heads,
                head_dim=layer_config.head_dim,
            )
        )
    return tuple(layers)


def store_layers(text_config: PreTrainedConfig) -> dict[LayerType, int]:
    """The last non-shared layer of each type: KV-shared layers and the drafter read its K/V.

    Defined here rather than via transformers' "store" marks because upstream only marks
    them when num_kv_shared_layers > 0 (docs/transformers-workarounds.md, defect 3), and the drafter needs them always.
    """
    first_shared = text_config.num_hidden_layers - text_config.num_kv_shared_layers
    stores: dict[LayerType, int] = {}
    for index in range(first_shared):
        stores[LayerType(text_config.layer_types[index])] = index
    return stores


def model_summary(config: PreTrainedConfig, context_length: int) -> ModelSummary:
    text = config.get_text_config()
    vision = getattr(config, "vision_config", None)
    audio = getattr(config, "audio_config", None)
    return ModelSummary(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        sliding_window=text.sliding_window,
        context_length=context_length,
        final_logit_softcapping=text.final_logit_softcapping,
        cache_layers=cache_layers(text),
        store_layers={layer_type.value: index for layer_type, index in store_layers(text).items()},
        vision_patch_dim=vision.model_patch_size**2 * 3 if vision is not None else None,
        audio_frame_size=audio.audio_samples_per_token if audio is not None else None,
    )


def token_ids(config: PreTrainedConfig, generation_eos: list[int] | int | None) -> TokenIds:
    text = config.get_text_config()
    eos = generation_eos if generation_eos is not None else text.eos_token_id
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    return TokenIds(
        bos=text.bos_token_id,
        eos=eos_ids,
        pad=text.pad_token_id,
        image=config.image_token_id,
        begin_image=config.boi_token_id,
        end_image=config.eoi_token_id,
        audio=config.audio_token_id,
        begin_audio=config.boa_token_id,
        end_audio=config.eoa_token_index,
    )
