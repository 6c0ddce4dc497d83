"""Google's LiteRT-LM on our .litertlm bundle, timed by LiteRT-LM's own benchmark counters.

Used by decode_speed.py. LiteRT-LM reports decode tokens/s as its decode token count over its
decode time; its decode starts from the prompt's last token (its prefill emits no logits), so
it covers every new token, where the runtime's figure excludes the first one (produced by
prefill). litert-lm 0.18.1 may also emit up to K tokens past the budget; the new-token count
is reported so that shows.
"""

from __future__ import annotations

from pathlib import Path


class LiteRtLmRunner:
    def __init__(self, bundle: Path, cache_dir: Path, threads: int, speculative: bool):
        import litert_lm

        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
        self.engine = litert_lm.Engine(
            str(bundle),
            backend=litert_lm.Backend.CPU(thread_count=threads),
            cache_dir=str(cache_dir),
            enable_speculative_decoding=speculative,
            enable_benchmark=True,
        )

    def generate(self, prompt: str, max_new_tokens: int) -> tuple[str, float, int]:
        """Greedy (the bundle's sampler); returns (text, decode tokens/s, decoded token count)."""
        session = self.engine.create_session(apply_prompt_template=False, max_output_tokens=max_new_tokens)
        try:
            session.run_prefill([prompt])
            text = session.run_decode().texts[0]
            info = session.get_benchmark_info()
        finally:
            session.close()
        return text, info.last_decode_tokens_per_second, info.last_decode_token_count

    def close(self) -> None:
        self.engine.close()
