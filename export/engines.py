"""Engines: context managers mapping uint8 ``(N, H, W, 3)`` RGB batches to float32 ``(N, D)`` L2-normalised
embeddings (the contract in docs/CONTRACTS.md). One class per backend; backends are imported lazily.

``TorchEngine`` is the FP32 reference; ``OnnxRuntimeEngine`` runs any bundle variant (CPU EP, CUDA/TensorRT
EPs when onnxruntime-gpu is installed); ``export.tensorrt.TensorRTEngine`` runs native TensorRT engines.

Models exported with ``input_layout="float_nchw"`` take normalised float32 ``(N, 3, H, W)``; their engines
still take uint8 NHWC in ``embed`` and apply the recorded mean/std themselves (``normalize_images``), so
every engine keeps the same contract.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edge_encoder.core.contract import InputSpec, normalize_images  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)


def _parse_floats(value: Any, what: str, source: Any) -> tuple[float, float, float]:
    values = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    if len(values) != 3:
        raise ValueError(f"{source}: {what} must have 3 values (RGB), got {value!r}")
    return values[0], values[1], values[2]


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
    """ONNX Runtime engine over an encoder ONNX file (input ``images`` uint8 NHWC, or float32 NCHW normalised).

    ``embed`` always takes uint8 NHWC; for a float-NCHW model (``input_layout="float_nchw"`` export) the
    engine applies ``((x / 255) - mean) / std`` itself before calling the session.

    Args:
        path: the ``.onnx`` file.
        name: engine name (default: ``onnx_<precision>`` from the model metadata, else the file stem).
        providers: ORT execution providers, best first; default CPU only (pass e.g.
            ``["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]`` with
            onnxruntime-gpu). Unavailable providers are dropped with a warning.
        intra_op_threads: ORT intra-op thread count (None: ORT default).
        preprocess: ``{"mean", "std"}`` (e.g. the manifest's ``preprocessing``) for a float-NCHW model;
            default: the mean/std in the model's metadata. Ignored for uint8 models.
    """

    def __init__(self, path: Path | str, *, name: str | None = None, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, preprocess: dict[str, Any] | None = None) -> None:
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
        self._input_name = inp.name
        self._normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        if inp.type == "tensor(uint8)" and len(inp.shape) == 4:
            self.input_layout = "uint8_nhwc"
            self.input_spec = InputSpec(height=int(inp.shape[1]), width=int(inp.shape[2]), channels=int(inp.shape[3]))
        elif inp.type == "tensor(float)" and len(inp.shape) == 4 and inp.shape[1] == 3 \
                and all(isinstance(d, int) for d in inp.shape[2:]):
            self.input_layout = "float_nchw"
            if meta.get("edge_encoder.normalization_in_graph") == "true":
                raise ValueError(f"{self.source_path}: float input but metadata says normalization is in the graph")
            source = preprocess if preprocess is not None else {
                k: meta[f"edge_encoder.{k}"] for k in ("mean", "std") if f"edge_encoder.{k}" in meta}
            missing = [k for k in ("mean", "std") if k not in source]
            if missing:
                raise ValueError(f"{self.source_path}: float NCHW model needs the normalisation {missing}; it is not "
                                 f"in the model metadata, pass preprocess={{'mean': ..., 'std': ...}}")
            mean = _parse_floats(source["mean"], "mean", self.source_path)
            std = _parse_floats(source["std"], "std", self.source_path)
            if min(std) <= 0:
                raise ValueError(f"{self.source_path}: std must be > 0, got {std}")
            self._normalize = (mean, std)
            self.input_spec = InputSpec(height=int(inp.shape[2]), width=int(inp.shape[3]))
        else:
            raise ValueError(f"{self.source_path}: input {inp.name!r} must be uint8 (N, H, W, 3) or float32 "
                             f"(N, 3, H, W), got {inp.type} {inp.shape}")
        precision = meta.get("edge_encoder.precision")
        self.name = name or (f"onnx_{precision}" if precision else self.source_path.stem)
        self.providers = self._session.get_providers()

    def _run(self, images: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"engine {self.name!r} is closed")
        if self._normalize is not None:
            images = normalize_images(images, *self._normalize)
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
        from edge_encoder.export.onnx_export import Preprocess

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
        pre = manifest.get("preprocessing") or {}
        return OnnxRuntimeEngine(bundle / entry["file"], name=entry.get("engine_name"), providers=providers,
                                 intra_op_threads=intra_op_threads,
                                 preprocess=pre if not pre.get("in_graph", True) and "mean" in pre else None)
    if backend == "tensorrt":
        from edge_encoder.export.tensorrt import TensorRTEngine

        return TensorRTEngine(bundle / "tensorrt" / f"encoder_{variant}.plan", name=f"trt_{variant}")
    raise ValueError(f"backend must be 'onnxruntime' or 'tensorrt', got {backend!r}")
