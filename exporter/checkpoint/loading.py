"""Load a local HF checkpoint folder (target `gemma4_unified`, drafter `gemma4_unified_assistant`).

Weights are read with safetensors only (memory-mapped, never unpickled). Every problem a
user can cause is refused with one line naming the problem and the fix.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import LayerType

from .hf_patches import apply_transformers_patches
from .layout import cache_layers, store_layers
from .safetensors_weights import SAFETENSORS_INDEX, SAFETENSORS_SINGLE, SafetensorsWeights, parameters_on_meta

TARGET_MODEL_TYPE = "gemma4_unified"
DRAFTER_MODEL_TYPE = "gemma4_unified_assistant"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")


@dataclass
class Checkpoint:
    folder: Path
    model: nn.Module  # Gemma4UnifiedForConditionalGeneration or Gemma4UnifiedAssistantForCausalLM, eval, fp32
    generation_config: dict
    # Set for a skeleton (load_*(..., weights=False)): parameters on the meta device, their
    # bytes read from here when a writer needs them. None: the weights are in `model`.
    weights: SafetensorsWeights | None = None

    @property
    def config(self):  # noqa: ANN201 - a transformers PreTrainedConfig
        return self.model.config

    # The target's parts the graphs are built from, so that no caller reaches into the HF
    # model's attribute tree (Gemma4UnifiedForConditionalGeneration.model.{language_model, ...}).
    @property
    def embed_tokens(self) -> nn.Module:
        """The scaled token embedding (its table is tied to lm_head in Gemma 4)."""
        return self.model.model.language_model.embed_tokens

    @property
    def embed_vision(self) -> nn.Module | None:
        """The encoder-free vision embedder, None for a text-only model."""
        return self.model.model.embed_vision

    @property
    def embed_audio(self) -> nn.Module | None:
        """The encoder-free audio embedder, None for a model without audio."""
        return self.model.model.embed_audio


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise GemmaEdgeError(f"{path} is not valid JSON ({error}); restore the file from the original checkpoint") from None


def _check_folder(folder: Path, expected_model_type: str, what: str) -> dict:
    if not folder.exists():
        raise GemmaEdgeError(f"{what} folder {folder} does not exist; pass the folder that holds config.json")
    if not folder.is_dir():
        raise GemmaEdgeError(f"{what} {folder} is not a folder; pass the folder that holds config.json")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise GemmaEdgeError(f"{config_path} not found; {what} must be a Hugging Face checkpoint folder")
    config = _read_json(config_path)
    model_type = config.get("model_type")
    if model_type != expected_model_type:
        raise GemmaEdgeError(
            f"{config_path} has model_type {model_type!r}, expected {expected_model_type!r}; "
            f"pass a {expected_model_type} checkpoint as the {what}"
        )
    if not (folder / SAFETENSORS_SINGLE).is_file() and not (folder / SAFETENSORS_INDEX).is_file():
        pickled = [name for name in PICKLED_WEIGHTS if (folder / name).exists()]
        hint = (
            f"only pickled weights ({pickled[0]}) were found, which gemma-edge never loads; convert them to safetensors"
            if pickled
            else "add model.safetensors (or sharded files with model.safetensors.index.json)"
        )
        raise GemmaEdgeError(f"no safetensors weights in {folder}: {hint}")
    if (folder / SAFETENSORS_INDEX).is_file():
        index = _read_json(folder / SAFETENSORS_INDEX)
        for shard in sorted(set(index.get("weight_map", {}).values())):
            if not (folder / shard).is_file():
                raise GemmaEdgeError(f"shard {folder / shard} listed in {SAFETENSORS_INDEX} is missing; copy it into {folder}")
    return config


def _from_pretrained(model_class: type, folder: Path, what: str) -> nn.Module:
    """Load with transformers (safetensors only, offline) and refuse any unknown or missing tensor."""
    from transformers.utils import logging as hf_logging

    # transformers reports key mismatches through its logger and a progress bar; we report them
    # ourselves, as one line.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = model_class.from_pretrained(
                folder,
                dtype=torch.float32,
                use_safetensors=True,
                local_files_only=True,
                output_loading_info=True,
            )
    except (OSError, RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GemmaEdgeError(f"cannot load the {what} from {folder}: {first_line}") from None
    problems = []
    for kind in ("unexpected_keys", "missing_keys", "mismatched_keys"):
        names = sorted(str(name) for name in info.get(kind, ()))
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise GemmaEdgeError(
            f"the {what} weights in {folder} do not match its config.json ({'; '.join(problems)}); "
            "use an unmodified checkpoint whose tensors match its config"
        )
    return model.eval()


def _skeleton(model_class: type, folder: Path, what: str) -> tuple[nn.Module, SafetensorsWeights]:
    """The model with its parameters on the meta device (no bytes; buffers such as RoPE's
    inv_freq computed for real), checked tensor by tensor against the checkpoint's index."""
    config_class = model_class.config_class
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = config_class.from_pretrained(folder, local_files_only=True)
        with parameters_on_meta():
            model = model_class(config)
    weights = SafetensorsWeights(folder)
    weights.use_model_names(model)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    problems = weights.mismatches(expected, ignore=set(expected) - _persistent_names(model))
    if problems:
        raise GemmaEdgeError(
            f"the {what} weights in {folder} do not match its config.json ({'; '.join(problems)}); "
            "use an unmodified checkpoint whose tensors match its config"
        )
    return model.eval(), weights


