"""Read an artifact's tokenizer.json with the `tokenizers` library, refusing a broken one in one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gemma_edge.artifact.errors import GemmaEdgeError

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer in `path`, checked to encode and decode a probe text.

    `tokenizers` reports a bad file as a bare Exception with a multi-line message, and a
    panic in its Rust code as pyo3's PanicException, which derives from BaseException: both
    become one line. A file that parses but cannot encode (a model of the wrong structure)
    fails on the probe here rather than at the first prompt."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.decode(tokenizer.encode("Hello").ids)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - see the docstring: PanicException is a BaseException
        first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise GemmaEdgeError(
            f"{path} is not a tokenizer the `tokenizers` library can use ({first_line[:200]}); re-run `gemma-edge export`"
        ) from None
    return tokenizer
