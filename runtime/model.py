"""The exported model as numpy functions: embed, decode (prefill / step / verify), draft."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from gemma_edge.artifact.backends import TOKEN_TABLE_LIMIT_BYTES
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.graph_io import AudioIO, DecoderIO, DrafterIO, TokenEmbedderIO, VisionIO
from gemma_edge.artifact.manifest import GraphRole, LayerType, Manifest, drafter_kv_input

from .backend import Backend, OnnxRuntimeBackend
from .draft_schedule import DraftSchedule
from .kv_cache import KVCache
from .masks import decode_step_masks, decoder_masks, drafter_masks
from .threads import WIDE_ROWS


class RuntimeModel(Protocol):
    """What the generation loop (and `validate`) needs of an exported model; one implementation
    per backend (OnnxModel for ONNX's dynamic shapes, LiteRtModel for TFLite's fixed buffers)."""

    manifest: Manifest
    draft_schedule: DraftSchedule | None  # what speculation has measured on this model (generate.py)

    @property
    def backend(self) -> Backend: ...

    @property
    def graph_names(self) -> dict[GraphRole, str]:
        """role -> manifest key of this model's graph of that role, in its format."""
        ...

    @property
    def capacity(self) -> int:
        """Positions the caches of new_cache() hold."""
        ...

    @property
    def spans(self) -> dict[str, dict[int, str]]:
        """Narrow signatures: base signature -> attention span -> signature name (TFLite); empty
        where the graphs have none (ONNX)."""
        ...

    @property
    def has_drafter(self) -> bool: ...

    def new_cache(self) -> KVCache: ...

    def embed_tokens(self, token_ids: list[int]) -> np.ndarray: ...

    def embed_tokens_with_graph(self, token_ids: list[int]) -> np.ndarray: ...

    def decode(
        self,
        embeds: np.ndarray,
        cache: KVCache,
        block_ids: np.ndarray | None = None,
        all_logits: bool = True,
        transient: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def draft(self, token_embed: np.ndarray, target_hidden: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray]: ...

    def draft_with_kv(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        store_kv: dict[LayerType, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def embed_image(self, pixel_values: np.ndarray, positions: np.ndarray) -> np.ndarray: ...

    def embed_audio(self, frames: np.ndarray) -> np.ndarray: ...


TOKEN_TABLE_CHUNK = 512  # ids embedded per graph call while expanding

BackendT = TypeVar("BackendT", bound=Backend)


class GraphModel(Generic[BackendT]):
    """What both model forms share: the manifest, the backend (of the type that runs the
    form's graphs), and the graphs of one format."""

    format = ""  # the graph format this form runs (backend.FORMATS)
    _token_table: np.ndarray | None = None  # [V, H] float32, the embedder's output for every id
    _token_rows: dict[int, np.ndarray] | None = None  # id -> [H], where the table is too big to expand

    def __init__(self, manifest: Manifest, backend: BackendT):
        self.manifest = manifest
        self.backend = backend
        self.draft_schedule: DraftSchedule | None = None
        self._drafter_bound: tuple[KVCache | None, dict[str, object]] = (None, {})  # (cache, its drafter buffers)
        self.graph_names = manifest.graph_names(self.format)
        self.spans: dict[str, dict[int, str]] = {}  # narrow signatures (LiteRtModel); ONNX graphs have none
        for role in (GraphRole.TOKEN_EMBEDDER, GraphRole.DECODER):
            if role not in self.graph_names:
                raise GemmaEdgeError(f"the manifest has no {self.format} {role.value} graph; re-run `gemma-edge export`")

    def embed_tokens(self, token_ids: list[int]) -> np.ndarray:
        """token ids [S] -> embeddings [1, S, H]: rows of the expanded table when the model's
        is small enough, else the token embedder graph."""
        if self._token_table is None and self.expands_token_table():
            vocab = self.manifest.model.vocab_size
            starts = range(0, vocab, TOKEN_TABLE_CHUNK)
            chunks = [self.embed_tokens_with_graph(list(range(start, min(start + TOKEN_TABLE_CHUNK, vocab)))) for start in starts]
            self._token_table = np.concatenate(chunks, axis=1)[0]
            self._token_table.flags.writeable = False  # single rows are handed out as views
        if self._token_table is not None:
            if len(token_ids) == 1:  # a decode step's: a read-only view, no gather
                return self._token_table[token_ids[0]][None, None]
            return self._token_table[np.asarray(token_ids, dtype=np.int64)][None]
        if len(token_ids) == 1 and self._token_rows is not None and token_ids[0] in self._token_rows:
            return self._token_rows[token_ids[0]][None, None]  # a kept row, read-only
        return self._embed_remembering(token_ids)

    def _embed_remembering(self, token_ids: list[int]) -> np.ndarray:
        """A table too big to expand is filled row by row instead: the rows the graph gave are
        kept (up to TOKEN_TABLE_LIMIT_BYTES of them) and only ids never seen go to the graph,
        which spares most decode steps its call, a visible share of a step on a ~165M model
        (text reuses a few thousand ids; benchmarks/README.md, "Figures behind code comments",
        "The per-token loop")."""
        if self._token_rows is None:
            self._token_rows = {}
        rows = self._token_rows
        missing = [token for token in dict.fromkeys(token_ids) if token not in rows]
        fresh: dict[int, np.ndarray] = {}
        if missing:
            fresh = dict(zip(missing, self.embed_tokens_with_graph(missing)[0]))  # [H] each
            for row in fresh.values():
                row.flags.writeable = False  # kept rows are handed out as views
            room = TOKEN_TABLE_LIMIT_BYTES // (4 * self.manifest.model.hidden_size) - len(rows)
            rows.update(list(fresh.items())[: max(0, room)])
        return np.stack([rows[token] if token in rows else fresh[token] for token in token_ids])[None]

    def expands_token_table(self) -> bool:
        model = self.manifest.model
        return model.vocab_size * model.hidden_size * 4 <= TOKEN_TABLE_LIMIT_BYTES

    def embed_tokens_with_graph(self, token_ids: list[int]) -> np.ndarray:
        """token ids [S] -> embeddings [1, S, H] from the token embedder graph itself (what
        `validate` checks, and what fills the table)."""
        raise NotImplementedError

    @property
    def has_drafter(self) -> bool:
        return GraphRole.DRAFTER in self.graph_names and self.manifest.drafter is not None

    def _drafter_buffers(self, cache: KVCache, names: Callable[[], dict[str, object]]) -> dict[str, object]:
        """The cache buffers the drafter binds, as one dict per cache (built by `names` on the
        first draft over `cache`): a backend keeps its binding while the same dict comes back."""
        if self._drafter_bound[0] is not cache:
            self._drafter_bound = (cache, names())
        return self._drafter_bound[1]


@dataclass(frozen=True)
class _DecodeStep:
    """A transient 1-row decoder step's inputs and outputs as arrays that onnxruntime reads and
    writes in place, bound once per cache together with the cache's buffers: a step writes
    one embedding row and a position, binds its two masks, and reads the logits where the
    graph left them. Between two decoder calls every numpy or binding call finds the caches
    cold, so binding once shortens the Python between two calls (benchmarks/README.md,
    "Figures behind code comments", "The per-token loop")."""

    embeds: np.ndarray  # inputs_embeds [1, 1, H]
    position: np.ndarray  # position_ids [1, 1] int64
    logits: np.ndarray  # [1, 1, V]
    hidden: np.ndarray  # [1, 1, H]
    bound: dict[str, object]  # the cache's buffers and these arrays, by tensor name


class OnnxModel(GraphModel[OnnxRuntimeBackend]):
    """The ONNX graphs: dynamic sequence axes; the caches are buffers of the context length,
    bound as both past_* and present_* so GroupQueryAttention appends in place (kv_cache.py)."""

    format = "onnx"
    _step: tuple[KVCache | None, _DecodeStep | None] = (None, None)  # (cache, its decode step)

    @property
    def capacity(self) -> int:
        """The context length: every cache buffer holds that many positions."""
        return self.manifest.model.context_length

    def new_cache(self) -> KVCache:
        # The previous cache's buffers are still referenced by the kept bindings: let them go
        # before allocating the new ones, or a second generation would briefly hold two caches.
        self._drafter_bound = (None, {})
        self._step = (None, None)
        self.backend.drop_bindings()
        capacity = self.capacity
        decoder = self.graph_names[GraphRole.DECODER]
        layers: dict[int, tuple[object, object]] = {}
        bound: dict[str, object] = {}
        for cache in self.manifest.model.cache_layers:
            # Zeros, not whatever the allocation held: rows past `length` are hidden by the
            # mask, but a NaN there would still poison the attention product.
            zeros = np.zeros((1, cache.num_kv_heads, capacity, cache.head_dim), np.float32)
            key = self.backend.new_buffer(decoder, "", cache.past_key, zeros)
            value = self.backend.new_buffer(decoder, "", cache.past_value, zeros)
            layers[cache.layer] = (key, value)
            bound.update({cache.past_key: key, cache.present_key: key, cache.past_value: value, cache.present_value: value})
        return KVCache(capacity, layers, bound)

    def _run(
        self, role: GraphRole, feeds: dict[str, np.ndarray], bound: dict[str, object] | None = None, prefill: bool = False
    ) -> dict[str, np.ndarray]:
        return self.backend.run(self.graph_names[role], feeds, bound=bound, prefill=prefill)

    def embed_tokens_with_graph(self, token_ids: list[int]) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64)[None]
        return self._run(GraphRole.TOKEN_EMBEDDER, {TokenEmbedderIO.INPUT_IDS: ids})[TokenEmbedderIO.INPUTS_EMBEDS]

    def decode(
        self,
        embeds: np.ndarray,
        cache: KVCache,
        block_ids: np.ndarray | None = None,
        all_logits: bool = True,
        transient: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run embeds [1, S, H] at positions cache.length.. ; extends the cache by S.

        block_ids [T] marks image blocks (-1 for text) over all T = cache.length + S positions.
        Returns logits [S, V] (or [1, V] for the last row only, when not `all_logits`) and
        final-norm hidden states [S, H]. `transient` (a 1-row step whose caller is done with
        its logits and hidden row before the next transient step): both are the step's own
        arrays, which the next transient step overwrites (_DecodeStep).
        """
        start, seq = cache.length, embeds.shape[1]
        if transient and seq == 1:
            return self._decode_step(embeds, cache)
        cache.check_room(seq)
        positions = np.arange(start, start + seq, dtype=np.int64)
        mask_full, mask_sliding = decoder_masks(positions, start + seq, self.manifest.model.sliding_window, block_ids)
        feeds = {
            DecoderIO.INPUTS_EMBEDS: embeds.astype(np.float32, copy=False),
            DecoderIO.POSITION_IDS: positions[None],
            DecoderIO.MASK_FULL: mask_full,
            DecoderIO.MASK_SLIDING: mask_sliding,
            DecoderIO.LOGIT_ROWS: np.arange(0 if all_logits else seq - 1, seq, dtype=np.int64),
        }
        outputs = self._run(GraphRole.DECODER, feeds, bound=cache.bound, prefill=seq >= WIDE_ROWS)
        cache.length += seq
        return outputs[DecoderIO.LOGITS][0], outputs[DecoderIO.HIDDEN][0]

    def _decode_step(self, embeds: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        """decode() of one text row at cache.length, through the cache's _DecodeStep: logits [1, V]
        and hidden [1, H], views of the step's arrays."""
        cache.check_room(1)
        step = self._decode_step_of(cache)
        step.embeds[...] = embeds
        step.position[0, 0] = cache.length
        mask_full, mask_sliding = decode_step_masks(cache.length + 1, self.manifest.model.sliding_window)
        self._run(GraphRole.DECODER, {DecoderIO.MASK_FULL: mask_full, DecoderIO.MASK_SLIDING: mask_sliding}, bound=step.bound)
        cache.length += 1
        return step.logits[0], step.hidden[0]

    def _decode_step_of(self, cache: KVCache) -> _DecodeStep:
        kept, step = self._step
        if kept is cache and step is not None:
            return step
        model = self.manifest.model
        arrays: dict[str, np.ndarray] = {
            DecoderIO.INPUTS_EMBEDS: np.zeros((1, 1, model.hidden_size), np.float32),
            DecoderIO.POSITION_IDS: np.zeros((1, 1), np.int64),
            DecoderIO.LOGIT_ROWS: np.zeros(1, np.int64),  # the one row
            DecoderIO.LOGITS: np.zeros((1, 1, model.vocab_size), np.float32),
            DecoderIO.HIDDEN: np.zeros((1, 1, model.hidden_size), np.float32),
        }
        bound = {**cache.bound, **{name: self.backend.share_array(array) for name, array in arrays.items()}}
        step = _DecodeStep(
            arrays[DecoderIO.INPUTS_EMBEDS], arrays[DecoderIO.POSITION_IDS], arrays[DecoderIO.LOGITS], arrays[DecoderIO.HIDDEN], bound
        )
        self._step = (cache, step)
        return step

    def draft(
        self, token_embed: np.ndarray, target_hidden: np.ndarray, cache: KVCache
    ) -> tuple[np.ndarray, np.ndarray]:
        """One drafter step for the token at position cache.length (not yet cached).

        token_embed [1, 1, H], target_hidden [1, 1, H] -> logits [V], next hidden [1, 1, H].
        """

        def names() -> dict[str, object]:
            bound = {}
            for layer_type, layer in self.manifest.model.store_layers.items():
                key, value = cache.layers[layer]
                bound[drafter_kv_input("key", LayerType(layer_type))] = key
                bound[drafter_kv_input("value", LayerType(layer_type))] = value
            return bound

        return self._draft(token_embed, target_hidden, cache.length, {}, self._drafter_buffers(cache, names))

    def draft_with_kv(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        store_kv: dict[LayerType, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The drafter over explicit target K/V: store_kv[type] = (key, value), each [1, KV, position, D]."""
        arrays = {}
        for layer_type, (key, value) in store_kv.items():
            arrays[drafter_kv_input("key", layer_type)] = key
            arrays[drafter_kv_input("value", layer_type)] = value
        return self._draft(token_embed, target_hidden, position, arrays, {})

    def _draft(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        kv_arrays: dict[str, np.ndarray],
        kv_buffers: dict[str, object],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The drafter reads the store layers' K/V: arrays [1,KV,position,D] or the cache's
        bound buffers [1,KV,C,D], of which the graph reads the first `position` rows."""
        drafter = self.manifest.drafter
        assert drafter is not None
        mask_full, mask_sliding = drafter_masks(position, position, drafter.sliding_window)
        feeds: dict[str, np.ndarray] = {
            DrafterIO.TOKEN_EMBEDS: token_embed.astype(np.float32, copy=False),
            DrafterIO.TARGET_HIDDEN: target_hidden.astype(np.float32, copy=False),
            DrafterIO.POSITION_IDS: np.array([[position]], dtype=np.int64),
            DrafterIO.MASK_FULL: mask_full,
            DrafterIO.MASK_SLIDING: mask_sliding,
        }
        feeds.update(kv_arrays)
        spec = self.manifest.graphs[self.graph_names[GraphRole.DRAFTER]]
        wanted = {name: feeds[name] for name in spec.input_names() if name not in kv_buffers}
        outputs = self._run(GraphRole.DRAFTER, wanted, bound=kv_buffers)
        return outputs[DrafterIO.LOGITS][0, 0], outputs[DrafterIO.NEXT_HIDDEN]

    def embed_image(self, pixel_values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """pixel_values [N, patch_dim], positions [N, 2] ((-1, -1) = padding) -> embeddings [n_valid, H]."""
        outputs = self._run(
            GraphRole.VISION_EMBEDDER,
            {VisionIO.PIXEL_VALUES: pixel_values[None].astype(np.float32), VisionIO.IMAGE_POSITION_IDS: positions[None].astype(np.int64)},
        )
        valid = (positions != -1).all(axis=-1)
        return outputs[VisionIO.IMAGE_EMBEDS][0][valid]

    def embed_audio(self, frames: np.ndarray) -> np.ndarray:
        """frames [N, 640] -> embeddings [N, H]."""
        return self._run(GraphRole.AUDIO_EMBEDDER, {AudioIO.AUDIO_FRAMES: frames[None].astype(np.float32)})[AudioIO.AUDIO_EMBEDS][0]
