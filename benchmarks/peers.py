"""Our runtime against its peers on the same model, on the same machine, in the same run.

What is measured
----------------
For one checkpoint and one quantization recipe (``--quant``, default ``int4`` = int4-b32-sym;
``fp32`` too), every row below generates greedily from the same prompt:

==========================  ==================================================================
``runtime-plain``           our runtime on our ONNX graphs (onnxruntime), one step per token
``runtime-mtp``             the same with MTP speculation (only when the export has a drafter)
``runtime-litert-plain``    our runtime on our TFLite graphs (LiteRT); when the recipe has them
``runtime-litert-mtp``      the same with MTP speculation
``ort-genai``               onnxruntime-genai 0.18 on a model its own builder made from the same
                            checkpoint at the same precision (int4: MatMulNBits block 32,
                            accuracy_level 4; fp32: fp32), see ortgenai_runner.py. Only for
                            checkpoints without KV-shared layers (the builder cannot build them)
                            and for the int4-b32-sym and fp32 recipes; otherwise the report says
                            why the row is absent
``litert-lm-plain``         Google's LiteRT-LM on our ``model.litertlm``, no speculation
``litert-lm-mtp``           LiteRT-LM's native MTP running our drafter
``transformers``            ``model.generate(do_sample=False)``, PyTorch eager, on the checkpoint
                            in fp32 (whatever ``--quant`` says: it is the unquantized reference)
==========================  ==================================================================

Per row:

* **decode tokens/s**, defined as in decode_speed.py and `RunResult.stats()`:
  ``(new_tokens - 1) / (time of the last generated token - time of the first)``, the first
  token (which prefill produces) excluded. onnxruntime-genai is timed the same way
  (`OrtGenaiRunner.decode_rate`), transformers by a streamer (`decode_speed._TokenClock`).
  LiteRT-LM reports its own counters: decode token count / decode time, where its decode starts
  from the prompt's last token, so every new token counts (and 0.18.1 may overshoot the budget
  by up to K tokens; the new-token column shows it). Median, min and max over ``--repeats``
  rounds after one warm-up; each round runs every row once, the starting row rotating from round
  to round (decode_speed.measure), so slow drifts of the machine hit all rows alike.
* **prefill tokens/s** on a second, longer prompt (``--prefill-tokens``, default 256 tokens with
  BOS: the start of Python's ``textwrap.py`` cut to that many tokens), run right after each
  decode sample by the same process, median over the rounds. Each engine's own definition:
  our runtime: prompt tokens / (the decoder on the whole prompt + choosing the first token)
  (``prefill_tokens_per_second`` of ``--stats-json``; ONNX: one call; LiteRT: chunks of its
  prefill signatures, 128/32/8 tokens; tokenizing and the token-embedder graph are outside it); onnxruntime-genai: prompt tokens / the wall time of
  ``Generator.append_tokens(prompt)``, which runs the decoder on the prompt (the embedding is
  inside its graph); transformers: prompt tokens / (time the first generated token reaches the
  streamer - time the prompt reaches it), i.e. the prompt forward plus choosing the first token;
  LiteRT-LM: its ``last_prefill_tokens_per_second`` after ``Session.run_prefill(prompt)`` (its
  native prefill token count over its prefill time, the count it reports itself, BOS included;
  its prefill emits no logits: the first token is chosen in its decode).
* **peak RSS**: every row runs in its own process (``multiprocessing`` spawn; the parent only
  sends "take one sample" and receives the numbers over a pipe, and never runs two rows at
  once). At the end the row's process reads ``VmHWM`` from ``/proc/self/status`` (its own peak
  resident set; ``ru_maxrss`` of ``RUSAGE_SELF`` where /proc is missing). That is the peak of
  the whole process over its life (load, warm-up, every decode and prefill run): the Python
  interpreter (~20 MiB, given as ``baseline``: VmRSS before the engine's modules are
  imported), the engine's libraries (torch for transformers), the weights, the caches, the
  allocator's slack. ``RUSAGE_CHILDREN`` of the parent was not used: it is one maximum over all
  waited-for children, not one per row. The runtime's plain and MTP rows are separate processes
  and both load the drafter (the runtime opens every graph of the export).
* **huge pages**: the row process's ``AnonHugePages`` once its engine is open. Our onnxruntime
  rows move their weights to transparent huge pages after loading (runtime/huge_pages.py); no
  peer does by itself. ``--huge-pages-ablation`` adds our ONNX plain row without them and
  onnxruntime-genai with the same advice around its model load, so each side is also seen with
  the other's page setting; those two rows are not peers in the ratios.
* **CPU/wall**: the row process's CPU seconds (all its threads) per wall second over each decode
  run, median: how many cores the engine keeps busy (below ``--threads`` where it runs serial
  code between parallel kernels, as our Python loop does). **other load**: the cores the rest of
  the machine kept busy meanwhile: the machine's non-idle CPU time from ``/proc/stat`` (steal
  included) minus the row process's own, over the decode runs' wall time, summed over the rounds
  (the counters tick every 10 ms). On a shared machine this says which rows ran beside someone
  else's work; above 0.25 cores the report warns.
* **vs best peer**: the row's median over the fastest peer row's median (peers: ort-genai,
  LiteRT-LM with or without MTP, transformers), for decode and for prefill.
* **greedy agreement with ours**: every row's first-round token ids against those of ours without
  speculation on each graph format (``runtime-plain`` on ONNX, ``runtime-litert-plain`` on
  TFLite); LiteRT-LM returns text only, so its text is compared with the text of ours, by prefix.
  Reported: the length of the agreeing prefix, whether the whole output matched, whether every
  round gave the same output. The formats are quantized by different tools (ours ONNX by
  quantize/, TFLite by ai-edge-quantizer, onnxruntime-genai by its builder) and transformers runs
  the fp32 checkpoint, so quantized rows may legitimately diverge from each other and from
  transformers, all the more on random weights whose logits are near ties. Rows on the same
  graphs should agree (LiteRT-LM with ``runtime-litert-plain``, MTP rows with their plain row).
  The text comparison is weaker than the id one: ids the tokenizer has no entry for decode to
  nothing (benchmarks/bench_checkpoint.py's checkpoints have 32000 embedding rows but the
  built-in 4096-entry tokenizer), so two different outputs can share a text.

Roofline (``--roofline``)
-------------------------
* This machine's memory read bandwidth, measured in the same run before the rows start:
  ``numpy`` ``sum`` over a ``--bandwidth-gib`` (1) GiB float32 array (through its int64 view:
  integer adds keep the loop memory-bound; numpy's float32 pairwise sum read ~15% slower on
  the development VM), 5 times, median GB/s (bytes read / seconds), on one thread and split
  across ``--threads`` threads; a copy test
  (``np.copyto`` of the array into a pre-touched one, 2 x bytes per copy: read + write, STREAM's
  convention) for context. The larger of the two read medians is the reference bandwidth.
* Weight bytes read per decoded token of every ONNX row (our ONNX rows and ort-genai), from the
  graphs' initializers (sizes from their shapes and types; external data is never loaded):
  every initializer feeding a matmul-like node (MatMul, MatMulNBits, Gemm, MatMulInteger,
  DynamicQuantizeMatMul, FusedMatMul; through Transpose/Reshape/Cast/DequantizeLinear and the
  like) is read in full by every call: quantized weights, scales, zero points, biases, and the
  LM head. A Gather / GatherBlockQuantized table (the embedding) is read one row per token
  looked up, unless a matmul reads the same initializer in full (tied LM head: counted once, in
  full). Norm weights, rotary tables and constants are not counted (listed as ``other``). Our
  token embedding is a graph of its own (token_embedder.onnx): its rows are counted per token
  embedded. For speculative rows the count follows the calls each sample made:
  decoder calls x decoder bytes + drafter calls x drafter bytes + embedded tokens x one row,
  over the sample's new_tokens - 1 (a verify call reads the weights once for K+1 tokens).
  Reported: bytes/token, bytes/token x median tokens/s as GB/s, its fraction of the measured
  bandwidth, and the bandwidth-bound ceiling (bandwidth / bytes per token) in tokens/s.
  Not counted: K/V cache reads (they grow with the context), activations, onnxruntime's
  prepacked weight layouts (same size to within the block metadata).

Where the code lives: the rows' engines and their processes in peer_rows.py, the bandwidth test and
the weight accounting in roofline.py; this file plans the rows, runs them, and reports.

Usage::

    python benchmarks/peers.py                                     # built-in model, int4, exported to a temp folder
    python benchmarks/peers.py --checkpoint CKPT --quant fp32 --roofline --json r.json
    python benchmarks/peers.py --artifacts A --ortgenai-dir /tmp/og-int4   # reuse an export and a builder output
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import decode_speed
from decode_speed import (
    LITERT_MTP,
    LITERT_PLAIN,
    LITERTLM_MTP,
    LITERTLM_PLAIN,
    RUNTIME_MTP,
    RUNTIME_PLAIN,
    TRANSFORMERS,
    Summary,
)
from peer_rows import ORTGENAI, ORTGENAI_HUGE_PAGES, RUNTIME_SMALL_PAGES, RowProcess, RowSpec, Workload, measure_rows, start_rows
from roofline import _ortgenai_file, measure_bandwidth, roofline

OURS = (RUNTIME_PLAIN, RUNTIME_MTP, LITERT_PLAIN, LITERT_MTP)
PEERS = (ORTGENAI, LITERTLM_PLAIN, LITERTLM_MTP, TRANSFORMERS)  # as shipped: the ratios' denominators
ABLATIONS = (RUNTIME_SMALL_PAGES, ORTGENAI_HUGE_PAGES)  # rows of --huge-pages-ablation
REFERENCE = RUNTIME_PLAIN  # the row that must run: greedy outputs are compared with it (and with LITERT_PLAIN)
TEXT_ONLY = decode_speed.TEXT_ONLY
LABELS = {
    **decode_speed.LABELS,
    ORTGENAI: "onnxruntime-genai, its builder's model",
    RUNTIME_SMALL_PAGES: "runtime on ONNX, no spec., 4 KiB pages",
    ORTGENAI_HUGE_PAGES: "onnxruntime-genai with our huge pages",
}
# decode_speed.measure() labels its Summary rows from decode_speed.LABELS: register ours there.
for _name in (ORTGENAI, *ABLATIONS):
    decode_speed.LABELS.setdefault(_name, LABELS[_name])
ORTGENAI_PRECISION = {"int4-b32-sym": "int4", "fp32": "fp32"}  # our recipe -> builder precision
DEFAULT_QUANT = "int4"


# ----------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Our runtime vs onnxruntime-genai, LiteRT-LM and transformers on one model, in one run.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="gemma4_unified checkpoint (default: the built-in trained reference model and its drafter)",
    )
    parser.add_argument("--drafter", type=Path, default=None, help="drafter folder to export with --checkpoint")
    parser.add_argument(
        "--quant",
        default=None,
        help=f"quantization recipe of the export (default: {DEFAULT_QUANT}; fp32 and any `gemma-edge recipes` name; "
        "with --artifacts: the artifacts' own)",
    )
    parser.add_argument("--artifacts", type=Path, default=None, help="existing artifact folder (default: export to a temp folder)")
    parser.add_argument(
        "--ortgenai-dir",
        type=Path,
        default=None,
        help="onnxruntime-genai model folder: used when it holds genai_config.json, else built there "
        "(default: built into a temp folder)",
    )
    parser.add_argument("--context-length", type=int, default=1024, help="context of the export (default: 1024)")
    parser.add_argument("--prompt", default=decode_speed.DEFAULT_PROMPT, help="decode prompt")
    parser.add_argument("--prefill-tokens", type=int, default=256, help="tokens of the prefill prompt, BOS included (default: 256)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per decode run (default: 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="threads of every engine (default: usable CPUs for the peers and transformers, the runtime's own default for ours)")
    parser.add_argument(
        "--huge-pages-ablation",
        action="store_true",
        help="also run our ONNX plain row with its weights in 4 KiB pages and onnxruntime-genai with our huge-page advice "
        "(runtime/huge_pages.py); neither counts as a peer in the ratios",
    )
    parser.add_argument("--roofline", action="store_true", help="measure memory bandwidth and weight bytes per token")
    parser.add_argument("--bandwidth-gib", type=float, default=1.0, help="array size of the bandwidth test (default: 1 GiB)")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    decode_speed.check_run_arguments(parser, args)
    if args.prefill_tokens < 2:
        parser.error("--prefill-tokens must be at least 2")
    if args.artifacts is not None and args.drafter is not None:
        parser.error("--drafter is for exporting; --artifacts already holds (or lacks) one")
    return args


def resolve_recipe(artifacts: Path, requested: str | None) -> str:
    """The recipe the artifacts were exported with; an explicit --quant must agree with it."""
    from gemma_edge.artifact.manifest import load_manifest
    from gemma_edge.quantize.recipes import get_recipe

    name = load_manifest(artifacts, verify=False).quantization.get("name", "fp32")
    if requested is not None and get_recipe(requested).name != name:
        sys.exit(f"error: {artifacts} holds a {name} export, not {get_recipe(requested).name}; drop --quant or re-export")
    return name


def kv_shared_layers(checkpoint: Path) -> int:
    config = json.loads((checkpoint / "config.json").read_text())
    return int(config.get("text_config", config).get("num_kv_shared_layers", 0) or 0)


def ortgenai_model(args: argparse.Namespace, checkpoint: Path, recipe: str, scratch: Path) -> tuple[Path | None, str, float | None]:
    """(onnxruntime-genai model folder or None, why it is absent, build seconds)."""
    precision = ORTGENAI_PRECISION.get(recipe)
    if precision is None:
        return None, f"no builder precision matches the {recipe} recipe (only int4-b32-sym and fp32 have one)", None
    shared = kv_shared_layers(checkpoint)
    if shared:
        return None, f"the checkpoint has {shared} KV-shared layers, which onnxruntime-genai 0.18's builder cannot build", None
    try:
        importlib.metadata.version("onnxruntime-genai")
    except importlib.metadata.PackageNotFoundError:
        return None, "onnxruntime-genai is not installed (pip install -e '.[export,bench]')", None
    from ortgenai_runner import build_ortgenai_model

    folder = args.ortgenai_dir or scratch / f"ortgenai-{precision}"
    if (folder / "genai_config.json").is_file():
        built = builder_precision(folder)
        if built != precision:
            sys.exit(f"error: {folder} holds a {built} onnxruntime-genai model; the {recipe} rows need {precision}")
        return folder, "", None
    print(f"building the onnxruntime-genai {precision} model (its builder, a minute or more)...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        build_ortgenai_model(checkpoint, folder, precision)
    except RuntimeError as error:
        return None, f"the builder failed: {error}", None
    return folder, "", time.perf_counter() - started


def builder_precision(folder: Path) -> str:
    """"int4" when the builder's model has MatMulNBits nodes, else the type of its MatMul weights."""
    import onnx

    graph = onnx.load(str(folder / _ortgenai_file(folder)), load_external_data=False).graph
    if any(node.op_type == "MatMulNBits" for node in graph.node):
        return "int4"
    types = {tensor.name: tensor.data_type for tensor in graph.initializer}
    weights = [types[name] for node in graph.node if node.op_type == "MatMul" for name in node.input if name in types]
    return {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}.get(weights[0], "unknown") if weights else "unknown"


