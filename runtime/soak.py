"""A soak loop: many generations in one process through the library API (Engine), watching the
process's resident memory and open file descriptors for leaks.

One loop, two callers: benchmarks/soak.py (1,000 generations on an exported artifact folder,
a table and JSON) and tests/test_soak.py (a short run on the tiny test export, with limits).
The generations cycle through prompt lengths, speculation on and off, greedy and seeded
sampling, and the backends given; every `media_every`-th one also carries an image and a clip,
so the vision and audio embedders' sessions are exercised between text-only runs.

Memory and descriptors are read from /proc (Linux): the runtime must not need psutil.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gemma_edge.artifact.manifest import GraphRole

from .engine import Engine, MediaFiles
from .generate import GenerationConfig
from .sampling import SamplingConfig

WARMUP = 20  # generations before the baseline: allocators and session caches settle first
REPORT_EVERY = 50

# Short, medium and long prompts, so the prefill runs at different lengths (and, on LiteRT,
# through different static prefill signatures).
PROMPTS = (
    "def fibonacci(n):",
    "The quick brown fox jumps over the lazy dog. Then it runs into the forest, where",
    " ".join(
        [
            "In the beginning the universe was created. This has made a lot of people very angry",
            "and been widely regarded as a bad move. Many were increasingly of the opinion that",
            "they had all made a big mistake in coming down from the trees in the first place.",
        ]
        * 4
    ),
)
MEDIA_PROMPT = "Describe <image> and <audio> in one sentence."


@dataclass(frozen=True)
class SoakPlan:
    generations: int = 1000
    max_new_tokens: int = 24
    # Every n-th generation carries an image and a clip (0: never); small enough that each
    # backend embeds media within warm-up, whose first allocations are warm-up, not growth.
    media_every: int = 10
    warmup: int = WARMUP
    report_every: int = REPORT_EVERY


@dataclass(frozen=True)
class Sample:
    """The process after generation `index` (1-based)."""

    index: int
    rss_bytes: int
    open_fds: int
    seconds: float  # since the loop started


@dataclass
class SoakResult:
    plan: SoakPlan
    backends: list[str]
    samples: list[Sample] = field(default_factory=list)  # one per generation
    tokens: int = 0
    media_generations: int = 0
    media_by_backend: dict[str, int] = field(default_factory=dict)
    speculative_generations: int = 0

    def at(self, index: int) -> Sample:
        return self.samples[index - 1]

    @property
    def baseline(self) -> Sample:
        """The process right after warm-up: what later generations are compared against."""
        return self.at(min(self.plan.warmup, len(self.samples)))

    @property
    def final_rss_bytes(self) -> float:
        """The median RSS of the last `warmup` generations (one generation's peak is no trend)."""
        tail = self.samples[-min(self.plan.warmup, len(self.samples)) :]
        return statistics.median(sample.rss_bytes for sample in tail)

    @property
    def rss_growth(self) -> float:
        """Growth of the final RSS over the baseline, as a fraction of the baseline."""
        return self.final_rss_bytes / self.baseline.rss_bytes - 1.0

    @property
    def final_fds(self) -> int:
        return self.samples[-1].open_fds

    @property
    def max_fds(self) -> int:
        return max(sample.open_fds for sample in self.samples)

    def reported(self) -> list[Sample]:
        """The baseline and every `report_every`-th generation, and the last one."""
        indices = {self.baseline.index, len(self.samples), *range(self.plan.report_every, len(self.samples) + 1, self.plan.report_every)}
        return [self.at(index) for index in sorted(indices)]

    def to_json(self) -> dict:
        return {
            "plan": asdict(self.plan),
            "backends": self.backends,
            "tokens": self.tokens,
            "media_generations": self.media_generations,
            "media_by_backend": self.media_by_backend,
            "speculative_generations": self.speculative_generations,
            "baseline": asdict(self.baseline),
            "final_rss_bytes": self.final_rss_bytes,
            "rss_growth": self.rss_growth,
            "final_fds": self.final_fds,
            "max_fds": self.max_fds,
            "reported": [asdict(sample) for sample in self.reported()],
            "samples": [asdict(sample) for sample in self.samples],
        }


def rss_bytes() -> int:
    """Resident set size now (not the peak: a leak shows as a rising curve, a peak hides it)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def generation_config(index: int, plan: SoakPlan, has_drafter: bool) -> GenerationConfig:
    """Generation `index` (0-based): speculation on every other pair, seeded sampling every
    third, so each backend sees every combination within a few generations."""
    sampling = SamplingConfig(temperature=0.8, top_k=40, top_p=0.95) if index % 3 == 2 else SamplingConfig()
    return GenerationConfig(
        max_new_tokens=plan.max_new_tokens,
        sampling=sampling,
        seed=index,
        speculative=has_drafter and (index // 2) % 2 == 0,
    )


def soak(
    engines: Mapping[str, Engine],
    plan: SoakPlan,
    media: MediaFiles | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> SoakResult:
    """Run `plan.generations` generations round-robin over `engines` (backend -> Engine),
    sampling RSS and descriptors after each. `media` (an image and a clip) goes with every
    `media_every`-th generation on engines whose artifacts have both embedders."""
    backends: Sequence[str] = list(engines)
    result = SoakResult(plan=plan, backends=list(backends))
    started = time.perf_counter()
    for index in range(plan.generations):
        media_turn = media is not None and plan.media_every > 0 and (index + 1) % plan.media_every == 0
        # Media turns take the backends in turn by their own count: by the generation's index,
        # an even `media_every` would send every image to the same backend.
        backend = backends[(result.media_generations if media_turn else index) % len(backends)]
        engine = engines[backend]
        config = generation_config(index, plan, engine.model.has_drafter)
        if media is not None and media_turn and _has_media(engine):
            run = engine.run(MEDIA_PROMPT, config, media=media)
            result.media_generations += 1
            result.media_by_backend[backend] = result.media_by_backend.get(backend, 0) + 1
        else:
            run = engine.run(PROMPTS[(index // len(backends)) % len(PROMPTS)], config)
        result.tokens += len(run.generation.token_ids)
        result.speculative_generations += int(run.generation.speculative)
        if index + 1 in (plan.warmup, plan.generations):
            # The two samples the verdict compares: garbage of earlier code (another test's
            # engine) closing its files in between would read as descriptors freed, or hide a leak.
            gc.collect()
        sample = Sample(index + 1, rss_bytes(), open_fds(), time.perf_counter() - started)
        result.samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
    return result


def _has_media(engine: Engine) -> bool:
    names = engine.model.graph_names
    return GraphRole.VISION_EMBEDDER in names and GraphRole.AUDIO_EMBEDDER in names


def media_files(image: Path, audio: Path) -> MediaFiles:
    """The smallest image budget: the soak is about leaks, not about image detail."""
    return MediaFiles(images=(image,), audio=(audio,), image_tokens=70)