def _persistent_names(model: nn.Module) -> set[str]:
    """state_dict names the checkpoint must hold: parameters and persistent buffers, tied
    parameters once (under the first name, as save_pretrained writes them)."""
    names = {name for name, _ in model.named_parameters()}
    for module_name, module in model.named_modules():
        for buffer_name in module._buffers:
            if buffer_name not in module._non_persistent_buffers_set:
                names.add(f"{module_name}.{buffer_name}" if module_name else buffer_name)
    return names


def _load(model_class: type, folder: Path, what: str, weights: bool) -> tuple[nn.Module, SafetensorsWeights | None]:
    if weights:
        return _from_pretrained(model_class, folder, what), None
    return _skeleton(model_class, folder, what)


def load_target(folder: Path, weights: bool = True) -> Checkpoint:
    from transformers import Gemma4UnifiedForConditionalGeneration

    apply_transformers_patches()
    _check_folder(folder, TARGET_MODEL_TYPE, "checkpoint")
    if not (folder / "tokenizer.json").is_file():
        raise GemmaEdgeError(f"{folder / 'tokenizer.json'} not found; copy the checkpoint's tokenizer.json into {folder}")
    model, source = _load(Gemma4UnifiedForConditionalGeneration, folder, "checkpoint", weights)
    generation = _read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    return Checkpoint(folder=folder, model=model, generation_config=generation, weights=source)


def load_drafter(folder: Path, target: Checkpoint, weights: bool = True) -> Checkpoint:
    from transformers.models.gemma4_unified_assistant import Gemma4UnifiedAssistantForCausalLM

    apply_transformers_patches()
    _check_folder(folder, DRAFTER_MODEL_TYPE, "drafter")
    model, source = _load(Gemma4UnifiedAssistantForCausalLM, folder, "drafter", weights)
    generation = _read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    drafter = Checkpoint(folder=folder, model=model, generation_config=generation, weights=source)
    check_drafter_fits(drafter, target)
    return drafter


def check_drafter_fits(drafter: Checkpoint, target: Checkpoint) -> None:
    """The drafter reads the target's hidden state, embeddings and store-layer K/V: all must line up."""
    target_text = target.config.get_text_config()
    drafter_text = drafter.config.get_text_config()
    where = f"drafter {drafter.folder} does not fit target {target.folder}"
    if drafter.config.backbone_hidden_size != target_text.hidden_size:
        raise GemmaEdgeError(
            f"{where}: backbone_hidden_size {drafter.config.backbone_hidden_size} != target hidden_size "
            f"{target_text.hidden_size}; pass the drafter trained for this target"
        )
    if drafter_text.vocab_size != target_text.vocab_size:
        raise GemmaEdgeError(
            f"{where}: vocab_size {drafter_text.vocab_size} != target vocab_size {target_text.vocab_size}; "
            "pass the drafter trained for this target"
        )
    stores = store_layers(target_text)
    caches = {cache.layer: cache for cache in cache_layers(target_text)}
    for index, layer_type in enumerate(drafter_text.layer_types):
        store = stores.get(LayerType(layer_type))
        if store is None:
            raise GemmaEdgeError(f"{where}: drafter layer {index} reads {layer_type} K/V, which the target has none of")
        layer_config = drafter_text.per_layer_config[index]
        cache = caches[store]
        if (layer_config.head_dim, layer_config.num_key_value_heads) != (cache.head_dim, cache.num_kv_heads):
            raise GemmaEdgeError(
                f"{where}: drafter layer {index} expects {layer_config.num_key_value_heads} KV heads of dim "
                f"{layer_config.head_dim}, the target's {layer_type} cache has {cache.num_kv_heads} of dim "
                f"{cache.head_dim}; pass the drafter trained for this target"
            )
