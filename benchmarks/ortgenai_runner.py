"""onnxruntime-genai on a `gemma4_unified` checkpoint: build with its model builder, time greedy decode.

Build
-----
`build_ortgenai_model` runs onnxruntime-genai 0.18's model builder::

    python -m onnxruntime_genai.models.builder -i <shimmed copy> -o OUT -p int4|fp32 -e cpu -c <tmp cache>
        [--extra_options accuracy_level=4 block_size=32]      (int4 only)

on a temporary copy of the checkpoint whose config.json carries a shim (`shim_config`); the
weights, tokenizer and generation config are symlinked, not copied. The builder was written for a
transformers that kept ``global_head_dim`` / ``num_global_key_value_heads`` as plain text-config
attributes; transformers 5.23 folds them into ``per_layer_config`` (full-attention layers
override ``head_dim`` and ``num_key_value_heads``), which makes ``config.head_dim`` and
``config.num_key_value_heads`` raise `AmbiguousGlobalPerLayerAttributeError` and leaves no
``config.global_head_dim`` to read. The shim therefore

1. sets ``allow_global_per_layer_attribute_access: true`` in the text config *and* at the top
   level (the builder copies the text config's attributes, the per-layer spec included, onto the
   top-level config, but not this flag, which exists there as a property), so the global
   ``head_dim`` / ``num_key_value_heads`` read as the sliding layers' values, which is what the
   builder expects;
2. copies ``global_head_dim`` and ``num_global_key_value_heads`` to the top level of config.json,
   where transformers keeps unknown keys as attributes (in the text config they are consumed).

The text config keeps its per-layer overrides, so the builder's own transformers model (used to
read the weights) still gets the full layers' shapes. The builder cannot build KV-shared layers
(it reads ``k_proj`` of layers that have none: `shim_config` refuses them up front) and builds the
text decoder only (no vision/audio, no hidden-state output for a drafter). It also rounds the
embedding scale sqrt(hidden_size) to two decimals (45.25 for hidden 2048, where transformers uses
45.2548; exact for hidden 1024): the fp32 model's logits then differ from transformers' by ~1e-2
instead of ~1e-4 at hidden 2048.

int4 is MatMulNBits with block size 32 and accuracy_level 4 (int8 activations: about 2x faster
than accuracy_level 1 on x86 CPUs); these are the builder's CPU defaults but are passed explicitly.

Timing
------
`OrtGenaiRunner.decode_rate` runs one greedy generation with `og.Generator` and measures, like
benchmarks/decode_speed.py,

    decode tokens/s = (new_tokens - 1) / (time the last token was returned - time the first was)

`append_tokens(prompt)` runs prefill (timed separately as ``prefill_seconds``); the first
`generate_next_token()` only picks the token from the prefill logits (~0.1 ms), every later call
runs one decoder step on the previous token and picks (0.18 runs that step lazily: `get_logits()`
would run it early, so the timed loop never calls it). Each sample also carries the process's CPU
seconds per wall second over the decode span: about `threads` on an idle machine, near 1 when
another process takes a core (such rounds are visibly slow and should be discarded). The thread count is set through an `og.Config` overlay of the decoder's
session options (``intra_op_num_threads``; ``inter_op_num_threads`` 1), so the built folder is not
modified. ``max_length`` is prompt + new tokens (the shared KV buffer is sized to it), but at
least the sliding window: GroupQueryAttention's windowed cache refuses a smaller capacity.

Proof run (builds int4 and fp32, times both interleaved, checks fp32 greedy against transformers)::

    python benchmarks/ortgenai_runner.py --checkpoint /tmp/ortgenai-work/ckpt-165m --work /tmp/ortgenai-work
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

PRECISIONS = ("int4", "fp32")
INT4_OPTIONS = ("accuracy_level=4", "block_size=32")
DEFAULT_PROMPT = "def fibonacci(n):"
SHIM_FLAG = "allow_global_per_layer_attribute_access"
GLOBAL_KEYS = ("global_head_dim", "num_global_key_value_heads")


class DecodeSample(TypedDict):
    """One timed greedy generation (the fields of decode_speed.Sample that apply, plus prefill)."""

    tokens_per_second: float | None
    new_tokens: int
    token_ids: list[int]
    prefill_seconds: float
    cpu_per_wall: float | None  # process CPU seconds / wall seconds over the decode span: ~threads when
    # the machine is otherwise idle, lower when something else competes for the cores


# ----------------------------------------------------------------------------- build


def shim_config(config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config.json as onnxruntime-genai 0.18's builder can read it under
    transformers 5.23 (see the module docstring); the input is not modified."""
    text = dict(config["text_config"])
    missing = [key for key in GLOBAL_KEYS if key not in text]
    if missing:
        raise ValueError(f"text_config lacks {missing}: not a gemma4_unified config this shim knows")
    if text.get("num_kv_shared_layers", 0):
        raise ValueError("onnxruntime-genai 0.18 cannot build KV-shared layers; use num_kv_shared_layers 0")
    text[SHIM_FLAG] = True
    return {**config, "text_config": text, SHIM_FLAG: True, **{key: text[key] for key in GLOBAL_KEYS}}


