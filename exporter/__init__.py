"""PyTorch side: load checkpoints, trace export-friendly modules, write ONNX and TFLite graphs."""

import logging

import torch  # noqa: F401 - torch resets its loggers on import: quiet them after it

# torchao (a litert-torch dependency that transformers imports when present) logs every CUDA
# kernel library this CPU install cannot load, torch warns about torchao's enum registrations,
# and torch.onnx notes that torchvision's ops are not registered (torchvision is not used).
# None of it concerns export: keep it off the user's terminal.
for _name in ("torchao", "torch.utils._pytree", "torch.onnx"):
    logging.getLogger(_name).setLevel(logging.ERROR)
