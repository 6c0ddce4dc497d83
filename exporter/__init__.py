"""PyTorch side: load checkpoints, trace export-friendly modules, write ONNX and TFLite graphs."""

import logging

# torchao (a litert-torch dependency that transformers imports when present) logs every CUDA
# kernel library this CPU install cannot load, and torch warns about torchao's enum
# registrations. Neither concerns export: keep them off the user's terminal.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# Once litert-torch (absl) has configured logging, torch.onnx's notes that torchvision ops are not
# registered reach the terminal too; torchvision is not used.
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
