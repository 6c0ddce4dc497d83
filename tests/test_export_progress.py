"""Export progress names what each TFLite graph is doing (tracing and converting, writing its
weights, checking its signatures), so the last line shown is never a finished graph's
"ETA 0s" while the next one converts; off a terminal those are plain lines."""

from __future__ import annotations

import io
import os
from functools import partial
from pathlib import Path

from gemma_edge.exporter.checkpoint.layout import model_summary
from gemma_edge.exporter.checkpoint.lazy_weights import WeightSources
from gemma_edge.exporter.checkpoint.loading import load_drafter, load_target
from gemma_edge.exporter.components.graph_specs import litert_shapes
from gemma_edge.exporter.components.graphs import build_litert_graphs
from gemma_edge.exporter.components.norms import use_fusable_norms
from gemma_edge.exporter.progress import ERASE_LINE, StageProgress
from gemma_edge.exporter.tflite.writer import write_tflite
from gemma_edge.quantize.recipes import get_recipe

GRAPHS = ("token_embedder", "drafter")  # the two smallest graphs of the tiny model


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_tflite_graph_names_its_phases_in_order_in_a_log(tiny_checkpoints: Path, tmp_path: Path) -> None:
    target = load_target(tiny_checkpoints / "target", weights=False)
    drafter = load_drafter(tiny_checkpoints / "drafter", target, weights=False)
    for loaded in (target, drafter):
        use_fusable_norms(loaded.model)
    summary = model_summary(target.config, 32)
    built = {graph.name: graph for graph in build_litert_graphs(target, drafter, summary, litert_shapes(summary, 3, (8,)))}
    sources = WeightSources([target, drafter])

    # The progress stream is file descriptor 2 itself, as sys.stderr is in a real export (a log
    # file, not a terminal): a line written while the converter's native output is silenced
    # (quiet_native_output redirects descriptor 2) would be lost, and this test would see it.
    log = tmp_path / "stderr.log"
    saved = os.dup(2)
    try:
        with log.open("w") as file:
            os.dup2(file.fileno(), 2)
        with open(2, "w", closefd=False) as stream:
            progress = StageProgress(total=1, stream=stream)
            with progress.stage("Converting TFLite graphs"):
                for name in GRAPHS:
                    file_name = f"{name}.tflite"
                    write_tflite(
                        built[name], tmp_path / file_name, sources, get_recipe("fp32"),
                        partial(progress.tensor_progress, file_name), partial(progress.phase, file_name),
                    )
    finally:
        os.dup2(saved, 2)
        os.close(saved)

    output = log.read_text()
    assert "\r" not in output and "\033" not in output
    lines = output.splitlines()
    expected = []
    for name in GRAPHS:
        signatures = len(built[name].spec.signatures)
        expected += [
            f"    {name}.tflite: tracing and converting {signatures} signatures",
            f"    {name}.tflite: writing weights",
            f"    {name}.tflite: checking its signatures",
        ]
    phases = [line for line in lines if ": tensor " not in line]
    assert phases[:-1] == expected
    assert phases[-1].startswith("[1/1] Converting TFLite graphs ... done (")
    for name in GRAPHS:  # the tensor lines of a graph come between its writing and checking lines
        tensor_lines = [index for index, line in enumerate(lines) if line.startswith(f"    {name}.tflite: tensor ")]
        assert tensor_lines
        assert lines.index(f"    {name}.tflite: writing weights") < min(tensor_lines)
        assert max(tensor_lines) < lines.index(f"    {name}.tflite: checking its signatures")


def test_on_a_terminal_a_phase_replaces_the_previous_graphs_tensor_line() -> None:
    stream = Terminal()
    progress = StageProgress(total=1, stream=stream)

    class Info:
        index, offset = 0, 10

    with progress.stage("Converting TFLite graphs"):
        progress.tensor_progress("token_embedder.tflite", total_bytes=10, total_tensors=1)(None, Info())
        progress.phase("decoder.tflite", "tracing and converting 12 signatures")
        shown = stream.getvalue().split(ERASE_LINE)[-1]
        assert shown == "    decoder.tflite: tracing and converting 12 signatures"  # the stale ETA line is gone
        assert "\n" not in stream.getvalue()  # one live line, rewritten in place
    last = stream.getvalue().split(ERASE_LINE)[-1]
    assert last.startswith("[1/1] Converting TFLite graphs ... done (") and last.endswith("s)\n")


def test_quiet_progress_writes_no_phase() -> None:
    stream = io.StringIO()
    StageProgress(total=1, stream=stream, enabled=False).phase("decoder.tflite", "writing weights")
    assert stream.getvalue() == ""
