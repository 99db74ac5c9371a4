"""The FP32 PyTorch reference engine (the training stack's side of the engine contract in docs/CONTRACTS.md).

``TorchEngine`` maps uint8 ``(N, H, W, 3)`` RGB batches to float32 ``(N, D)`` L2-normalised embeddings with the same
preprocessing and L2 tail as the exported graph; the deployable engines live in ``device.engines``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from edge_encoder.core.contract import InputSpec, Preprocess, as_preprocess
from edge_encoder.device.engines import EngineBase


class TorchEngine(EngineBase):
    """FP32 PyTorch reference: the same preprocessing and L2 tail as the exported graph, in eager mode.

    Args:
        backbone: float ``(N, 3, H, W)`` normalised -> ``(N, D)`` features.
        preprocess: the encoder's ``core.contract.Preprocess`` (input side, mean and std on the 0..1 scale); its
            stored dict form ``{"image_size", "mean", "std"}`` is accepted too.
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, backbone: Any, preprocess: Preprocess | Mapping[str, Any], *, name: str = "pytorch_fp32",
                 device: str = "cpu") -> None:
        import torch

        pre = as_preprocess(preprocess)
        self.name = name
        self.source_path = None
        self.input_spec = InputSpec(height=pre.image_size, width=pre.image_size)
        self._device = torch.device(device)
        self._model = backbone.to(self._device).eval()
        self._mean = torch.tensor(pre.mean, device=self._device).view(1, 3, 1, 1)
        self._std = torch.tensor(pre.std, device=self._device).view(1, 3, 1, 1)
        # No model file to hash: the weights and the preprocessing determine the output, so they key caches.
        self.cache_token = f"{type(self).__name__}:" + _weights_digest(self._model, pre)

    def _run(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(images).to(self._device).permute(0, 3, 1, 2).float() / 255.0  # N x 3 x H x W
            feats = self._model((x - self._mean) / self._std)  # N x D
            return torch.nn.functional.normalize(feats.float(), dim=1).cpu().numpy()


def _weights_digest(model: Any, pre: Preprocess) -> str:
    """SHA-256 over the preprocessing and every parameter/buffer (name, shape, dtype, bytes) of ``model``."""
    import hashlib

    import torch

    digest = hashlib.sha256(repr((pre.image_size, tuple(pre.mean), tuple(pre.std))).encode())
    for key, tensor in model.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()