def make_workload(checkpoint: Path, args: argparse.Namespace, threads: int) -> Workload:
    """The decode prompt and the prefill prompt, as text and as ids (the checkpoint's tokenizer,
    BOS first: what the runtime's Engine.encode gives)."""
    from ortgenai_runner import prompt_ids
    from tokenizers import Tokenizer


    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    source = Path(textwrap.__file__).read_text()
    body = tokenizer.encode(source, add_special_tokens=False).ids[: args.prefill_tokens - 1]
    long_prompt = tokenizer.decode(body, skip_special_tokens=True)
    return Workload(
        prompt=args.prompt,
        prompt_ids=prompt_ids(checkpoint, args.prompt),
        long_prompt=long_prompt,
        long_prompt_ids=prompt_ids(checkpoint, long_prompt),
        max_new_tokens=args.max_new_tokens,
        threads=threads,
        runtime_threads=args.threads,
    )


def check_fits(workload: Workload, artifacts: Path) -> None:
    """Exits when a prompt and its new tokens would not fit in the export's context."""
    from gemma_edge.artifact.manifest import load_manifest

    context = load_manifest(artifacts, verify=False).model.context_length
    for ids, new_tokens in ((workload.prompt_ids, workload.max_new_tokens), (workload.long_prompt_ids, 1)):
        if len(ids) + new_tokens > context:
            sys.exit(f"error: {len(ids)} prompt + {new_tokens} new tokens exceed the export's context of {context}")


