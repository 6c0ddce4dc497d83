"""The rows of peers.py: each engine behind one interface, each row in a process of its own
(``multiprocessing`` spawn), and the parent's handle that starts those processes, asks them for
samples and reads their memory. Imported by name from the benchmarks folder (as peers.py imports
it): a row's process imports this module to find `row_process`."""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import decode_speed
from decode_speed import Sample, Summary

ORTGENAI = "ort-genai"  # the onnxruntime-genai row's name (decode_speed names the others)
# --huge-pages-ablation: each side with the other's page setting (runtime/huge_pages.py)
RUNTIME_SMALL_PAGES = "runtime-plain-small-pages"  # our ONNX plain row, its weights left in 4 KiB pages
ORTGENAI_HUGE_PAGES = "ort-genai-huge-pages"  # onnxruntime-genai, its load given our huge-page advice
REPLY_TIMEOUT_S = 3600.0  # a row that says nothing for this long is taken as hung


# ----------------------------------------------------------------------------- data


@dataclass
class PeerSample(Sample):
    """decode_speed.Sample plus what this benchmark adds: the prefill run, and the calls the
    decode made (runtime rows: for the roofline's bytes per token)."""

    prefill_tokens_per_second: float | None = None
    prefill_tokens: int | None = None
    decoder_calls: int | None = None  # target decoder calls in the decode span (plain steps + verifies)
    drafter_calls: int | None = None  # drafter calls in the decode span (= drafts proposed)
    cpu_per_wall: float | None = None  # process CPU seconds / wall seconds over the whole decode run
    wall_seconds: float | None = None  # of the whole decode run
    other_cpu_seconds: float | None = None  # CPU time the rest of the machine used meanwhile (/proc/stat)


@dataclass(frozen=True)
class RowSpec:
    """What one row's process opens: `path` is the artifact folder (runtime), the .litertlm
    bundle (LiteRT-LM), the builder's output folder (ort-genai) or the checkpoint (transformers)."""

    name: str
    engine: str  # "runtime", "litert-lm", "ort-genai" or "transformers"
    path: Path
    backend: str = "onnxruntime"
    speculative: bool = False
    huge_pages: bool | None = None  # None: the engine's own default (ours: huge pages; onnxruntime-genai: none)


@dataclass(frozen=True)
class Workload:
    prompt: str
    prompt_ids: list[int]
    long_prompt: str
    long_prompt_ids: list[int]
    max_new_tokens: int
    threads: int  # the peers' (and transformers') threads
    runtime_threads: int | None  # our runtime's: --threads, else None (its own plan for the model, runtime/threads.py)


@dataclass
class RowMemory:
    """MiB, read by the row's own process from /proc/self/status."""

    baseline_rss: float | None  # VmRSS before the engine's modules are imported
    loaded_rss: float | None  # VmRSS after the engine is open
    huge_pages: float | None = None  # AnonHugePages after the engine is open (runtime/huge_pages.py)
    peak_rss: float | None = None  # VmHWM at the end (peak over the process's life)


# ----------------------------------------------------------------------------- in each row's process


class RowEngine(Protocol):
    def decode(self) -> PeerSample: ...

    def prefill(self) -> tuple[float | None, int | None]: ...

    def close(self) -> None: ...


def runtime_decode(engine: Any, prompt: str, max_new_tokens: int, speculative: bool) -> PeerSample:
    """decode_speed.runtime_sample, keeping the call counts that `RunResult.stats()` leaves out."""
    from gemma_edge.runtime.generate import GenerationConfig

    result = engine.run(prompt, GenerationConfig(max_new_tokens=max_new_tokens, speculative=speculative))
    generation = result.generation
    plain_steps = max(0, len(generation.token_ids) - 1 - generation.tokens_from_verify)
    return decode_speed.sample_from_run(
        result, PeerSample, decoder_calls=generation.verify_calls + plain_steps, drafter_calls=generation.proposed_drafts
    )


class RuntimeRow:
    def __init__(self, spec: RowSpec, workload: Workload):
        from gemma_edge.runtime.engine import Engine

        huge_pages = True if spec.huge_pages is None else spec.huge_pages
        self.engine = Engine(spec.path, backend=spec.backend, threads=workload.runtime_threads, huge_pages=huge_pages)
        self.spec = spec
        self.workload = workload

    def decode(self) -> PeerSample:
        return runtime_decode(self.engine, self.workload.prompt, self.workload.max_new_tokens, self.spec.speculative)

    def prefill(self) -> tuple[float | None, int | None]:
        from gemma_edge.runtime.generate import GenerationConfig

        config = GenerationConfig(max_new_tokens=1, speculative=self.spec.speculative)
        stats = self.engine.run(self.workload.long_prompt, config).stats()
        return stats["prefill_tokens_per_second"], stats["prefill_tokens"]

    def close(self) -> None:
        pass


