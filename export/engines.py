"""Engines: context managers mapping uint8 ``(N, H, W, 3)`` RGB batches to float32 ``(N, D)`` L2-normalised
embeddings (the contract in docs/CONTRACTS.md). One class per backend; backends are imported lazily.

``TorchEngine`` is the FP32 reference; ``OnnxRuntimeEngine`` runs any bundle variant (CPU EP, CUDA/TensorRT
EPs when onnxruntime-gpu is installed); ``export.tensorrt.TensorRTEngine`` runs native TensorRT engines.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    """What ``embed`` accepts: ``dtype`` ``(N, height, width, channels)`` in ``layout``."""

    height: int
    width: int
    channels: int = 3
    dtype: str = "uint8"
    layout: str = "NHWC"

    def validate(self, images: Any) -> np.ndarray:
        """Return ``images`` as a C-contiguous array, or raise ``ValueError``/``TypeError`` naming the problem."""
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy.ndarray, got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, {self.height}, {self.width}, {self.channels}) "
                             f"({self.layout}), got shape {images.shape}")
        if images.shape[0] == 0:
            raise ValueError(f"empty batch: images has shape {images.shape}")
        if images.shape[3] != self.channels:
            raise ValueError(f"images must have {self.channels} channels (RGB, last axis), got shape {images.shape}")
        if images.shape[1:3] != (self.height, self.width):
            raise ValueError(f"images must be {self.height}x{self.width} (H x W), got shape {images.shape}")
        if images.dtype != np.dtype(self.dtype):
            raise ValueError(f"images must have dtype {self.dtype}, got dtype {images.dtype}")
        return np.ascontiguousarray(images)


class _Engine:
    """Shared context-manager plumbing; subclasses implement ``_open``, ``_close`` and ``_run``."""

    name: str
    input_spec: InputSpec
    source_path: Path | None

    def __enter__(self) -> "_Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend session (idempotent)."""

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` RGB -> float32 ``(N, D)``, rows L2-normalised."""
        batch = self.input_spec.validate(images)
        out = np.asarray(self._run(batch), dtype=np.float32)
        assert out.ndim == 2 and out.shape[0] == batch.shape[0], out.shape
        return out

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, source_path={self.source_path})"


class OnnxRuntimeEngine(_Engine):
    """ONNX Runtime engine over an encoder ONNX file (input ``images`` uint8 NHWC).

    Args:
        path: the ``.onnx`` file.
        name: engine name (default: ``onnx_<precision>`` from the model metadata, else the file stem).
        providers: ORT execution providers, best first; default CPU only (pass e.g.
            ``["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]`` with
            onnxruntime-gpu). Unavailable providers are dropped with a warning.
        intra_op_threads: ORT intra-op thread count (None: ORT default).
    """

    def __init__(self, path: Path | str, *, name: str | None = None, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.source_path = Path(path)
        if not self.source_path.is_file():
            raise ValueError(f"ONNX model file not found: {self.source_path}")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        available = ort.get_available_providers()
        wanted = list(providers or ["CPUExecutionProvider"])
        missing = [p for p in wanted if p not in available]
        if missing:
            logger.warning("ONNX Runtime providers %s not available here (have %s)", missing, available)
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(self.source_path), options, providers=chosen)
        meta = self._session.get_modelmeta().custom_metadata_map
        inp = self._session.get_inputs()[0]
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4:
            raise ValueError(f"{self.source_path}: input {inp.name!r} must be uint8 (N, H, W, 3), got {inp.type} {inp.shape}")
        self._input_name = inp.name
        self.input_spec = InputSpec(height=int(inp.shape[1]), width=int(inp.shape[2]), channels=int(inp.shape[3]))
        precision = meta.get("edge_encoder.precision")
        self.name = name or (f"onnx_{precision}" if precision else self.source_path.stem)
        self.providers = self._session.get_providers()

    def _run(self, images: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"engine {self.name!r} is closed")
        return self._session.run(None, {self._input_name: images})[0]

    def close(self) -> None:
        self._session = None


class TorchEngine(_Engine):
    """FP32 PyTorch reference: the same preprocessing and L2 tail as the exported graph, in eager mode.

    Args:
        backbone: float ``(N, 3, H, W)`` normalised -> ``(N, D)`` features.
        preprocess: ``{"image_size", "mean", "std"}`` (0..1 scale).
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, backbone: Any, preprocess: dict[str, Any], *, name: str = "pytorch_fp32",
                 device: str = "cpu") -> None:
        import torch

        from export.onnx_export import Preprocess

        pre = Preprocess.from_dict(preprocess)
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


def _weights_digest(model: Any, pre: Any) -> str:
    """SHA-256 over the preprocessing and every parameter/buffer (name, shape, dtype, bytes) of ``model``."""
    import hashlib

    import torch

    digest = hashlib.sha256(repr((pre.image_size, tuple(pre.mean), tuple(pre.std))).encode())
    for key, tensor in model.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def open_engine(bundle_dir: Path | str, variant: str, *, backend: str = "onnxruntime",
                providers: Sequence[str] | None = None, intra_op_threads: int | None = None) -> _Engine:
    """Open one variant of a deploy bundle, as listed in its ``manifest.json``.

    ``backend="onnxruntime"`` runs the ONNX file; ``"tensorrt"`` the engine built by ``export.tensorrt``.
    """
    bundle = Path(bundle_dir)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"no manifest.json in bundle directory {bundle}")
    manifest = json.loads(manifest_path.read_text())
    variants = manifest.get("variants", {})
    if variant not in variants:
        raise ValueError(f"variant {variant!r} is not in {manifest_path}; available: {sorted(variants)}")
    entry = variants[variant]
    if backend == "onnxruntime":
        return OnnxRuntimeEngine(bundle / entry["file"], name=entry.get("engine_name"), providers=providers,
                                 intra_op_threads=intra_op_threads)
    if backend == "tensorrt":
        from export.tensorrt import TensorRTEngine

        return TensorRTEngine(bundle / "tensorrt" / f"encoder_{variant}.plan", name=f"trt_{variant}")
    raise ValueError(f"backend must be 'onnxruntime' or 'tensorrt', got {backend!r}")