def shimmed_copy(checkpoint: Path, dest: Path) -> Path:
    """`dest` with the shimmed config.json and symlinks to every other file of `checkpoint`."""
    dest.mkdir(parents=True, exist_ok=True)
    for source in sorted(checkpoint.iterdir()):
        if source.name == "config.json" or not source.is_file():
            continue
        (dest / source.name).symlink_to(source.resolve())
    config = json.loads((checkpoint / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(shim_config(config), indent=2) + "\n")
    return dest


def builder_command(source: Path, out: Path, precision: str, cache_dir: Path) -> list[str]:
    """The model-builder command line for `precision` on the CPU execution provider."""
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(source), "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(cache_dir),
    ]  # fmt: skip
    if precision == "int4":
        command += ["--extra_options", *INT4_OPTIONS]
    return command


def build_ortgenai_model(checkpoint: Path, out: Path, precision: str) -> Path:
    """Build `checkpoint` into `out` (model.onnx, model.onnx.data, genai_config.json, tokenizer
    files) with the builder at `precision` ("int4" or "fp32"); returns `out`.

    Raises RuntimeError with the end of the builder's output when it fails.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with tempfile.TemporaryDirectory(prefix="ortgenai-build-") as tmp:
        source = shimmed_copy(checkpoint, Path(tmp) / "checkpoint")
        command = builder_command(source, out, precision, Path(tmp) / "cache")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (out / "genai_config.json").is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"onnxruntime-genai builder failed ({precision}, exit {result.returncode}):\n{tail}")
    return out


def folder_bytes(folder: Path) -> int:
    """Total size of the files under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# ----------------------------------------------------------------------------- run


def session_overlay(threads: int) -> str:
    """An og.Config overlay that sets the decoder session's thread counts."""
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    return json.dumps({"model": {"decoder": {"session_options": options}}})


