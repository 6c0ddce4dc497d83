"""The reference-model training code on a few steps: corpus, tokenizer, target, drafter, re-alignment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, invoke

from gemma_edge.exporter.training.batches import tokenize_texts
from gemma_edge.exporter.training.corpus import load_corpus
from gemma_edge.exporter.training.drafter_distill import DrafterChain, DrafterTraining, chained_agreement, train_drafter
from gemma_edge.exporter.training.reference_model import TINY, new_models, save_reference_model, tokenizer_corpus
from gemma_edge.exporter.training.target_lm import CausalLM, TargetTraining, perplexity, train_target
from gemma_edge.exporter.training.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tiny_tokens() -> np.ndarray:
    texts = tokenizer_corpus()
    return tokenize_texts(train_tokenizer(texts, TINY.vocab_size), texts)


def test_corpus_is_deterministic_and_split_by_path() -> None:
    first, second = load_corpus(max_files=80), load_corpus(max_files=80)
    assert first.describe() == second.describe()
    assert [f.path for f in first.files] == sorted(f.path for f in first.files)
    assert not any("/test/" in f"/{f.path}" for f in first.files)
    heldout = {f.path for f in first.split(True)}
    # A file's split depends on its own path only: a larger corpus keeps the same decisions.
    larger = {f.path for f in load_corpus(max_files=160).split(True)}
    assert heldout <= larger


def test_tokenizer_is_deterministic_with_special_tokens_first() -> None:
    texts = tokenizer_corpus()
    first, second = train_tokenizer(texts, 600), train_tokenizer(texts, 600)
    assert first.to_str() == second.to_str()
    assert first.token_to_id("<pad>") == 0 and first.token_to_id("<bos>") == 2
    assert first.token_to_id("<image_soft_token>") == 6 and first.get_vocab_size() == 600
    assert first.encode("def f():").ids[0] == 2  # <bos> is added


@pytest.fixture(scope="module")
def briefly_trained_target(tiny_tokens: np.ndarray) -> tuple[CausalLM, list[float], float, float]:
    """The tiny target after 30 steps: a random target's argmax is noise no drafter can learn."""
    target, _ = new_models(TINY)
    lm = CausalLM(target)
    before = perplexity(lm, tiny_tokens, length=64, max_windows=8)
    losses = train_target(lm, tiny_tokens, TargetTraining(steps=30, batch=8, length=64, peak_lr=5e-3, warmup=5))
    return lm, losses, before, perplexity(lm, tiny_tokens, length=64, max_windows=8)


def test_target_loss_goes_down_in_a_few_steps(briefly_trained_target: tuple) -> None:
    _, losses, before, after = briefly_trained_target
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    assert after < before * 0.7


def test_drafter_distillation_raises_agreement(briefly_trained_target: tuple, tiny_tokens: np.ndarray) -> None:
    lm = briefly_trained_target[0]
    _, drafter = new_models(TINY)
    chain = DrafterChain(drafter, lm)
    before = chained_agreement(chain, tiny_tokens, steps=3, length=64, max_windows=8)
    losses = train_drafter(chain, tiny_tokens, DrafterTraining(steps=40, batch=8, length=64, chain=3, warmup=5))
    after = chained_agreement(chain, tiny_tokens, steps=3, length=64, max_windows=8)
    assert losses[-1] < losses[0]
    assert after[0] > before[0] + 0.1
    assert after == sorted(after, reverse=True)  # "first j all match" can only shrink with j


def test_realign_command_raises_acceptance(briefly_trained_target: tuple, tmp_path: Path) -> None:
    """A target that moved away from its drafter (here: trained after the drafter was made)."""
    from gemma_edge.exporter.checkpoint.loading import load_drafter, load_target

    lm = briefly_trained_target[0]
    _, drafter = new_models(TINY, seed=5)
    save_reference_model(tmp_path / "ckpt", lm.model, drafter, train_tokenizer(tokenizer_corpus(), TINY.vocab_size), TINY)
    text = tmp_path / "text.py"
    text.write_text("\n".join(tokenizer_corpus()))
    out = tmp_path / "realigned"
    result = invoke(
        "realign-drafter", str(tmp_path / "ckpt" / "target"), str(tmp_path / "ckpt" / "drafter"),
        "--text", str(text), "--out", str(out), "--steps", "40", "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["agreement_after"][0] > report["agreement_before"][0] + 0.1
    assert "expected tokens per verify step at K=4" in result.stdout
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    load_drafter(out, load_target(tmp_path / "ckpt" / "target"))  # a valid drafter for that target


def test_realign_refuses_too_little_text(tiny_checkpoints: Path, tmp_path: Path) -> None:
    text = tmp_path / "short.txt"
    text.write_text("x = 1\n")
    result = invoke(
        "realign-drafter", str(tiny_checkpoints / "target"), str(tiny_checkpoints / "drafter"), "--text", str(text), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "at least", "--text")


def test_build_is_deterministic(tmp_path: Path) -> None:
    """The one-command rebuild, on a tiny shape and a corpus slice, twice: identical bytes."""
    from gemma_edge.exporter.training.build import build

    digests = []
    for run in ("a", "b"):
        report = build(
            tmp_path / run,
            TargetTraining(steps=3, batch=2, length=32),
            DrafterTraining(steps=2, batch=2, length=32, chain=2),
            shape=TINY,
            max_files=120,
        )
        assert report["corpus"]["heldout_files"] and np.isfinite(report["heldout_perplexity"])
        digests.append(
            [hashlib.sha256((tmp_path / run / part / name).read_bytes()).hexdigest()
             for part in ("target", "drafter") for name in ("model.safetensors", "tokenizer.json", "config.json")]
        )  # fmt: skip
    assert digests[0] == digests[1]