def plan_rows(
    artifacts: Path, checkpoint: Path, ortgenai_dir: Path | None, ortgenai_reason: str, huge_pages_ablation: bool = False
) -> tuple[list[RowSpec], dict[str, str]]:
    """The rows this export and these packages allow, and why each missing one is missing."""
    from gemma_edge.artifact.manifest import GraphRole, load_manifest

    manifest = load_manifest(artifacts)  # checks every file once, before any row opens them
    has_drafter = manifest.graph(GraphRole.DRAFTER) is not None
    has_tflite = "tflite" in manifest.formats
    rows = [RowSpec(RUNTIME_PLAIN, "runtime", artifacts)]
    absent: dict[str, str] = {}
    no_drafter = "the export has no drafter"
    no_tflite = "the export has no TFLite graphs (the recipe has no TFLite form, or it was exported --format onnx)"
    if has_drafter:
        rows.append(RowSpec(RUNTIME_MTP, "runtime", artifacts, speculative=True))
    else:
        absent[RUNTIME_MTP] = no_drafter
    if has_tflite:
        rows.append(RowSpec(LITERT_PLAIN, "runtime", artifacts, backend="litert"))
        if has_drafter:
            rows.append(RowSpec(LITERT_MTP, "runtime", artifacts, backend="litert", speculative=True))
        else:
            absent[LITERT_MTP] = no_drafter
    else:
        absent[LITERT_PLAIN] = absent[LITERT_MTP] = no_tflite
    if huge_pages_ablation:
        rows.append(RowSpec(RUNTIME_SMALL_PAGES, "runtime", artifacts, huge_pages=False))
    if ortgenai_dir is not None:
        rows.append(RowSpec(ORTGENAI, "ort-genai", ortgenai_dir))
        if huge_pages_ablation:
            rows.append(RowSpec(ORTGENAI_HUGE_PAGES, "ort-genai", ortgenai_dir, huge_pages=True))
    else:
        absent[ORTGENAI] = ortgenai_reason
    litertlm_reason = _litertlm_missing(manifest.litertlm, has_tflite)
    if litertlm_reason:
        absent[LITERTLM_PLAIN] = absent[LITERTLM_MTP] = litertlm_reason
    else:
        bundle = artifacts / str(manifest.litertlm)
        rows.append(RowSpec(LITERTLM_PLAIN, "litert-lm", bundle))
        if has_drafter:
            rows.append(RowSpec(LITERTLM_MTP, "litert-lm", bundle, speculative=True))
        else:
            absent[LITERTLM_MTP] = no_drafter
    rows.append(RowSpec(TRANSFORMERS, "transformers", checkpoint))
    return rows, absent