class OrtGenaiRunner:
    """One onnxruntime-genai model on the CPU with `threads` intra-op threads."""

    def __init__(self, model_dir: Path, threads: int):
        import onnxruntime_genai as og

        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._og = og
        config = og.Config(str(model_dir))
        config.clear_providers()  # CPU
        config.overlay(session_overlay(threads))
        self.model = og.Model(config)
        self.model_dir = model_dir
        self.threads = threads
        decoder = json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]
        # GroupQueryAttention's sliding-window cache refuses a capacity below the window.
        self.min_length = int(decoder.get("sliding_window", {}).get("window_size", 0))

    def _generator(self, prompt_ids: list[int], max_new_tokens: int) -> Any:
        params = self._og.GeneratorParams(self.model)
        max_length = max(len(prompt_ids) + max_new_tokens, self.min_length)
        params.set_search_options(do_sample=False, max_length=max_length)
        return self._og.Generator(self.model, params)

    def decode_rate(self, prompt_ids: list[int], max_new_tokens: int) -> DecodeSample:
        """One greedy generation of up to `max_new_tokens` (stops at EOS), timed as in the module
        docstring."""
        generator = self._generator(prompt_ids, max_new_tokens)
        started = time.perf_counter()
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        prefill_seconds = time.perf_counter() - started
        tokens: list[int] = []
        times: list[float] = []
        cpu_times: list[float] = []
        while len(tokens) < max_new_tokens and not generator.is_done():
            generator.generate_next_token()
            times.append(time.perf_counter())
            cpu_times.append(time.process_time())
            tokens.append(int(generator.get_next_tokens()[0]))
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return DecodeSample(
            tokens_per_second=(len(tokens) - 1) / span if span > 0 else None,
            new_tokens=len(tokens),
            token_ids=tokens,
            prefill_seconds=prefill_seconds,
            cpu_per_wall=(cpu_times[-1] - cpu_times[0]) / span if span > 0 else None,
        )

    def greedy_logits(self, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy ids and, per new token, the logits [vocab] it was chosen from (after softcapping):
        [new_tokens, vocab] fp32. Untimed; for comparing with transformers' `generate` scores."""
        generator = self._generator(prompt_ids, max_new_tokens)
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        tokens: list[int] = []
        logits: list[np.ndarray] = []
        while len(tokens) < max_new_tokens and not generator.is_done():
            # get_logits() runs the pending decoder step (on the last picked token) if it has not
            # run yet; generate_next_token() then picks from exactly these logits.
            logits.append(np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1))
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        return tokens, np.stack(logits)


# ----------------------------------------------------------------------------- transformers reference


def transformers_greedy(checkpoint: Path, prompt_ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    """transformers `generate(do_sample=False)` on the checkpoint (fp32, as `load_target` loads it):
    the new ids, the logits each was chosen from [new_tokens, vocab], and their top-1 minus top-2
    margins (a small margin is a near-tie that a rounding difference may flip)."""
    import torch

    from gemma_edge.exporter.checkpoint.loading import load_target

    model = load_target(checkpoint).model
    input_ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            output_logits=True,
            return_dict_in_generate=True,
        )
    steps = torch.stack([scores[0].float() for scores in output.logits])
    top2 = steps.topk(2, dim=-1).values
    return {
        "token_ids": output.sequences[0, len(prompt_ids) :].tolist(),
        "margins": (top2[:, 0] - top2[:, 1]).tolist(),
        "logits": steps.numpy(),
    }


# ----------------------------------------------------------------------------- proof run


