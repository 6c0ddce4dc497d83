"""The roofline of peers.py (``--roofline``): this machine's memory bandwidth, the weight bytes
each ONNX row reads per decoded token, and the bandwidth its decode rate implies. What is measured
and counted: peers.py's module docstring, "Roofline"."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from decode_speed import RUNTIME_MTP, RUNTIME_PLAIN, Summary
from peer_rows import ORTGENAI, PeerSample


@dataclass
class GraphWeights:
    """Initializer bytes of one ONNX graph, split by how a call reads them."""

    file: str
    matmul_bytes: int  # read in full by every call
    gather_row_bytes: int  # read per token looked up (one row of each gathered table)
    gathered_table_bytes: int  # the whole gathered tables (not read per token)
    other_bytes: int  # norms, rotary tables, constants: not counted
    total_bytes: int

    def per_call(self, tokens: int) -> int:
        return self.matmul_bytes + tokens * self.gather_row_bytes


# ----------------------------------------------------------------------------- roofline


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_bandwidth(gib: float, threads: int, repeats: int = 5) -> dict[str, float]:
    """Memory bandwidth in GB/s (1e9 bytes/s) over a float32 array of `gib` GiB: a read test (sum of
    its int64 view: integer adds keep the loop bound by memory, where float32 pairwise summation
    costs ~15% here), on one thread and split across `threads` threads (numpy releases the GIL in
    the reduction), and a copy test (read + write bytes)."""
    import numpy as np

    source = np.ones(int(gib * 2**30) // 8 * 2, dtype=np.float32)  # written once: every page is resident
    target = np.zeros_like(source)
    target[::1024] = 1.0  # touch every page so the copy measures bandwidth, not page faults
    words = source.view(np.int64)
    parts = np.array_split(words, threads)
    with ThreadPoolExecutor(threads) as pool:
        threaded = _median_seconds(lambda: list(pool.map(np.sum, parts)), repeats)
    single = _median_seconds(words.sum, repeats)
    copy = _median_seconds(lambda: np.copyto(target, source), repeats)
    nbytes = source.nbytes
    result = {
        "array_bytes": float(nbytes),
        "read_one_thread_gb_s": nbytes / single / 1e9,
        "read_threads_gb_s": nbytes / threaded / 1e9,
        "copy_gb_s": 2 * nbytes / copy / 1e9,
        "threads": float(threads),
        "repeats": float(repeats),
    }
    result["reference_read_gb_s"] = max(result["read_one_thread_gb_s"], result["read_threads_gb_s"])
    return result


MATMUL_OPS = {"MatMul", "MatMulNBits", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "FusedMatMul"}
GATHER_INPUTS = {"Gather": (0,), "GatherBlockQuantized": (0, 2, 3)}  # table, scales, zero points
PASS_THROUGH = {"Transpose", "Reshape", "Cast", "Identity", "DequantizeLinear", "Squeeze", "Unsqueeze", "Flatten"}


def _tensor_bytes(tensor: Any) -> int:
    """Bytes of an initializer from its shape and type (its data is never loaded)."""
    import numpy as np
    from onnx import TensorProto, helper

    count = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (count + 1) // 2
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def graph_weights(path: Path) -> GraphWeights:
    """Split `path`'s initializers by how one call reads them (see peers.py's module docstring)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}

    def sources(name: str) -> set[str]:
        """The initializers a tensor is computed from through weight-preparing ops only."""
        if name in initializers:
            return {name}
        node = producers.get(name)
        if node is None or node.op_type not in PASS_THROUGH:
            return set()
        inputs = node.input if node.op_type == "DequantizeLinear" else node.input[:1]
        return set().union(*(sources(item) for item in inputs if item))

    full: set[str] = set()
    row_bytes: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in MATMUL_OPS:
            full |= set().union(*(sources(item) for item in node.input if item))
        elif node.op_type in GATHER_INPUTS:
            axis = next((attr.i for attr in node.attribute if attr.name == "gather_axis" or attr.name == "axis"), 0)
            for index in GATHER_INPUTS[node.op_type]:
                if index < len(node.input) and node.input[index]:
                    for name in sources(node.input[index]):
                        row_bytes[name] = _row_bytes(initializers[name], axis, direct=name == node.input[index])
    row_bytes = {name: size for name, size in row_bytes.items() if name not in full}
    sizes = {name: _tensor_bytes(tensor) for name, tensor in initializers.items()}
    matmul = sum(sizes[name] for name in full)
    tables = sum(sizes[name] for name in row_bytes)
    total = sum(sizes.values())
    return GraphWeights(path.name, matmul, sum(row_bytes.values()), tables, total - matmul - tables, total)


