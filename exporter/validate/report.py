"""validate's report: running totals per graph over the cases (`Comparison`), the per-graph
verdict against the thresholds (`GraphReport`), and the whole report (`ValidationReport`), whose
`to_json()` is the `--json` document. The generation, quality and fidelity blocks are the records
of the checks that produce them (generation.py, quality.py, fidelity.py).

A graph output whose shape differs from the reference's does not stop validate: the comparison
collects it (case, both shapes), and the graph fails with every such error in its record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from gemma_edge.artifact.manifest import Manifest

from .fidelity import FidelityReport
from .generation import GenerationReport
from .quality import QualityReport, Thresholds, kl_per_position


@dataclass
class GraphReport:
    format: str
    precision: str
    max_abs_diff: float = 0.0
    top1_agreement: float | None = None
    kl_mean: float | None = None
    passed: bool = False
    positions: int = 0
    cases: list[str] = field(default_factory=list)
    relative_error: float | None = None  # embeddings: max |diff| / max |reference|
    signatures_checked: list[str] | None = None  # TFLite only
    signatures_missed: list[str] | None = None
    shape_errors: list[str] = field(default_factory=list)  # "case C: graph output shape ... != reference ..."

    def to_json(self) -> dict:
        """Every field; `shape_errors` only when there are some."""
        document = asdict(self)
        if not self.shape_errors:
            del document["shape_errors"]
        return document


@dataclass
class Comparison:
    """Running totals for one graph over all its cases."""

    max_abs_diff: float = 0.0
    agree: int = 0
    kl_sum: float = 0.0
    positions: int = 0
    is_logits: bool = False
    cases: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)  # TFLite signatures that ran
    reference_max: float = 0.0  # largest |reference| value: scales the embeddings' error
    shape_errors: list[str] = field(default_factory=list)  # one per add() whose shapes differed

    def add(self, case: str, ours: np.ndarray, reference: np.ndarray, logits: bool, scored: np.ndarray | None = None) -> None:
        """scored [positions] bool (logits only): the positions that count for top-1 and KL;
        max |diff| always covers all of them. Differing shapes are collected, not compared."""
        if ours.shape != reference.shape:
            self.is_logits = self.is_logits or logits
            self.shape_errors.append(f"case {case}: graph output shape {ours.shape} != reference {reference.shape}")
            return
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(ours - reference).max()))
        self.reference_max = max(self.reference_max, float(np.abs(reference).max()))
        if case not in self.cases:
            self.cases.append(case)
        if logits:
            self.is_logits = True
            ours2, ref2 = ours.reshape(-1, ours.shape[-1]), reference.reshape(-1, reference.shape[-1])
            if scored is not None:
                ours2, ref2 = ours2[scored], ref2[scored]
            self.agree += int((ours2.argmax(-1) == ref2.argmax(-1)).sum())
            self.kl_sum += float(kl_per_position(ref2, ours2).sum())
            self.positions += ours2.shape[0]

    def report(self, manifest: Manifest, name: str, thresholds: Thresholds) -> GraphReport:
        spec = manifest.graphs[name]
        report = GraphReport(
            format=spec.format,
            precision=spec.precision,
            max_abs_diff=self.max_abs_diff,
            cases=self.cases,
            shape_errors=list(self.shape_errors),
        )
        if self.is_logits and not self.positions:  # logits, but no output of the right shape
            report.passed = False
        elif self.is_logits:
            report.top1_agreement = self.agree / self.positions
            report.kl_mean = self.kl_sum / self.positions
            report.positions = self.positions
            report.passed = (
                (thresholds.logits_max_abs_diff is None or self.max_abs_diff <= thresholds.logits_max_abs_diff)
                and report.top1_agreement >= thresholds.top1_agreement
                and (thresholds.kl_mean is None or report.kl_mean <= thresholds.kl_mean)
            )
        else:
            report.relative_error = self.max_abs_diff / self.reference_max if self.reference_max else 0.0
            report.passed = report.relative_error <= thresholds.embeddings_relative_error
        if spec.signatures:
            ran = set(self.signatures)
            report.signatures_checked = [sig.name for sig in spec.signatures if sig.name in ran]
            report.signatures_missed = [sig.name for sig in spec.signatures if sig.name not in ran]
            report.passed = report.passed and not report.signatures_missed
        report.passed = report.passed and not report.shape_errors
        return report


@dataclass(frozen=True)
class ValidationReport:
    """Everything validate found (field meanings: the module docs of its parts)."""

    recipe: str
    graphs: dict[str, GraphReport]
    generation: GenerationReport
    quality: QualityReport
    fidelity: FidelityReport | None  # quantized ONNX only (fidelity.py)
    thresholds: Thresholds
    next_hidden_max_abs_diff: dict[str, float] = field(default_factory=dict)  # drafter graph -> its next hidden state's

    @property
    def passed(self) -> bool:
        """True only when every check passed."""
        return (
            all(report.passed for report in self.graphs.values())
            and self.generation.passed
            and self.quality.passed
            and (self.fidelity is None or self.fidelity.passed)
        )

    def to_json(self) -> dict:
        """The `--json` document."""
        return {
            "passed": self.passed,
            "recipe": self.recipe,
            "graphs": {name: report.to_json() for name, report in self.graphs.items()},
            "generation": self.generation.to_json(),
            "quality": self.quality.to_json(),
            "fidelity": None if self.fidelity is None else self.fidelity.to_json(),
            "thresholds": asdict(self.thresholds),
            **{f"{name}_next_hidden_max_abs_diff": diff for name, diff in self.next_hidden_max_abs_diff.items()},
        }
