"""MTP speculation on held-out prompts: acceptance per draft position and the decode speed-up.

What is measured, on one artifact folder, in one run:
  * prompts: the first --prompt-tokens tokens of each held-out corpus file (the Python standard
    library files the reference model never trained on; see exporter/training/corpus.py);
  * for K = 1..6 and for plain decoding: greedy generation of --max-new-tokens tokens per prompt,
    through the same runtime as `gemma-edge run` (`Engine.generate_ids`);
  * acceptance_rate (accepted drafts / proposed drafts) and mean_accepted_per_step (tokens per
    verify call) exactly as `run --stats-json` defines them, summed over all prompts;
  * per-position acceptance from the K=6 run: P(draft j accepted | drafts 1..j-1 accepted);
  * decode tokens/s = sum(new_tokens - 1) / sum(decode seconds) over the prompts, median over
    --repeats rounds; configurations interleave round-robin so machine noise hits all alike;
  * greedy speculative output must equal plain output token for token (checked every round).

Usage:
    python benchmarks/speculative_acceptance.py [--artifacts DIR] [--prompts 16] [--json FILE]
Without --artifacts the built-in reference model is exported into a temporary folder first.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gemma_edge.exporter.training.corpus import load_corpus
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.generate import GenerationConfig, GenerationResult

DRAFT_LENGTHS = (1, 2, 3, 4, 5, 6)


@dataclass
class Totals:
    """One configuration summed over all prompts of one round."""

    new_tokens: int = 0
    decode_seconds: float = 0.0
    proposed: int = 0
    accepted: int = 0
    verify_calls: int = 0
    tokens_from_verify: int = 0
    accepted_per_round: list[int] = field(default_factory=list)

    def add(self, result: GenerationResult) -> None:
        self.new_tokens += max(0, len(result.token_ids) - 1)
        self.decode_seconds += result.decode_seconds
        self.proposed += result.proposed_drafts
        self.accepted += result.accepted_drafts
        self.verify_calls += result.verify_calls
        self.tokens_from_verify += result.tokens_from_verify
        self.accepted_per_round.extend(result.accepted_per_round)

    @property
    def decode_tokens_per_second(self) -> float:
        return self.new_tokens / self.decode_seconds if self.decode_seconds else 0.0


def heldout_prompts(engine: Engine, count: int, prompt_tokens: int) -> list[list[int]]:
    prompts = []
    for file in load_corpus().split(heldout=True):
        ids = engine.encode(file.text)[: prompt_tokens + 1]  # <bos> + prompt_tokens
        if len(ids) == prompt_tokens + 1:
            prompts.append(ids)
        if len(prompts) == count:
            break
    return prompts


def per_position_acceptance(accepted_per_round: list[int], draft_tokens: int) -> list[float]:
    """P(draft j kept | drafts before it kept), j = 1..K, for greedy rounds of K drafts."""
    rates = []
    for position in range(1, draft_tokens + 1):
        reached = sum(1 for kept in accepted_per_round if kept >= position - 1)
        kept = sum(1 for kept in accepted_per_round if kept >= position)
        rates.append(kept / reached if reached else 0.0)
    return rates


def run_round(engine: Engine, prompts: list[list[int]], max_new_tokens: int, configs: dict[str, GenerationConfig], order: list[str]) -> dict[str, Totals]:
    totals = {name: Totals() for name in configs}
    outputs: dict[str, list[list[int]]] = {name: [] for name in configs}
    for name in order:
        for prompt in prompts:
            result = engine.generate_ids(prompt, configs[name])
            totals[name].add(result)
            outputs[name].append(result.token_ids)
    for name in configs:
        if outputs[name] != outputs["plain"]:
            raise SystemExit(f"speculative greedy output of {name} differs from plain decoding: a bug")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, help="artifact folder [default: export the built-in model]")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="onnxruntime threads [default: the runtime's default]")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.artifacts
        if folder is None:
            from gemma_edge.exporter.export import ExportOptions, export

            folder = Path(scratch) / "artifacts"
            export(ExportOptions(out=folder, show_progress=False))
        engine = Engine(folder, threads=args.threads)
        prompts = heldout_prompts(engine, args.prompts, args.prompt_tokens)
        configs = {"plain": GenerationConfig(max_new_tokens=args.max_new_tokens, speculative=False)}
        configs.update({f"K={k}": GenerationConfig(max_new_tokens=args.max_new_tokens, draft_tokens=k) for k in DRAFT_LENGTHS})
        names = list(configs)
        run_round(engine, prompts[:2], 8, configs, names)  # warm-up
        rounds = []
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            rounds.append(run_round(engine, prompts, args.max_new_tokens, configs, order))

    default_k = engine.manifest.drafter.num_assistant_tokens if engine.manifest.drafter else None
    plain_speed = statistics.median(r["plain"].decode_tokens_per_second for r in rounds)
    rows = []
    for name in names:
        speeds = [r[name].decode_tokens_per_second for r in rounds]
        first = rounds[0][name]
        rows.append(
            {
                "config": name,
                "decode_tokens_per_second_median": statistics.median(speeds),
                "min": min(speeds),
                "max": max(speeds),
                "speedup_vs_plain": statistics.median(speeds) / plain_speed,
                "acceptance_rate": first.accepted / first.proposed if first.proposed else None,
                "mean_accepted_per_step": first.tokens_from_verify / first.verify_calls if first.verify_calls else None,
            }
        )
    positions = per_position_acceptance(rounds[0]["K=6"].accepted_per_round, 6)
    machine = {"processor": platform.processor() or platform.machine(), "cpus": len(__import__("os").sched_getaffinity(0)), "threads": args.threads}
    print(f"{len(prompts)} held-out prompts x {args.max_new_tokens} new tokens, greedy, {args.repeats} rounds; default K={default_k}; machine {machine}")
    print(f"{'config':<8}{'tok/s':>9}{'min':>9}{'max':>9}{'speedup':>9}{'accept':>8}{'tok/verify':>12}")
    for row in rows:
        accept = "-" if row["acceptance_rate"] is None else f"{row['acceptance_rate']:.3f}"
        per_step = "-" if row["mean_accepted_per_step"] is None else f"{row['mean_accepted_per_step']:.2f}"
        print(
            f"{row['config']:<8}{row['decode_tokens_per_second_median']:>9.1f}{row['min']:>9.1f}{row['max']:>9.1f}"
            f"{row['speedup_vs_plain']:>8.2f}x{accept:>8}{per_step:>12}"
        )
    print("acceptance by draft position (K=6, conditional): " + ", ".join(f"{rate:.3f}" for rate in positions))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "per_position_acceptance": positions, "machine": machine, "default_k": default_k, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens}, indent=2) + "\n")


if __name__ == "__main__":
    main()
