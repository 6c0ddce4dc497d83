"""Each export-friendly module against the transformers module it stands for (in torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gemma_edge.artifact.manifest import LayerType
from gemma_edge.exporter.checkpoint.layout import cache_layers, store_layers
from gemma_edge.exporter.components.decoder_step import DecoderStep
from gemma_edge.exporter.components.drafter_step import DrafterStep
from gemma_edge.exporter.components.embedders import AudioEmbedder, TokenEmbedder, VisionEmbedder
from gemma_edge.runtime.masks import decoder_masks, drafter_masks

TOLERANCE = 1e-4


def _decoder(target):  # noqa: ANN001, ANN202
    text = target.config.get_text_config()
    return DecoderStep(target.model, cache_layers(text), store_layers(text), text.max_position_embeddings).eval(), text


def _run_chunks(step: DecoderStep, text, embeds: torch.Tensor, chunks: list[int], block_ids=None):  # noqa: ANN001, ANN202
    """Feed embeds [1, T, H] in chunks through the step with a growing cache; returns
    (logits [T, V], hidden [T, H], final present K/V list)."""
    past = [torch.zeros(1, c.num_kv_heads, 0, c.head_dim) for c in cache_layers(text) for _ in range(2)]
    logits, hidden, start = [], [], 0
    for size in chunks:
        positions = np.arange(start, start + size)
        mask_full, mask_sliding = decoder_masks(positions, start + size, text.sliding_window, block_ids)
        with torch.no_grad():
            out = step(
                embeds[:, start : start + size],
                torch.from_numpy(positions)[None],
                torch.from_numpy(mask_full),
                torch.from_numpy(mask_sliding),
                torch.arange(size),
                *past,
            )
        logits.append(out[0][0])
        hidden.append(out[1][0])
        past = list(out[2:])
        start += size
    return torch.cat(logits), torch.cat(hidden), past


def test_decoder_step_matches_transformers_across_the_window(reference_target) -> None:  # noqa: ANN001
    step, text = _decoder(reference_target)
    ids = torch.randint(11, text.vocab_size, (1, 45), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = reference_target.model.model(input_ids=ids, use_cache=False, return_shared_kv_states=True)
        reference_logits = reference_target.model(input_ids=ids).logits[0]
        embeds = reference_target.model.model.language_model.embed_tokens(ids)
    # prefill 10, 20 single steps (past the 16-token window), a 5-token verify-shaped step, 10 singles
    logits, hidden, past = _run_chunks(step, text, embeds, [10] + [1] * 20 + [5] + [1] * 10)
    assert torch.allclose(logits, reference_logits, atol=TOLERANCE), (logits - reference_logits).abs().max()
    assert torch.allclose(hidden, reference.last_hidden_state[0], atol=TOLERANCE)
    # The store layers' caches are exactly the K/V transformers shares with KV-shared layers.
    layers = [c.layer for c in cache_layers(text)]
    for layer_type, layer in store_layers(text).items():
        key, value = reference.shared_kv_states[layer_type.value]
        index = layers.index(layer)
        assert torch.allclose(past[2 * index], key, atol=TOLERANCE)
        assert torch.allclose(past[2 * index + 1], value, atol=TOLERANCE)


def test_decoder_step_image_block_matches_transformers_generate_masks(reference_target) -> None:  # noqa: ANN001
    step, text = _decoder(reference_target)
    ids = torch.randint(11, text.vocab_size, (1, 20), generator=torch.Generator().manual_seed(1))
    type_ids = torch.zeros_like(ids)
    type_ids[0, 4:13] = 1  # one image of 9 soft tokens
    embeds = reference_target.model.model.language_model.embed_tokens(ids).detach()
    with torch.no_grad():
        masks = type(reference_target.model).create_masks_for_generate(
            config=reference_target.config,
            inputs_embeds=embeds,
            attention_mask=None,
            past_key_values=None,
            position_ids=torch.arange(20)[None],
            mm_token_type_ids=type_ids,
        )
        reference = reference_target.model.model.language_model(inputs_embeds=embeds, attention_mask=masks)
        causal_only = reference_target.model.model.language_model(inputs_embeds=embeds)
    block_ids = np.where(type_ids[0].numpy() == 1, 0, -1)
    _, hidden, _ = _run_chunks(step, text, embeds, [20], block_ids)
    assert torch.allclose(hidden, reference.last_hidden_state[0], atol=TOLERANCE)
    # ...and the block really changes the result (the mask is not silently causal).
    assert not torch.allclose(hidden, causal_only.last_hidden_state[0], atol=TOLERANCE)


def test_store_kv_read_from_the_cache_equals_transformers_shared_kv_states(reference_target) -> None:  # noqa: ANN001
    """Where transformers hands out shared_kv_states (a KV-shared target), the K/V validate reads
    from a config-less cache for targets without them (the real 12B) are exactly the same."""
    from transformers import DynamicCache

    from gemma_edge.exporter.validate.validate import cache_store_kv

    text = reference_target.config.get_text_config()
    length = text.sliding_window + 24  # past the window: a sliding cache layer would cut it
    ids = torch.randint(11, text.vocab_size, (1, length), generator=torch.Generator().manual_seed(4))
    model = reference_target.model.model
    with torch.no_grad():
        shared = model(input_ids=ids, use_cache=False, return_shared_kv_states=True)
        cached = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
        windowed = model(input_ids=ids, past_key_values=DynamicCache(config=text), use_cache=True)
    from_cache = cache_store_kv(cached.past_key_values, text)
    assert set(from_cache) == {LayerType(kind) for kind in shared.shared_kv_states} == set(LayerType)
    for kind, (key, value) in from_cache.items():
        shared_key, shared_value = shared.shared_kv_states[kind.value]
        assert key.shape == shared_key.shape and key.shape[2] == length
        assert torch.equal(key, shared_key) and torch.equal(value, shared_value), kind
    assert torch.equal(cached.last_hidden_state, shared.last_hidden_state)
    # Why config-less: the config's sliding layer keeps only the last window - 1 positions.
    sliding = windowed.past_key_values.layers[store_layers(text)[LayerType.SLIDING]]
    assert sliding.is_sliding and sliding.keys.shape[2] == text.sliding_window - 1
    with pytest.raises(AssertionError, match="window - 1"):
        cache_store_kv(windowed.past_key_values, text)


def _drafter_reference_inputs(target, drafter, kv_length: int):  # noqa: ANN001, ANN202
    text = target.config.get_text_config()
    ids = torch.randint(11, text.vocab_size, (1, kv_length), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = target.model.model(input_ids=ids, use_cache=False, return_shared_kv_states=True)
    store_kv = {LayerType(kind): kv for kind, kv in out.shared_kv_states.items()}
    token_embed = target.model.model.language_model.embed_tokens(torch.tensor([[57]]))
    return store_kv, token_embed.detach(), out.last_hidden_state[:, -1:]


@pytest.mark.parametrize("kv_length", [9, 30])  # inside and past the sliding window
def test_drafter_step_matches_transformers(reference_target, reference_drafter, kv_length: int) -> None:  # noqa: ANN001
    window = reference_drafter.config.get_text_config().sliding_window
    store_kv, token_embed, hidden = _drafter_reference_inputs(reference_target, reference_drafter, kv_length)
    step = DrafterStep(reference_drafter.model).eval()
    mask_full, mask_sliding = drafter_masks(kv_length, kv_length, window)
    kv_inputs = [tensor for layer_type in step.cache_types for tensor in store_kv[layer_type]]
    with torch.no_grad():
        logits, next_hidden = step(
            token_embed, hidden, torch.tensor([[kv_length]]), torch.from_numpy(mask_full), torch.from_numpy(mask_sliding), *kv_inputs
        )
        # transformers' drafter attends to all sliding K/V it is handed: give it our window.
        start = max(0, kv_length - window + 1)
        shared = {
            kind.value: (k[:, :, start:], v[:, :, start:]) if kind == LayerType.SLIDING else (k, v)
            for kind, (k, v) in store_kv.items()
        }
        reference = reference_drafter.model(
            inputs_embeds=torch.cat([token_embed, hidden], -1), position_ids=torch.tensor([[kv_length]]), shared_kv_states=shared
        )
    assert torch.allclose(logits, reference.logits, atol=TOLERANCE)
    assert torch.allclose(next_hidden, reference.last_hidden_state, atol=TOLERANCE)


def test_drafter_step_ordered_embedding_head_matches_transformers(reference_target) -> None:  # noqa: ANN001
    """The centroid head (.item() upstream) rewritten traceably gives the same numbers."""
    from transformers.models.gemma4_unified_assistant import (
        Gemma4UnifiedAssistantConfig,
        Gemma4UnifiedAssistantForCausalLM,
    )

    from gemma_edge.exporter.checkpoint.hf_patches import apply_transformers_patches
    from gemma_edge.exporter.checkpoint.loading import Checkpoint
    from gemma_edge.exporter.training.reference_model import drafter_config_dict

    apply_transformers_patches()
    torch.manual_seed(3)
    config = Gemma4UnifiedAssistantConfig(
        **{**drafter_config_dict(), "use_ordered_embeddings": True, "num_centroids": 16, "centroid_intermediate_top_k": 4}
    )
    model = Gemma4UnifiedAssistantForCausalLM(config).eval()
    model.masked_embedding.token_ordering.copy_(torch.randperm(config.text_config.vocab_size))
    drafter = Checkpoint(folder=None, model=model, generation_config={})  # type: ignore[arg-type]
    store_kv, token_embed, hidden = _drafter_reference_inputs(reference_target, drafter, 12)
    step = DrafterStep(model).eval()
    mask_full, mask_sliding = drafter_masks(12, 12, config.text_config.sliding_window)
    with torch.no_grad():
        logits, _ = step(
            token_embed,
            hidden,
            torch.tensor([[12]]),
            torch.from_numpy(mask_full),
            torch.from_numpy(mask_sliding),
            *[tensor for layer_type in step.cache_types for tensor in store_kv[layer_type]],
        )
        reference = model(
            inputs_embeds=torch.cat([token_embed, hidden], -1),
            position_ids=torch.tensor([[12]]),
            shared_kv_states={kind.value: kv for kind, kv in store_kv.items()},
        )
    assert torch.allclose(logits, reference.logits, atol=TOLERANCE)
    assert int(logits.argmax()) == int(reference.logits.argmax())


def test_embedders_match_transformers(reference_target) -> None:  # noqa: ANN001
    model = reference_target.model.model
    ids = torch.tensor([[2, 40, 41, 900]])
    with torch.no_grad():
        assert torch.equal(TokenEmbedder(model.language_model.embed_tokens)(ids), model.language_model.embed_tokens(ids))
        pixels = torch.rand(1, 5, 6912) * 2 - 1
        positions = torch.tensor([[[0, 0], [1, 0], [0, 1], [1, 1], [-1, -1]]])
        ours = VisionEmbedder(model.embed_vision)(pixels, positions)
        reference = model.get_image_features(pixels, positions).pooler_output[0]
        assert torch.allclose(ours[0, :4], reference, atol=TOLERANCE)  # padding row dropped upstream
        frames = torch.rand(1, 7, 640) - 0.5
        assert torch.allclose(AudioEmbedder(model.embed_audio)(frames), model.embed_audio(frames), atol=TOLERANCE)


def _fixed_cache_decoder(target):  # noqa: ANN001, ANN202
    from gemma_edge.exporter.components.decoder_step import DecoderLayers
    from gemma_edge.exporter.components.fixed_cache_steps import FixedCacheDecoder

    text = target.config.get_text_config()
    body = DecoderLayers(target.model, cache_layers(text), store_layers(text))
    return FixedCacheDecoder(body, cache_layers(text)).eval(), text


@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image-block"])
def test_fixed_cache_decoder_matches_the_growing_cache_step(reference_target, with_image: bool) -> None:  # noqa: ANN001
    """The TFLite form (capacity-C buffers, one narrowed mask, padded chunks) equals DecoderStep."""
    from gemma_edge.artifact.manifest import litert_cache_names
    from gemma_edge.runtime.masks import litert_decoder_mask

    fixed, text = _fixed_cache_decoder(reference_target)
    step, _ = _decoder(reference_target)
    capacity, total = 64, 40
    ids = torch.randint(11, text.vocab_size, (1, total), generator=torch.Generator().manual_seed(3))
    embeds = reference_target.model.model.language_model.embed_tokens(ids).detach()
    block_ids = None
    if with_image:
        block_ids = np.full(total, -1)
        block_ids[3:9] = 0
    expected, _, _ = _run_chunks(step, text, embeds, [12] + [1] * 20 + [5] + [1] * 3, block_ids)

    caches = {}
    for cache in cache_layers(text):
        key, value = litert_cache_names(cache.layer)
        caches[key] = torch.zeros(1, cache.num_kv_heads, capacity, cache.head_dim)
        caches[value] = torch.zeros(1, cache.num_kv_heads, cache.head_dim, capacity)
    # (signature length, real tokens): padded prefill, singles past the 16-token window, verify, padded verify
    logits, start = [], 0
    for size, real in [(16, 12)] + [(1, 1)] * 20 + [(5, 5)] + [(5, 3)]:
        chunk = torch.zeros(1, size, text.hidden_size)
        chunk[:, :real] = embeds[:, start : start + real]
        positions = np.arange(start, start + size)
        mask = litert_decoder_mask(positions, capacity, block_ids)
        with torch.no_grad():
            out = fixed(chunk, torch.from_numpy(positions.astype(np.int32)), torch.from_numpy(mask), **caches)
        caches = {name: out[name] for name in caches}
        logits.append(out["logits"][0, :real])
        start += real
    ours = torch.cat(logits)
    assert torch.allclose(ours, expected, atol=TOLERANCE), (ours - expected).abs().max()


def test_fusable_rms_norm_equals_transformers_and_fuses_in_onnxruntime(reference_target, tmp_path: Path) -> None:  # noqa: ANN001
    """The source transform keeps the numbers of every Gemma 4 RMSNorm it replaces (scaled and
    unscaled), and the exported form is what onnxruntime fuses into SimplifiedLayerNormalization."""
    import copy

    import onnx
    import onnxruntime as ort

    from gemma_edge.exporter.components.norms import FusableRMSNorm, use_fusable_norms

    model = copy.deepcopy(reference_target.model)
    originals = {name: module for name, module in model.named_modules() if type(module).__name__.endswith("RMSNorm")}
    assert any(not getattr(m, "with_scale", True) for m in originals.values()), "an unscaled norm should be covered"
    assert use_fusable_norms(model) == len(originals) > 0
    replaced = dict(model.named_modules())
    torch.manual_seed(0)
    for name, original in originals.items():
        assert isinstance(replaced[name], FusableRMSNorm)
        sample = torch.randn(2, 5, original.weight.shape[0] if getattr(original, "with_scale", True) else 16) * 3
        assert torch.allclose(replaced[name](sample), original(sample), rtol=1e-6, atol=1e-6), name

    scaled = next(module for module in replaced.values() if isinstance(module, FusableRMSNorm) and module.weight is not None)
    unscaled = next(module for module in replaced.values() if isinstance(module, FusableRMSNorm) and module.weight is None)
    for kind, norm, width in (("scaled", scaled, scaled.weight.shape[0]), ("unscaled", unscaled, 16)):
        path = tmp_path / f"{kind}.onnx"
        torch.onnx.export(norm, (torch.randn(1, 3, width),), dynamo=True, optimize=True, verbose=False).save(str(path))
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{kind}-optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        fused = [node.op_type for node in onnx.load(tmp_path / f"{kind}-optimized.onnx").graph.node]
        assert fused == ["SimplifiedLayerNormalization"], (kind, fused)


def test_k_eq_v_layers_compute_one_rms_and_every_norm_fuses_in_onnxruntime(reference_target, artifacts: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """attention_k_eq_v: K = v_norm(x) * k_norm.weight gives exactly k_norm(x), and the exported
    decoder keeps no unfused norm (a shared x / rms(x) would leave Pow/ReduceMean/Sqrt/Div)."""
    import copy

    import onnx
    import onnxruntime as ort

    from gemma_edge.exporter.components.attention import normed_key_value
    from gemma_edge.exporter.components.norms import use_fusable_norms

    model = copy.deepcopy(reference_target.model)
    use_fusable_norms(model)
    # k_eq_v layers have v_proj None; KV-shared layers have no projections at all
    layers = [layer.self_attn for layer in model.model.language_model.layers if getattr(layer.self_attn, "v_proj", False) is None]
    assert layers, "the reference model should have k_eq_v layers for this test to mean anything"
    hidden = torch.randn(1, 5, model.config.get_text_config().hidden_size) * 3
    for attn in layers:
        with torch.no_grad():
            key, value = normed_key_value(attn, hidden)
            raw = attn.k_proj(hidden).view(1, 5, -1, attn.head_dim)
            assert torch.equal(key, attn.k_norm(raw).transpose(1, 2))
            assert torch.equal(value, attn.v_norm(raw).transpose(1, 2))

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "decoder-optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(artifacts / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(tmp_path / "decoder-optimized.onnx", load_external_data=False).graph.node]
    assert "SimplifiedLayerNormalization" in ops and not {"Pow", "ReduceMean", "Sqrt"} & set(ops), sorted(set(ops))
