"""Keep what torch and its companions log about themselves off the user's terminal."""

from __future__ import annotations

import logging

# torchao (a litert-torch dependency that transformers imports when present) logs every CUDA
# kernel library this CPU install cannot load, torch warns about torchao's enum registrations,
# and torch.onnx notes that torchvision's ops are not registered (torchvision is not used).
# None of it concerns export.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx")


def quiet_export_logs() -> None:
    """Call before the exporter's work; idempotent. torch resets its loggers when it is first
    imported, so it is imported here first."""
    import torch  # noqa: F401

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
