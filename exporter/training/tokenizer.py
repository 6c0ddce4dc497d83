"""A byte-level BPE for the reference model, with Gemma 4's special tokens at fixed ids."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# Gemma 4's special tokens, in the order they get ids 0.. in the tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_image>",
    "<start_of_audio>",
    "<image_soft_token>",
    "<audio_soft_token>",
    "<end_of_image>",
    "<end_of_audio>",
    "<video_soft_token>",
)
TOKEN_ID = {token: index for index, token in enumerate(SPECIAL_TOKENS)}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Deterministic for the same texts in the same order (special tokens take ids 0..10)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", TOKEN_ID["<bos>"])]
    )
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} entries, expected {vocab_size}")
    return tokenizer
