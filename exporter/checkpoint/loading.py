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
from gemma_edge.artifact.manifest import MAX_MANIFEST_INT, LayerType

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
        data = json.loads(path.read_text())
    except OSError as error:
        raise GemmaEdgeError(
            f"cannot read {path} ({error.strerror or error}); restore the file from the original checkpoint"
        ) from None
    except RecursionError:
        raise GemmaEdgeError(f"{path} is JSON nested too deeply; restore the file from the original checkpoint") from None
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise GemmaEdgeError(f"{path} is not valid JSON ({error}); restore the file from the original checkpoint") from None
    if not isinstance(data, dict):
        raise GemmaEdgeError(f"{path} is not a JSON object; restore the file from the original checkpoint")
    return data


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


def _summary(error: Exception) -> str:
    """`error` in one line: its first line, and the next one when the first only introduces it
    (transformers' config validation: "Validation error for field 'head_dim':" then the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(error).__name__}: {text[:200]}"


def _build(model_class: type, config: object, folder: Path, what: str, on_meta: bool) -> nn.Module:
    """model_class(config); config.json is user data going into transformers' code, which
    raises whatever its arithmetic meets (TypeError, ZeroDivisionError, ...): one line for all."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if on_meta:
                # Everything on the meta device, buffers too: no byte is allocated, whatever sizes
                # config.json claims, until they have been checked against the safetensors headers.
                with torch.device("meta"):
                    return model_class(config)
            with parameters_on_meta():
                return model_class(config)
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise GemmaEdgeError(
            f"{folder / 'config.json'} does not describe a buildable {what} ({_summary(error)}); "
            "restore the file from the original checkpoint"
        ) from None


def _config(model_class: type, folder: Path, what: str, weights: SafetensorsWeights) -> object:
    """The checkpoint's config, its layer counts bounded by the checkpoint before anything is built."""
    from transformers.utils import logging as hf_logging

    # transformers logs its doubts about odd values (a pad id outside the vocabulary) as extra
    # stderr lines; a refusal is ours to word, in one line.
    hf_logging.set_verbosity_error()
    config_path = folder / "config.json"
    # Every layer holds at least one tensor: a count above the checkpoint's tensors is forged,
    # and building that many modules (even on the meta device) would run without end.
    tensor_count = len(weights.shapes)
    stack = [(json.loads(config_path.read_text()), "")]
    while stack:
        node, where = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            name = f"{where}.{key}" if where else str(key)
            if isinstance(value, (dict, list)):
                stack.append((value, name))
            elif (
                isinstance(key, str)
                and ("layers" in key or "experts" in key)
                and isinstance(value, int)
                and not isinstance(value, bool)
                and value > tensor_count
            ):
                raise GemmaEdgeError(
                    f"{config_path} has {name} {value}, more than the {tensor_count} tensors in {folder} can hold; "
                    "restore the file from the original checkpoint"
                )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = model_class.config_class.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - transformers' config classes raise anything on bad values
        raise GemmaEdgeError(
            f"{config_path} is not a valid {what} config ({_summary(error)}); restore the file from the original checkpoint"
        ) from None
    # Sizes that shape no tensor, so the header check cannot bound them, but that the manifest
    # records (and its reader bounds): refused here rather than after a whole export.
    text = config.get_text_config()
    for name, least in (("sliding_window", 1), ("max_position_embeddings", 2)):
        value = getattr(text, name, None)
        if value is not None and not (isinstance(value, int) and least <= value <= MAX_MANIFEST_INT):
            raise GemmaEdgeError(
                f"{config_path} has {name} {value!r:.40}, expected an integer from {least} to {MAX_MANIFEST_INT}; "
                "restore the file from the original checkpoint"
            )
    return config


def _check_shapes(model: nn.Module, weights: SafetensorsWeights, folder: Path, what: str) -> None:
    """Every tensor the model expects has the checkpoint's shape, and the checkpoint no other."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    problems = weights.mismatches(expected, ignore=set(expected) - _persistent_names(model))
    if problems:
        raise GemmaEdgeError(
            f"the {what} weights in {folder} do not match its config.json ({'; '.join(problems)}); "
            "use an unmodified checkpoint whose tensors match its config"
        )


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
    """The model, after its config's sizes were checked against the safetensors headers (which
    were checked against their files): no allocation is sized by a number only config.json claims."""
    source = SafetensorsWeights(folder)
    config = _config(model_class, folder, what, source)
    on_meta = _build(model_class, config, folder, what, on_meta=True)
    try:
        source.use_model_names(on_meta)
    except GemmaEdgeError:
        raise
    except Exception as error:  # noqa: BLE001 - transformers' key mapping reads config values (a nested model_type) unchecked
        raise GemmaEdgeError(
            f"{folder / 'config.json'} does not describe a loadable {what} ({_summary(error)}); "
            "restore the file from the original checkpoint"
        ) from None
    _check_shapes(on_meta, source, folder, what)
    if weights:
        return _from_pretrained(model_class, folder, what), None
    # The model with its parameters on the meta device (no bytes; buffers such as RoPE's
    # inv_freq computed for real), its bytes read from `source` when a writer needs them.
    model = _build(model_class, config, folder, what, on_meta=False)
    _check_shapes(model, source, folder, what)
    return model.eval(), source


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