def _litertlm_missing(bundle: str | None, has_tflite: bool) -> str:
    if not has_tflite:
        return "the export has no TFLite graphs, so no .litertlm bundle"
    if bundle is None:
        return "the export wrote no .litertlm bundle"
    try:
        importlib.metadata.version("litert-lm")
    except importlib.metadata.PackageNotFoundError:
        return "litert-lm is not installed (pip install -e '.[export,bench]')"
    return ""


def versions(threads: int) -> dict[str, Any]:
    """decode_speed.machine_description plus the peers' package versions."""
    machine = decode_speed.machine_description(threads)
    for package in ("onnxruntime-genai", "litert-lm", "ai-edge-litert"):
        try:
            machine[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            machine[package] = None
    return machine


# ----------------------------------------------------------------------------- report


AGREEMENT_REFERENCES = {RUNTIME_PLAIN: "ONNX", LITERT_PLAIN: "TFLite"}  # ours, plain, on each graph format


def agreement(summaries: dict[str, Summary], tokenizer: Any) -> dict[str, dict[str, Any]]:
    """Each row's first-round greedy output against ours on each graph format (runtime-plain on
    ONNX, runtime-litert-plain on TFLite: different quantizers, so both are shown; LiteRT-LM runs
    the TFLite graphs). Ids for id rows; text by prefix for LiteRT-LM (it gives no ids). Also
    whether the row gave the same output in every round."""
    references = {name: summaries[name].samples[0].token_ids for name in AGREEMENT_REFERENCES if name in summaries}
    result: dict[str, dict[str, Any]] = {}
    for name, summary in summaries.items():
        first = summary.samples[0]
        row: dict[str, Any] = {
            "stable": all((s.text, s.token_ids) == (first.text, first.token_ids) for s in summary.samples)
        }
        for reference, ids in references.items():
            if name in TEXT_ONLY:
                text, expected = first.text or "", tokenizer.decode(ids, skip_special_tokens=True)
                row[reference] = _agreement(text, expected, "characters", text.startswith(expected))
            else:
                row[reference] = _agreement(first.token_ids, ids, "tokens", first.token_ids == ids)
        result[name] = row
    return result


def _agreement(ours: Any, reference: Any, unit: str, same: bool) -> dict[str, Any]:
    return {"unit": unit, "agreeing_prefix": _common_prefix(ours, reference), "compared": len(reference), "same": same}


def _common_prefix(a: Any, b: Any) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def other_load(summary: Summary) -> float | None:
    """Cores the rest of the machine kept busy while this row decoded: its other CPU seconds over
    its wall seconds, summed over the rounds (/proc/stat counts in 10 ms ticks: one short run
    alone would be too coarse)."""
    pairs = [(s.other_cpu_seconds, s.wall_seconds) for s in summary.samples if s.other_cpu_seconds is not None and s.wall_seconds]
    wall = sum(seconds for _, seconds in pairs)
    return sum(other for other, _ in pairs) / wall if wall > 0 else None


def _median_of(summary: Summary, attribute: str) -> float | None:
    return decode_speed._median_or_none([getattr(sample, attribute) for sample in summary.samples])


def best_peer(summaries: dict[str, Summary], attribute: str) -> tuple[str | None, float | None]:
    """The peer row with the highest median of `attribute` ("tokens_per_second" for decode)."""
    medians = {name: _median_of(summaries[name], attribute) for name in PEERS if name in summaries}
    present = {name: value for name, value in medians.items() if value}
    if not present:
        return None, None
    name = max(present, key=lambda key: present[key])
    return name, present[name]


def row_results(summaries: dict[str, Summary], rows: dict[str, RowProcess], agree: dict[str, Any]) -> dict[str, Any]:
    _, best_decode = best_peer(summaries, "tokens_per_second")
    _, best_prefill = best_peer(summaries, "prefill_tokens_per_second")
    results = {}
    for name, summary in summaries.items():
        row = summary.to_json(None)
        row.pop("ratio_to_transformers")
        prefill = [sample.prefill_tokens_per_second for sample in summary.samples]
        prefill_median = _median_of(summary, "prefill_tokens_per_second")
        present = [value for value in prefill if value is not None]
        memory = rows[name].memory
        results[name] = {
            **row,
            "group": "ablation" if name in ABLATIONS else "ours" if name in OURS else "peer",
            "decode_vs_best_peer": row["median"] / best_decode if row["median"] and best_decode else None,
            "prefill_tokens_per_second": prefill,
            "prefill_median": prefill_median,
            "prefill_min": min(present) if present else None,
            "prefill_max": max(present) if present else None,
            "prefill_tokens": [sample.prefill_tokens for sample in summary.samples],
            "prefill_vs_best_peer": prefill_median / best_prefill if prefill_median and best_prefill else None,
            "memory_mib": asdict(memory) if memory else None,
            "greedy_vs_ours": agree[name],
            "decoder_calls": [sample.decoder_calls for sample in summary.samples],
            "drafter_calls": [sample.drafter_calls for sample in summary.samples],
            "cpu_per_wall": [sample.cpu_per_wall for sample in summary.samples],
            "cpu_per_wall_median": _median_of(summary, "cpu_per_wall"),
            "other_load": other_load(summary),
        }
    return results


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        lines.append("  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_rows(results: dict[str, Any]) -> str:
    references = [name for name in AGREEMENT_REFERENCES if any(name in row["greedy_vs_ours"] for row in results.values())]
    header = (
        "row", "new tok", "decode tok/s", "(min-max)", "vs best peer", "CPU/wall", "other load", "prefill tok/s", "vs best peer",
        "peak RSS MiB", "huge pages MiB", *(f"= ours {AGREEMENT_REFERENCES[name]}" for name in references),
    )  # fmt: skip
    rows = []
    for name, row in results.items():
        memory = row["memory_mib"] or {}
        rows.append(
            (
                LABELS[name],
                "/".join(str(count) for count in sorted(set(row["new_tokens"]))),
                _fmt(row["median"]),
                f"({_fmt(row['min'])}-{_fmt(row['max'])})",
                _fmt(row["decode_vs_best_peer"], ".2f", "x"),
                _fmt(row["cpu_per_wall_median"], ".2f"),
                _fmt(row["other_load"], ".2f"),
                _fmt(row["prefill_median"]),
                _fmt(row["prefill_vs_best_peer"], ".2f", "x"),
                _fmt(memory.get("peak_rss")),
                _fmt(memory.get("huge_pages"), ".0f"),
                *(_agreement_cell(name, reference, row["greedy_vs_ours"]) for reference in references),
            )
        )
    return _table(header, rows)


def _agreement_cell(name: str, reference: str, agree: dict[str, Any]) -> str:
    """"ref" for the reference itself; else agreeing prefix / compared ("c": characters), "*" when
    the whole output matched."""
    if name == reference:
        return "ref"
    cell = agree[reference]
    return f"{'*' if cell['same'] else ''}{cell['agreeing_prefix']}/{cell['compared']}{'c' if cell['unit'] == 'characters' else ''}"


def format_speculation(results: dict[str, Any], draft_tokens: int | None) -> str:
    """Acceptance of our speculative rows (LiteRT-LM does not report its own, and drafts K =
    `draft_tokens` every step; ours choose K per step, at most that, when greedy)."""
    parts = [
        f"{name} acceptance {row['acceptance_rate']:.3f}, {row['mean_accepted_per_step']:.2f} tokens/verify, "
        f"{row['draft_tokens']:.2f} drafts/verify"
        for name, row in results.items()
        if name in (RUNTIME_MTP, LITERT_MTP) and row["acceptance_rate"] is not None
    ]
    return f"MTP (drafter's K={draft_tokens}): " + "; ".join(parts) if parts else ""


def format_absent(absent: dict[str, str]) -> str:
    return "\n".join(f"absent: {LABELS[name]} [{name}]: {reason}" for name, reason in absent.items())


def format_roofline(report: dict[str, Any]) -> str:
    bandwidth = report["bandwidth"]
    summary = (
        f"memory read bandwidth: {bandwidth['read_one_thread_gb_s']:.1f} GB/s (numpy int64 sum, 1 thread), "
        f"{bandwidth['read_threads_gb_s']:.1f} GB/s ({bandwidth['threads']:.0f} threads), copy {bandwidth['copy_gb_s']:.1f} GB/s "
        f"(read + write); {bandwidth['array_bytes'] / 2**30:.2f} GiB array, median of {bandwidth['repeats']:.0f}"
    )
    lines = [summary, ""]
    header = ("ONNX row", "weight MB/token", "decode tok/s", "weights GB/s", "of read BW", "bandwidth-bound tok/s")
    rows = [
        (
            f"{LABELS[name]} [{name}]",
            _fmt(row["weight_bytes_per_token"] / 1e6 if row["weight_bytes_per_token"] else None, ".2f"),
            _fmt(row["median_tokens_per_second"]),
            _fmt(row["achieved_gb_s"], ".2f"),
            _fmt(row["fraction_of_bandwidth"] * 100 if row["fraction_of_bandwidth"] is not None else None, ".1f", "%"),
            _fmt(row["bandwidth_bound_tokens_per_second"]),
        )
        for name, row in report["rows"].items()
    ]
    lines.append(_table(header, rows))
    for key, graphs in report["graphs"].items():
        for graph in graphs.values():
            lines.append(
                f"  {key} {graph['file']}: matmul weights {graph['matmul_bytes'] / 1e6:.2f} MB, one embedding row "
                f"{graph['gather_row_bytes'] / 1e3:.2f} kB of {graph['gathered_table_bytes'] / 1e6:.2f} MB, "
                f"other {graph['other_bytes'] / 1e6:.2f} MB (not counted)"
            )
    return "\n".join(lines)


def print_report(results: dict[str, Any], absent: dict[str, str], machine: dict[str, Any], settings: dict[str, Any], roof: dict[str, Any] | None) -> None:
    print()
    print(decode_speed.format_machine(machine))
    print(
        f"         onnxruntime-genai {machine['onnxruntime-genai']}, litert-lm {machine['litert-lm']}, "
        f"ai-edge-litert {machine['ai-edge-litert']}"
    )
    print(
        f"model: {settings['checkpoint']} ({settings['recipe']}, context {settings['context_length']}); "
        f"artifacts: {settings['artifacts']}; ort-genai: {settings['ortgenai_precision'] or '-'}"
    )
    print(
        f"decode: prompt {settings['prompt']!r} ({settings['prompt_tokens']} tokens), max {settings['max_new_tokens']} new tokens, "
        f"greedy; prefill: {settings['prefill_prompt_tokens']}-token prompt; median of {settings['repeats']} "
        f"round-robin rounds after 1 warm-up; every row in its own process"
    )
    print()
    print(format_rows(results))
    if absent:
        print(format_absent(absent))
    speculative = format_speculation(results, settings["draft_tokens"])
    if speculative:
        print(speculative)
    print()
    print("decode tok/s = (new_tokens - 1) / (last token time - first token time); LiteRT-LM: its own counters "
          "(decode count / decode time, every new token). prefill: each engine's definition (module docstring). "
          "peak RSS: VmHWM of the row's own process. vs best peer: median / the fastest peer row's median. "
          "= ours X: greedy output's agreeing prefix / length of ours on graph format X, in tokens ('c': characters, "
          "LiteRT-LM gives text only); '*': the whole output matched. "
          "CPU/wall: the row process's CPU seconds per wall second over its decode runs (median); other load: cores "
          "the rest of the machine kept busy meanwhile (/proc/stat, over all rounds).")
    busy = busy_rows(results)
    if busy:
        print(
            f"warning: other processes kept more than {BUSY_CORES} cores busy while {', '.join(busy)} decoded "
            f"(of {settings['usable_cpus']} usable CPUs); those rows were slowed by something else (torch's OpenMP "
            "threads suffer most when a core is taken), compare with care"
        )
    if roof is not None:
        print()
        print(format_roofline(roof))


BUSY_CORES = 0.25  # other load above this many cores during a row's decode runs: the report warns


def busy_rows(results: dict[str, Any]) -> list[str]:
    """Rows during whose decode runs other processes kept more than BUSY_CORES cores busy."""
    return [name for name, row in results.items() if (row["other_load"] or 0.0) > BUSY_CORES]


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    decode_speed.quiet_libraries()
    from tokenizers import Tokenizer

    from gemma_edge.runtime.threads import available_cores

    threads = args.threads or available_cores()
    if args.artifacts is None:
        args.quant = args.quant or DEFAULT_QUANT
    with decode_speed.artifact_folder(args) as (artifacts, export_seconds), tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        recipe = resolve_recipe(artifacts, args.quant)
        checkpoint = decode_speed.reference_checkpoint(artifacts, args.checkpoint)
        ortgenai_dir, ortgenai_reason, build_seconds = ortgenai_model(args, checkpoint, recipe, Path(scratch))
        workload = make_workload(checkpoint, args, threads)
        check_fits(workload, artifacts)
        specs, absent = plan_rows(artifacts, checkpoint, ortgenai_dir, ortgenai_reason, args.huge_pages_ablation)
        bandwidth = None
        if args.roofline:
            print("measuring memory bandwidth...", file=sys.stderr, flush=True)
            bandwidth = measure_bandwidth(args.bandwidth_gib, threads)
        rows = start_rows(specs, workload, absent)
        try:
            if REFERENCE not in rows:
                sys.exit(f"error: the {REFERENCE} row did not open: {absent.get(REFERENCE)}")
            print(f"measuring ({args.repeats} rounds after a warm-up)...", file=sys.stderr, flush=True)
            summaries = measure_rows(rows, args.repeats)
        finally:
            for row in rows.values():
                row.stop()
        roof = roofline(summaries, artifacts, ortgenai_dir, bandwidth) if bandwidth is not None else None
        settings = make_settings(args, artifacts, checkpoint, recipe, workload)
    settings.update(export_seconds=export_seconds, ortgenai_build_seconds=build_seconds)
    settings["ortgenai_precision"] = ORTGENAI_PRECISION[recipe] if ortgenai_dir is not None else None
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    results = row_results(summaries, rows, agreement(summaries, tokenizer))
    machine = versions(threads)
    print_report(results, absent, machine, settings, roof)
    document = {
        "definitions": DEFINITIONS,
        "settings": settings,
        "machine": machine,
        "results": results,
        "absent": absent,
        "token_ids": {name: summary.samples[0].token_ids for name, summary in summaries.items()},
        "texts": {name: summary.samples[0].text for name, summary in summaries.items() if name in TEXT_ONLY},
        "roofline": roof,
    }
    if args.json is not None:
        write_json(args.json, document)
        print(f"wrote {args.json}")
    return document


DEFINITIONS = {
    "decode_tokens_per_second": "(new_tokens - 1) / seconds from the first generated token to the last "
    "(LiteRT-LM: its decode token count / its decode time)",
    "prefill_tokens_per_second": "prompt tokens / prefill seconds, each engine's definition (see peers.py)",
    "peak_rss": "VmHWM of the row's own process, MiB",
    "huge_pages": "AnonHugePages of the row's process once its engine is open, MiB (runtime/huge_pages.py)",
    "vs_best_peer": "median / the highest median among the peer rows",
    "other_load": "cores the rest of the machine kept busy during the row's decode runs (/proc/stat)",
}


def make_settings(args: argparse.Namespace, artifacts: Path, checkpoint: Path, recipe: str, workload: Workload) -> dict[str, Any]:
    from gemma_edge.artifact.manifest import load_manifest
    from gemma_edge.runtime.threads import available_cores, thread_plan

    manifest = load_manifest(artifacts, verify=False)
    return {
        "checkpoint": str(checkpoint),
        "recipe": recipe,
        "context_length": manifest.model.context_length,
        "artifacts": "temporary export" if args.artifacts is None else str(args.artifacts),
        "draft_tokens": manifest.drafter.num_assistant_tokens if manifest.drafter is not None else None,
        "ortgenai_dir": str(args.ortgenai_dir) if args.ortgenai_dir is not None else None,
        "prompt": workload.prompt,
        "prompt_tokens": len(workload.prompt_ids),
        "prefill_prompt": workload.long_prompt,
        "prefill_prompt_tokens": len(workload.long_prompt_ids),
        "max_new_tokens": workload.max_new_tokens,
        "repeats": args.repeats,
        "warmup_runs": 1,
        "threads": workload.threads,
        "runtime_threads": workload.runtime_threads or f"runtime default: {thread_plan(manifest)}",
        "usable_cpus": available_cores(),
        "sampling": "greedy",
    }


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