def _row_bytes(tensor: Any, axis: int, direct: bool) -> int:
    """Bytes of one row of a gathered table: along `axis` when the table is fed directly, else
    (reshaped or transposed on the way) along its longest axis, the vocabulary's."""
    dims = list(tensor.dims)
    if len(dims) < 2:
        return _tensor_bytes(tensor)
    rows = dims[axis] if direct and -len(dims) <= axis < len(dims) else max(dims)
    return _tensor_bytes(tensor) // max(1, rows)


def our_graph_weights(artifacts: Path) -> dict[str, GraphWeights]:
    """Weight accounting of our ONNX token embedder, decoder and (when present) drafter."""
    from gemma_edge.artifact.manifest import GraphRole, load_manifest

    manifest = load_manifest(artifacts, verify=False)
    graphs = {}
    for role in (GraphRole.TOKEN_EMBEDDER, GraphRole.DECODER, GraphRole.DRAFTER):
        spec = manifest.graph(role, "onnx")
        if spec is not None:
            graphs[role.value] = graph_weights(artifacts / spec.file)
    return graphs


def bytes_per_token(sample: PeerSample, graphs: dict[str, GraphWeights]) -> float | None:
    """Weight bytes read per decoded token by one runtime sample: decoder calls x decoder bytes +
    drafter calls x drafter bytes + embedded tokens x one embedding row, over new_tokens - 1.
    Embedded tokens: one per plain step, K+1 per verify, one per draft = decoder calls + 2 x drafts."""
    if sample.decoder_calls is None or sample.new_tokens < 2:
        return None
    drafts = sample.drafter_calls or 0
    total = sample.decoder_calls * graphs["decoder"].per_call(1)
    if "drafter" in graphs:
        total += drafts * graphs["drafter"].per_call(1)
    if "token_embedder" in graphs:
        total += (sample.decoder_calls + 2 * drafts) * graphs["token_embedder"].per_call(1)
    return total / (sample.new_tokens - 1)


def roofline(
    summaries: dict[str, Summary], artifacts: Path, ortgenai_dir: Path | None, bandwidth: dict[str, float]
) -> dict[str, Any]:
    """Per ONNX row: weight bytes per token, the bandwidth its median rate implies, and the ceiling."""
    graphs = {"ours": our_graph_weights(artifacts)}
    if ortgenai_dir is not None and ORTGENAI in summaries:
        graphs[ORTGENAI] = {"decoder": graph_weights(ortgenai_dir / _ortgenai_file(ortgenai_dir))}
    reference = bandwidth["reference_read_gb_s"]
    rows: dict[str, Any] = {}
    for name in (RUNTIME_PLAIN, RUNTIME_MTP, ORTGENAI):
        if name not in summaries:
            continue
        row_graphs = graphs[ORTGENAI if name == ORTGENAI else "ours"]
        per_sample = [bytes_per_token(sample, row_graphs) for sample in summaries[name].samples]
        present = [value for value in per_sample if value is not None]
        median_rate = summaries[name].median()
        per_token = statistics.median(present) if present else None
        achieved = per_token * median_rate / 1e9 if per_token and median_rate else None
        rows[name] = {
            "weight_bytes_per_token": per_token,
            "weight_bytes_per_token_samples": per_sample,
            "median_tokens_per_second": median_rate,
            "achieved_gb_s": achieved,
            "fraction_of_bandwidth": achieved / reference if achieved else None,
            "bandwidth_bound_tokens_per_second": reference * 1e9 / per_token if per_token else None,
        }
    return {"bandwidth": bandwidth, "graphs": {key: {role: asdict(g) for role, g in value.items()} for key, value in graphs.items()}, "rows": rows}


def _ortgenai_file(folder: Path) -> str:
    config = json.loads((folder / "genai_config.json").read_text())
    return config["model"]["decoder"].get("filename", "model.onnx")