def litertlm_prefill(runner: Any, prompt: str) -> tuple[float | None, int | None]:
    """LiteRT-LM's own prefill counters for `prompt` (LiteRtLmRunner.generate returns decode's only)."""
    session = runner.engine.create_session(apply_prompt_template=False, max_output_tokens=1)
    try:
        session.run_prefill([prompt])
        info = session.get_benchmark_info()
    finally:
        session.close()
    return info.last_prefill_tokens_per_second, info.last_prefill_token_count


class LiteRtLmRow:
    def __init__(self, spec: RowSpec, workload: Workload):
        from litertlm_runner import LiteRtLmRunner

        self._cache = tempfile.TemporaryDirectory(prefix="peers-litertlm-")  # XNNPACK's packed weights
        self.runner = LiteRtLmRunner(spec.path, Path(self._cache.name), workload.threads, speculative=spec.speculative)
        self.workload = workload

    def decode(self) -> PeerSample:
        sample = decode_speed.litertlm_sample(self.runner, self.workload.prompt, self.workload.max_new_tokens)
        return PeerSample(**asdict(sample))

    def prefill(self) -> tuple[float | None, int | None]:
        return litertlm_prefill(self.runner, self.workload.long_prompt)

    def close(self) -> None:
        self.runner.close()
        self._cache.cleanup()


class OrtGenaiRow:
    def __init__(self, spec: RowSpec, workload: Workload):
        from ortgenai_runner import OrtGenaiRunner

        from gemma_edge.runtime.huge_pages import load_with_huge_pages

        def load() -> OrtGenaiRunner:
            return OrtGenaiRunner(spec.path, workload.threads)

        self.runner = load_with_huge_pages(load)[0] if spec.huge_pages else load()
        self.workload = workload

    def decode(self) -> PeerSample:
        run = self.runner.decode_rate(self.workload.prompt_ids, self.workload.max_new_tokens)
        return PeerSample(
            tokens_per_second=run["tokens_per_second"],
            new_tokens=run["new_tokens"],
            token_ids=run["token_ids"],
            decoder_calls=max(0, run["new_tokens"] - 1),
            drafter_calls=0,
        )

    def prefill(self) -> tuple[float | None, int | None]:
        ids = self.workload.long_prompt_ids
        seconds = self.runner.decode_rate(ids, 1)["prefill_seconds"]
        return (len(ids) / seconds if seconds > 0 else None), len(ids)

    def close(self) -> None:
        pass


