"""Pack the TFLite graphs into a .litertlm bundle that Google's LiteRT-LM runs, with its native
MTP speculative decoding running our drafter.

What LiteRT-LM (0.18.x, CPU) needs, as docs/artifact-folder.md ("The LiteRT-LM bundle") records it:
  - the decoder as PREFILL_DECODE: prefill_N / decode / verify signatures with `embeddings`,
    `input_pos`, `mask`, kv_cache_k_i / kv_cache_v_i, and `logits` + `activations` outputs
    (the signatures components/fixed_cache_steps.py traces);
  - an EMBEDDER (decode_embedder, prefill_embedder_N): required for speculation;
  - the drafter as MTP_DRAFTER, its first signature run once per draft token;
  - tokenizer.json, and LlmMetadata: start/stop tokens, context length, a generic model type,
    empty prompt templates (so the prompt is tokenized as given, BOS added once) and a greedy
    sampler (top-p with k = 1: LiteRT-LM 0.18.1's CPU sampler rejects GREEDY and TOP_K).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gemma_edge.artifact.manifest import GraphRole, GraphSpec, ModelSummary, TokenIds

BUNDLE_NAME = "model.litertlm"


def _llm_metadata(summary: ModelSummary, tokens: TokenIds) -> bytes:
    from litert_lm_builder.runtime.proto import llm_metadata_pb2, llm_model_type_pb2, sampler_params_pb2

    metadata = llm_metadata_pb2.LlmMetadata()
    metadata.start_token.token_ids.ids.append(tokens.bos)
    for eos in tokens.eos:
        metadata.stop_tokens.add().token_ids.ids.append(eos)
    metadata.pad_token.token_ids.ids.append(tokens.pad)
    metadata.max_num_tokens = summary.context_length
    metadata.llm_model_type.CopyFrom(llm_model_type_pb2.LlmModelType(generic_model=llm_model_type_pb2.GenericModel()))
    # Empty user/model templates: the prompt is the text the user gave, as in `gemma-edge run`.
    for template in (metadata.prompt_templates.user, metadata.prompt_templates.model):
        template.prefix = ""
        template.suffix = ""
    # Greedy by default; LiteRT-LM 0.18 implements greedy as top-k with k = 1 (GREEDY is rejected).
    metadata.sampler_params.type = sampler_params_pb2.SamplerParameters.TOP_P
    metadata.sampler_params.k = 1
    metadata.sampler_params.p = 1.0
    metadata.sampler_params.temperature = 1.0
    metadata.sampler_params.backend = sampler_params_pb2.SamplerParameters.CPU
    return metadata.SerializeToString()


def write_litertlm(
    folder: Path, graphs: dict[str, GraphSpec], summary: ModelSummary, tokens: TokenIds, tokenizer: str
) -> Path:
    """Write folder/model.litertlm from the TFLite graphs already in `folder`."""
    from litert_lm_builder import litertlm_builder as builder_lib

    by_role = {spec.role: spec for spec in graphs.values() if spec.format == "tflite"}
    sections = [
        (GraphRole.DECODER, builder_lib.TfLiteModelType.PREFILL_DECODE),
        (GraphRole.TOKEN_EMBEDDER, builder_lib.TfLiteModelType.EMBEDDER),
        (GraphRole.DRAFTER, builder_lib.TfLiteModelType.MTP_DRAFTER),
    ]
    # The vision and audio embedders stay out: LiteRT-LM 0.18.1 builds its own vision/audio
    # executors for VISION_ENCODER / AUDIO_ENCODER_HW sections, whose tensor contract (mel
    # features, its own patch input) is not our encoder-free graphs'; with them in the bundle
    # `litert-lm run` cannot even create a text session (audio_litert_compiled_model_executor
    # NOT_FOUND). Our runtime runs images and audio from the .tflite files instead.
    builder = builder_lib.LitertLmFileBuilder()
    builder.add_system_metadata(
        builder_lib.Metadata(key="Authors", value="gemma-edge", dtype=builder_lib.DType.STRING)
    )
    with tempfile.TemporaryDirectory() as scratch:
        metadata_path = Path(scratch) / "llm_metadata.pb"
        metadata_path.write_bytes(_llm_metadata(summary, tokens))
        builder.add_llm_metadata(str(metadata_path))
        builder.add_hf_tokenizer(str(folder / tokenizer))
        for role, section in sections:
            if role in by_role:
                # fp32 activations: LiteRT-LM would otherwise run the decoder in fp16 on CPU,
                # and its greedy output could drift from the reference.
                builder.add_tflite_model(str(folder / by_role[role].file), section, prefer_activation_type="fp32")
        path = folder / BUNDLE_NAME
        with open(path, "wb") as stream:
            builder.build(stream)
    return path
