"""The .litertlm bundle runs in Google's LiteRT-LM, and its native MTP speculation runs our drafter.

LiteRT-LM is driven in a subprocess: its native logs go straight to file descriptor 2, and the
drafter's acceptance line there is the proof that speculation really ran. Outputs are compared
by prefix: litert-lm 0.18.1 may emit up to K tokens past `max_output_tokens`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_edge.artifact.manifest import load_manifest
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.generate import GenerationConfig

PROMPT = "def fibonacci(n):"
NEW_TOKENS = 24
MIN_MATCHING_TOKENS = 16

_LITERT_LM_SCRIPT = """
import json, sys
import litert_lm
bundle, cache_dir, speculative, prompt, tokens = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], int(sys.argv[5])
litert_lm.set_min_log_severity(litert_lm.LogSeverity.INFO)
engine = litert_lm.Engine(bundle, backend=litert_lm.Backend.CPU(), cache_dir=cache_dir,
                          enable_speculative_decoding=speculative)
session = engine.create_session(apply_prompt_template=False, max_output_tokens=tokens)
session.run_prefill([prompt])
print(json.dumps({"text": session.run_decode().texts[0]}))
session.close()
engine.close()
"""


def _litert_lm(bundle: Path, cache_dir: Path, speculative: bool) -> tuple[str, str]:
    completed = subprocess.run(
        [sys.executable, "-c", _LITERT_LM_SCRIPT, str(bundle), str(cache_dir), "1" if speculative else "0", PROMPT, str(NEW_TOKENS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])["text"], completed.stderr


@pytest.fixture(scope="module")
def our_greedy(artifacts: Path) -> tuple[str, str]:
    """Our runtime's greedy text for PROMPT: (first MIN_MATCHING_TOKENS tokens, all NEW_TOKENS)."""
    engine = Engine(artifacts)
    result = engine.generate_ids(engine.encode(PROMPT), GenerationConfig(max_new_tokens=NEW_TOKENS, speculative=False))
    assert len(result.token_ids) == NEW_TOKENS
    decode = engine.tokenizer.decode
    return decode(result.token_ids[:MIN_MATCHING_TOKENS]), decode(result.token_ids)


def test_export_writes_a_bundle_listed_in_the_manifest(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    assert manifest.litertlm == "model.litertlm"
    assert manifest.litertlm in manifest.files


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "speculative"])
def test_litert_lm_greedy_output_equals_ours(artifacts: Path, tmp_path: Path, our_greedy: tuple[str, str], speculative: bool) -> None:
    text, log = _litert_lm(artifacts / "model.litertlm", tmp_path, speculative)
    first_tokens, all_tokens = our_greedy
    assert text.startswith(first_tokens), (text, first_tokens)
    assert text.startswith(all_tokens), (text, all_tokens)
    # LiteRT-LM reports its drafter's acceptance only when the MTP path ran.
    assert ("MTP Drafter - Success rate" in log) is speculative, log[-2000:]
    # Our runtime keeps hidden, checksum-named caches there (runtime/xnnpack_cache.py); LiteRT-LM
    # would write `<file>.xnnpack_cache` had it not been given a cache folder.
    written = [path for path in artifacts.glob("*xnnpack_cache") if not path.name.startswith(".")]
    assert not written, "LiteRT-LM wrote caches into the artifact folder"


def test_litert_lm_cli_runs_the_bundle(artifacts: Path, tmp_path: Path, our_greedy: tuple[str, str]) -> None:
    bundle = tmp_path / "model.litertlm"
    bundle.symlink_to(artifacts / "model.litertlm")  # its XNNPACK cache goes next to the model path
    cli = Path(sys.executable).with_name("litert-lm")
    completed = subprocess.run(
        [str(cli), "run", str(bundle), "--prompt", PROMPT, "--no-template", "--max-num-tokens", "64"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().startswith(our_greedy[0].strip()), completed.stdout[:500]