class _PrefillClock(decode_speed._TokenClock):
    """decode_speed's streamer clock that also notes when the prompt is handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.prompt_at: float | None = None

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_at = time.perf_counter()
        super().put(value)


class TransformersRow:
    def __init__(self, spec: RowSpec, workload: Workload):
        decode_speed.quiet_libraries()
        import torch

        from gemma_edge.exporter.checkpoint.loading import load_target

        torch.set_num_threads(workload.threads)
        self.model = load_target(spec.path).model
        self.input_ids = torch.tensor([workload.prompt_ids], dtype=torch.long)
        self.long_ids = torch.tensor([workload.long_prompt_ids], dtype=torch.long)
        self.workload = workload

    def decode(self) -> PeerSample:
        sample = decode_speed.transformers_sample(self.model, self.input_ids, self.workload.max_new_tokens)
        return PeerSample(**asdict(sample), decoder_calls=max(0, sample.new_tokens - 1), drafter_calls=0)

    def prefill(self) -> tuple[float | None, int | None]:
        clock = _PrefillClock()
        decode_speed._hf_generate(self.model, self.long_ids, 1, streamer=clock)
        tokens = self.long_ids.shape[1]
        if clock.prompt_at is None or not clock.times:
            return None, tokens
        seconds = clock.times[0] - clock.prompt_at
        return (tokens / seconds if seconds > 0 else None), tokens

    def close(self) -> None:
        pass


ROW_ENGINES: dict[str, Callable[[RowSpec, Workload], RowEngine]] = {
    "runtime": RuntimeRow,
    "litert-lm": LiteRtLmRow,
    "ort-genai": OrtGenaiRow,
    "transformers": TransformersRow,
}


def memory_status() -> dict[str, float | None]:
    """This process's VmRSS and VmHWM (peak) in MiB; ru_maxrss stands in for VmHWM without /proc."""
    values: dict[str, float | None] = {"VmRSS": None, "VmHWM": None}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024  # kB
    except OSError:
        values["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return values


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine have spent not idle since boot (/proc/stat: user, nice,
    system, irq, softirq and steal, the time the hypervisor gave our vCPUs to others); None without /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def row_process(spec: RowSpec, workload: Workload, conn: Connection) -> None:
    """The body of one row's process: open the engine, then answer "sample" (a PeerSample) and
    "stop" (VmHWM). Replies are (kind, payload); kind "error" carries the traceback."""
    baseline = memory_status()["VmRSS"]
    try:
        engine = ROW_ENGINES[spec.engine](spec, workload)
    except BaseException:  # noqa: BLE001 - reported to the parent, which skips the row
        conn.send(("error", traceback.format_exc()))
        return
    from gemma_edge.runtime.huge_pages import anonymous_huge_bytes

    loaded = {"baseline_rss": baseline, "loaded_rss": memory_status()["VmRSS"], "huge_pages": anonymous_huge_bytes() / 2**20}
    conn.send(("ready", loaded))
    while True:
        command = conn.recv()
        if command == "stop":
            peak = memory_status()["VmHWM"]
            engine.close()
            conn.send(("stopped", peak))
            return
        try:
            busy, wall, cpu = machine_busy_seconds(), time.perf_counter(), time.process_time()
            sample = engine.decode()
            sample.wall_seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
            sample.cpu_per_wall = cpu / sample.wall_seconds
            if busy is not None:
                sample.other_cpu_seconds = max(0.0, (machine_busy_seconds() or busy) - busy - cpu)
            sample.prefill_tokens_per_second, sample.prefill_tokens = engine.prefill()
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))
            return
        conn.send(("sample", sample))


# ----------------------------------------------------------------------------- in the parent


class RowProcess:
    """The parent's handle on one row's process."""

    def __init__(self, context: Any, spec: RowSpec, workload: Workload):
        self.spec = spec
        self.conn, child = context.Pipe()
        self.process = context.Process(target=row_process, args=(spec, workload, child), name=f"peers-{spec.name}", daemon=True)
        self.process.start()
        child.close()
        self.memory: RowMemory | None = None

    def _reply(self, expected: str) -> Any:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while not self.conn.poll(1.0):
            if not self.process.is_alive():
                raise RuntimeError(f"{self.spec.name}: its process exited with code {self.process.exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.spec.name}: no reply in {REPLY_TIMEOUT_S:.0f} s")
        kind, payload = self.conn.recv()
        if kind != expected:
            raise RuntimeError(f"{self.spec.name} failed:\n{payload}")
        return payload

    def wait_ready(self) -> None:
        self.memory = RowMemory(**self._reply("ready"))

    def sample(self) -> PeerSample:
        self.conn.send("sample")
        sample: PeerSample = self._reply("sample")
        return sample

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send("stop")
                peak = self._reply("stopped")
                if self.memory is not None:
                    self.memory.peak_rss = peak
            except (OSError, EOFError, RuntimeError) as error:
                print(f"warning: {self.spec.name} did not stop cleanly: {error!r}", file=sys.stderr)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


def start_rows(specs: list[RowSpec], workload: Workload, absent: dict[str, str]) -> dict[str, RowProcess]:
    """One process per row, started one after the other (no two load at once). A row whose
    engine fails to open is dropped, its error kept in `absent`."""
    context = multiprocessing.get_context("spawn")
    started: dict[str, RowProcess] = {}
    for spec in specs:
        print(f"  opening {spec.name}...", file=sys.stderr, flush=True)
        row = RowProcess(context, spec, workload)
        try:
            row.wait_ready()
        except RuntimeError as error:
            absent[spec.name] = f"failed to open: {str(error).strip().splitlines()[-1]}"
            print(f"warning: {error}", file=sys.stderr)
            row.stop()
            continue
        started[spec.name] = row
    return started


def measure_rows(rows: dict[str, RowProcess], repeats: int) -> dict[str, Summary]:
    """decode_speed.measure over the row processes: one warm-up each, then round-robin rounds."""
    return decode_speed.measure({name: row.sample for name, row in rows.items()}, repeats)
