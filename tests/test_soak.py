"""A short soak (the loop of benchmarks/soak.py): 100 generations in one process on both
backends of the tiny export, with and without speculation, some with an image and a clip;
resident memory must level off after warm-up and no file descriptor may be left open."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_edge.artifact.backends import BACKENDS
from gemma_edge.exporter.validate.media_samples import write_sample_audio, write_sample_image
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.soak import SoakPlan, SoakResult, media_files, soak

MAX_RSS_GROWTH = 0.05


@pytest.fixture(scope="module")
def soaked(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> SoakResult:
    folder = tmp_path_factory.mktemp("soak-media")
    media = media_files(write_sample_image(folder / "sample.png"), write_sample_audio(folder / "sample.wav"))
    engines = {backend: Engine(artifacts, backend=backend) for backend in BACKENDS}
    # Media every 10th generation (the default): both backends embed an image and a clip within
    # warm-up, so the embedders' first allocations count as warm-up, not as growth.
    return soak(engines, SoakPlan(generations=100, max_new_tokens=16, media_every=10, warmup=20), media)


def test_soak_covers_both_backends_speculation_and_media(soaked: SoakResult) -> None:
    assert soaked.backends == list(BACKENDS)
    assert len(soaked.samples) == 100
    assert 0 < soaked.speculative_generations < 100  # speculation both on and off
    assert soaked.media_by_backend == {backend: 5 for backend in BACKENDS}
    assert soaked.tokens > 0


def test_resident_memory_levels_off_after_warm_up(soaked: SoakResult) -> None:
    growth = soaked.rss_growth
    assert growth < MAX_RSS_GROWTH, (
        f"RSS grew {growth:.1%} from generation {soaked.baseline.index} ({soaked.baseline.rss_bytes / 2**20:.1f} MiB) "
        f"to the median of the last 20 ({soaked.final_rss_bytes / 2**20:.1f} MiB)"
    )


def test_no_file_descriptor_is_left_open(soaked: SoakResult) -> None:
    assert soaked.final_fds == soaked.baseline.open_fds, [sample.open_fds for sample in soaked.samples]