def prompt_ids(checkpoint: Path, prompt: str) -> list[int]:
    """The checkpoint tokenizer's ids for `prompt`, with BOS first (as the runtime's Engine.encode)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(checkpoint / "tokenizer.json")).encode(prompt).ids
    bos = json.loads((checkpoint / "config.json").read_text())["text_config"]["bos_token_id"]
    return ids if ids and ids[0] == bos else [bos, *ids]


def measure(runners: dict[str, OrtGenaiRunner], ids: list[int], max_new_tokens: int, repeats: int) -> dict[str, list[DecodeSample]]:
    """One warm-up of each runner, then `repeats` round-robin rounds (the starting runner rotates)."""
    names = list(runners)
    for name in names:
        runners[name].decode_rate(ids, max_new_tokens)
    samples: dict[str, list[DecodeSample]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runners[name].decode_rate(ids, max_new_tokens))
    return samples


def compare_with_transformers(runner: OrtGenaiRunner, ids: list[int], reference: dict[str, Any]) -> dict[str, Any]:
    """The runner's greedy ids against `transformers_greedy`'s: equality, the agreeing prefix, and
    the largest logit difference over the steps where both saw the same tokens."""
    count = len(reference["token_ids"])
    ours, logits = runner.greedy_logits(ids, count)
    agree = next((i for i, (a, b) in enumerate(zip(ours, reference["token_ids"])) if a != b), min(len(ours), count))
    steps = min(agree + 1, len(ours), count)  # step `agree` still had identical inputs
    diff = float(np.abs(logits[:steps] - reference["logits"][:steps]).max())
    return {
        "greedy_ids": ours,
        "equal_to_transformers": ours == reference["token_ids"],
        "agreeing_prefix": agree,
        "logits_max_abs_diff": diff,
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a checkpoint with onnxruntime-genai (int4, fp32) and time greedy decode.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="gemma4_unified checkpoint (no KV-shared layers)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the built models (ortgenai-int4/, ortgenai-fp32/)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--rebuild", action="store_true", help="build even when the model folder exists")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--compare-tokens", type=int, default=16, help="fp32 greedy ids compared with transformers (0: skip)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--json", type=Path, default=None, help="write every number to this file")
    args = parser.parse_args(argv)

    folders: dict[str, Path] = {}
    build_seconds: dict[str, float | None] = {}
    for precision in args.precisions:
        folder = args.work / f"ortgenai-{precision}"
        build_seconds[precision] = None
        if args.rebuild or not (folder / "genai_config.json").is_file():
            started = time.perf_counter()
            build_ortgenai_model(args.checkpoint, folder, precision)
            build_seconds[precision] = time.perf_counter() - started
        folders[precision] = folder

    ids = prompt_ids(args.checkpoint, args.prompt)
    runners = {precision: OrtGenaiRunner(folder, args.threads) for precision, folder in folders.items()}
    samples = measure(runners, ids, args.max_new_tokens, args.repeats)

    print(f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} threads")
    print(f"prompt {args.prompt!r} ({len(ids)} tokens), {args.max_new_tokens} new tokens greedy, "
          f"median of {args.repeats} interleaved rounds after 1 warm-up")
    report: dict[str, Any] = {"cpu": _cpu_model(), "threads": args.threads, "prompt_ids": ids, "results": {}}
    for precision, runs in samples.items():
        rates = [run["tokens_per_second"] for run in runs if run["tokens_per_second"] is not None]
        size = folder_bytes(folders[precision])
        median = statistics.median(rates) if rates else None
        prefill = statistics.median(run["prefill_seconds"] for run in runs)
        stable = all(run["token_ids"] == runs[0]["token_ids"] for run in runs)
        busy = statistics.median(run["cpu_per_wall"] or 0.0 for run in runs)
        print(f"  {precision}: decode {median:.1f} tok/s (min {min(rates):.1f}, max {max(rates):.1f}), "
              f"prefill {prefill * 1e3:.1f} ms, CPU/wall {busy:.2f}, new tokens {runs[0]['new_tokens']}, size {size / 1e6:.1f} MB, "
              f"same ids every round: {stable}" + (f", built in {build_seconds[precision]:.1f} s" if build_seconds[precision] else ""))
        report["results"][precision] = {
            "decode_tokens_per_second": rates, "median": median, "prefill_seconds": [r["prefill_seconds"] for r in runs],
            "cpu_per_wall": [r["cpu_per_wall"] for r in runs],
            "size_bytes": size, "token_ids": runs[0]["token_ids"], "build_seconds": build_seconds[precision],
        }  # fmt: skip

    if args.compare_tokens > 0:
        reference = transformers_greedy(args.checkpoint, ids, args.compare_tokens)
        report["transformers"] = {"token_ids": reference["token_ids"], "margins": reference["margins"]}
        print(f"transformers greedy ({args.compare_tokens} tokens): {reference['token_ids']}")
        print(f"  smallest top-1/top-2 logit margin: {min(reference['margins']):.4f}")
        for precision, runner in runners.items():
            report["results"][precision].update(compare_with_transformers(runner, ids, reference))
            row = report["results"][precision]
            print(f"  {precision}: {row['greedy_ids']}  equal: {row['equal_to_transformers']} "
                  f"(first {row['agreeing_prefix']} agree), logits max |diff| over the agreeing steps "
                  f"{row['logits_max_abs_diff']:.2e}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
