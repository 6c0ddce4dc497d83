"""How many threads each graph runs on, when the user does not say (`run --threads`).

A decode step of a small model is hundreds of ops of a few microseconds each, and handing half
of each to a second thread costs more than it saves; a prefill's ops are hundreds of rows wide
and split well. On 2 vCPUs the built-in model (hidden 256) decodes faster on one thread and
prefills faster on two, on both backends, while a ~165M model (hidden 1024) needs every core
for both (benchmarks/README.md, "Figures behind code comments", "Threads").

So a small model gets a split plan: its per-token calls (decode and verify steps, the drafter,
the token embedder) on one thread, and its prefill-sized work (decoder calls of WIDE_ROWS rows
or more, the image and audio embedders) on every core, which the backends run on a second
instance of the decoder graph (backend.py). A larger model, or an explicit thread count, runs
everything on the same threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gemma_edge.artifact.manifest import GraphRole, Manifest

SINGLE_THREAD_BELOW_HIDDEN = 512  # between the sizes measured: hidden 256 (1 thread wins) and 1024 (loses)
WIDE_ROWS = 8  # a decoder call of this many rows or more is prefill-sized (the smallest prefill signature)
WIDE_ROLES = frozenset({GraphRole.VISION_EMBEDDER, GraphRole.AUDIO_EMBEDDER})  # graphs that only ever prefill


def available_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def default_threads(manifest: Manifest | None = None) -> int:
    """Threads of the per-token calls: one for a small model, else every core this process may use."""
    if manifest is not None and manifest.model.hidden_size < SINGLE_THREAD_BELOW_HIDDEN:
        return 1
    return available_cores()


@dataclass(frozen=True)
class ThreadPlan:
    per_token: int  # decode and verify steps, the drafter, the token embedder
    prefill: int  # decoder calls of WIDE_ROWS rows or more, the image and audio embedders

    @property
    def split(self) -> bool:
        """Whether prefill-sized decoder calls need an instance of their own."""
        return self.prefill != self.per_token

    def for_role(self, role: GraphRole) -> int:
        """Threads of the (first) instance of a graph of this role."""
        return self.prefill if role in WIDE_ROLES else self.per_token


def thread_plan(manifest: Manifest, threads: int | None = None) -> ThreadPlan:
    if threads:
        return ThreadPlan(threads, threads)
    return ThreadPlan(per_token=default_threads(manifest), prefill=available_cores())
