"""Engines: context managers mapping uint8 ``(N, H, W, 3)`` RGB batches to float32 ``(N, D)`` L2-normalised
embeddings (the contract in docs/CONTRACTS.md). One class per backend; backends are imported lazily.

``OnnxRuntimeEngine`` runs any bundle variant (CPU EP, CUDA/TensorRT EPs when onnxruntime-gpu is installed);
``device.tensorrt.TensorRTEngine`` runs native TensorRT engines; the FP32 PyTorch reference,
``export.engines.TorchEngine``, lives with the training stack. A bundle's variants are opened through
``device.bundle_files.open_engine``, which checks each file against the manifest.

Models exported with ``input_layout="float_nchw"`` take normalised float32 ``(N, 3, H, W)``; their engines
still take uint8 NHWC in ``embed`` and apply the recorded mean/std themselves (``normalize_images``), so
every engine keeps the same contract. A foreign float32 ``(N, H, W, 3)`` graph (``float_nhwc``, as Keras and
TensorFlow export) is fed the same normalised values, channels last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from edge_encoder.core.contract import InputSpec, normalize_images  # noqa: F401 - re-exported
from edge_encoder.core.contract import Preprocess, normalization_of

logger = logging.getLogger(__name__)


def _parse_floats(value: Any, what: str, source: Any) -> tuple[float, float, float]:
    values = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    if len(values) != 3:
        raise ValueError(f"{source}: {what} must have 3 values (RGB), got {value!r}")
    return values[0], values[1], values[2]


def _open_session(path: Path, providers: Sequence[str] | None, intra_op_threads: int | None) -> Any:
    """An ONNX Runtime session on the first available of ``providers`` (default CPU); a file ONNX Runtime cannot
    load is a one-line ``ValueError`` naming it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = int(intra_op_threads)
    available = ort.get_available_providers()
    wanted = list(providers or ["CPUExecutionProvider"])
    missing = [p for p in wanted if p not in available]
    if missing:
        logger.warning("ONNX Runtime providers %s not available here (have %s)", missing, available)
    chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for a bad file
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: ONNX Runtime cannot load this model: {first_line}") from exc


def _input_size(path: Path, input_name: str, dims: Sequence[Any], image_size: int | None) -> tuple[int, int]:
    """``(H, W)`` of a model input from its static dims, or ``image_size`` where they are dynamic (str/None)."""
    static = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if image_size is not None and any(d is not None and d != image_size for d in static):
        raise ValueError(f"{path}: input {input_name!r} is {dims[0]}x{dims[1]} (H x W), not the image size "
                         f"{image_size} that was given")
    if None in static and image_size is None:
        raise ValueError(f"{path}: input {input_name!r} has dynamic height/width {list(dims)}; the image size must "
                         "be given (image_size=N; edge-encoder: --image-size N)")
    return static[0] or image_size, static[1] or image_size  # type: ignore[return-value]


def _float_normalization(path: Path, meta: dict[str, str], preprocess: Preprocess | Mapping[str, Any] | None
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` a float-NCHW model expects: ``preprocess``, else the model's edge_encoder metadata."""
    if meta.get("edge_encoder.normalization_in_graph") == "true":
        raise ValueError(f"{path}: float input but metadata says normalization is in the graph")
    if preprocess is not None:
        return normalization_of(preprocess, source=f"{path}: preprocess")
    # The ONNX metadata stores them as "r,g,b" strings (export.onnx_export.contract_metadata).
    source = {k: meta[f"edge_encoder.{k}"] for k in ("mean", "std") if f"edge_encoder.{k}" in meta}
    missing = [k for k in ("mean", "std") if k not in source]
    if missing:
        raise ValueError(f"{path}: a float-input model needs the normalisation {missing}; it is not in the model "
                         "metadata: pass preprocess={'mean': ..., 'std': ...} (edge-encoder: --mean R,G,B --std R,G,B "
                         "or --preset imagenet)")
    mean = _parse_floats(source["mean"], "mean", path)
    std = _parse_floats(source["std"], "std", path)
    if min(std) <= 0:
        raise ValueError(f"{path}: std must be > 0, got {std}")
    return mean, std


GRAPH_INPUT_LAYOUTS = ("uint8_nhwc", "float_nchw", "float_nhwc")
# A float graph's input element type -> what the normalised images are cast to (a model exported after .half()
# takes float16).
FLOAT_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _single_input(path: Path, inputs: Sequence[Any]) -> Any:
    """The graph's one input; an encoder graph with several (a mask, a second image) is refused naming them."""
    if len(inputs) != 1:
        names = ", ".join(f"{i.name!r} ({i.type} {i.shape})" for i in inputs) or "none"
        raise ValueError(f"{path}: the graph has {len(inputs)} inputs ({names}); an image encoder takes one, the "
                         "images")
    return inputs[0]


def _input_layout(path: Path, inp: Any, declared: str | None) -> str:
    """The layout of the graph's image input: uint8 ``(N, H, W, 3)`` is ``uint8_nhwc``; float32 ``(N, 3, H, W)``
    ``float_nchw``; float32 ``(N, H, W, 3)`` ``float_nhwc`` (Keras/TensorFlow exports). A float ``(N, 3, H, 3)`` is
    both: the declared one, else ``float_nchw``. A declared layout the graph does not have is refused."""
    shape = list(inp.shape) if inp.shape is not None else []
    found: list[str] = []
    if len(shape) == 4 and inp.type == "tensor(uint8)" and shape[3] == 3:
        found = ["uint8_nhwc"]
    elif len(shape) == 4 and inp.type in FLOAT_INPUT_TYPES:
        found = [layout for layout, axis in (("float_nchw", 1), ("float_nhwc", 3)) if shape[axis] == 3]
    if not found:
        raise ValueError(f"{path}: input {inp.name!r} must be uint8 (N, H, W, 3), or float32/float16 (N, 3, H, W) or "
                         f"(N, H, W, 3), got {inp.type} {inp.shape}")
    if declared is not None and declared not in found:
        raise ValueError(f"{path}: input {inp.name!r} is {found[0]} ({inp.type} {inp.shape}), not the declared "
                         f"{declared}")
    return declared or found[0]


def _chosen_output(path: Path, outputs: Sequence[Any], name: str | None, flatten: bool) -> Any:
    """The output named ``name``; else the first whose rank can be an embedding (``(N, D)``, or ``(N, C, H, W)``
    with ``flatten``: a ViT export's ``last_hidden_state`` ``(N, T, D)`` is passed over for its ``pooler_output``),
    the others named in the log; else the first (refused by ``_graph_batch``). An unknown name is refused."""
    names = [o.name for o in outputs]
    listed = ", ".join(f"{o.name!r} {o.shape}" for o in outputs)
    if name is not None:
        if name not in names:
            raise ValueError(f"{path}: no output {name!r}; the graph's outputs are {', '.join(map(repr, names))}")
        return outputs[names.index(name)]
    ranks = (2, 4) if flatten else (2,)
    usable = [o for o in outputs if o.shape is None or len(o.shape) in ranks] or list(outputs[:1])
    if len(outputs) > 1:
        logger.warning("%s: %d outputs (%s): %r is taken as the embedding (choose another with --output NAME)",
                       path, len(names), listed, usable[0].name)
    return usable[0]


def _contract_token(layout: str, normalize: tuple[tuple[float, ...], tuple[float, ...]] | None, output: str,
                    n_outputs: int, l2_normalize: bool) -> str:
    """What besides the model file decides the embeddings: the mean/std fed to a float graph, the output taken
    from several, the wrapper's L2 normalisation. ``evaluate.extract`` keys its embedding cache on it with the file's
    hash, so evaluating the same file again with another ``--preset`` or ``--output`` computes new embeddings
    instead of reading the old ones. Empty for a uint8 graph with one output, as the default bundle's (its keys are
    unchanged; a ``float_nchw`` bundle's entries are computed once more under the new key).
    """
    parts = []
    if normalize is not None:
        parts.append(f"{layout} mean={','.join(map(repr, normalize[0]))} std={','.join(map(repr, normalize[1]))}")
    if n_outputs > 1:
        parts.append(f"output={output}")
    if l2_normalize:
        parts.append("l2_normalize_output")
    return "; ".join(parts)


def _static_dim(dim: Any) -> int | None:
    """A graph dimension as an int when it is fixed (``>= 0``), ``None`` when symbolic/unknown."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 else None


# Output element types that cannot be an embedding (a numeric tensor of any width can).
_UNUSABLE_OUTPUT_TYPES = ("tensor(string)", "tensor(bool)")


def _graph_batch(path: Path, inp: Any, out: Any, out_shape: list[Any] | None,
                 flatten: bool) -> tuple[int | None, str]:
    """``(batch, why)``: the number of images each session call must hold (``None``: any), read from the graph.

    The batch is the input's static first dimension (``torch.onnx.export`` without ``dynamic_axes`` writes 1), else
    the output's fixed first dimension (an input left dynamic over a graph that reshapes to a fixed batch). An
    output that cannot be an embedding is refused here, naming the file and the shape: not a numeric tensor, a rank
    other than ``(N, D)`` (or ``(N, C, H, W)`` with ``flatten``), a zero-width feature axis, or a fixed first
    dimension other than the input's batch.
    """
    what = f"{path}: output {out.name!r} ({out.type} {out_shape})"
    if out.type in _UNUSABLE_OUTPUT_TYPES or not str(out.type).startswith("tensor("):
        raise ValueError(f"{what} is not a numeric tensor; an encoder output is float (N, D)")
    in_batch = _static_dim(inp.shape[0]) if inp.shape else None
    if in_batch == 0:
        raise ValueError(f"{path}: input {inp.name!r} has a static batch of 0 ({inp.type} {inp.shape}); an encoder "
                         "input holds at least one image")
    if not out_shape:  # rank unknown to ONNX Runtime: the first run is checked instead
        return in_batch, f"input {inp.name!r} has a static batch of {in_batch}"
    ranks = (2, 4) if flatten else (2,)
    if len(out_shape) not in ranks:
        raise ValueError(f"{what} has rank {len(out_shape)}; an encoder output must be (N, D)"
                         + (" or (N, C, H, W)" if flatten else "") + " (of several outputs, --output NAME picks one)")
    if any(_static_dim(d) == 0 for d in out_shape[1:]):
        raise ValueError(f"{what} has a zero-width feature axis: an embedding needs at least one value per image")
    out_batch = _static_dim(out_shape[0])
    if out_batch == 0:
        raise ValueError(f"{what} has 0 rows; an encoder output has one row per image")
    if in_batch is not None and out_batch is not None and in_batch != out_batch:
        raise ValueError(f"{what} has its first dimension (rows) fixed at {out_batch}, but the input's static batch "
                         f"is {in_batch} ({inp.name!r} {inp.shape}); an encoder output has one row per image")
    if in_batch is not None:
        return in_batch, f"input {inp.name!r} has a static batch of {in_batch}"
    if out_batch is not None:
        return out_batch, (f"output {out.name!r} has a fixed first dimension of {out_batch} (input {inp.name!r} "
                           "batch dynamic)")
    return None, ""


class EngineBase:
    """Shared context-manager plumbing; subclasses implement ``_open``, ``_close`` and ``_run``."""

    name: str
    input_spec: InputSpec
    source_path: Path | None

    def __enter__(self) -> "EngineBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend session (idempotent)."""

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` RGB -> float32 ``(N, D)``, rows L2-normalised."""
        batch = self.input_spec.validate(images)
        out = np.asarray(self._run(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != batch.shape[0] or out.shape[1] == 0:
            raise ValueError(f"engine {self.name!r} ({self.source_path}) returned shape {out.shape} for a batch of "
                             f"{batch.shape[0]} images; expected ({batch.shape[0]}, D) with D >= 1")
        return out

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, source_path={self.source_path})"


class OnnxRuntimeEngine(EngineBase):
    """ONNX Runtime engine over an encoder ONNX file (input ``images`` uint8 NHWC, or float32 NCHW normalised).

    ``embed`` always takes uint8 NHWC; for a float-NCHW model (``input_layout="float_nchw"`` export) the
    engine applies ``((x / 255) - mean) / std`` itself before calling the session.

    ``embed`` takes any number of images whatever the graph's batch: a graph with a static batch ``B`` (what
    ``torch.onnx.export`` writes without ``dynamic_axes``: ``B = 1``), or whose output's first dimension is fixed
    at ``B``, is run in chunks of exactly ``B`` images (the last one padded with copies of its last image, only
    its real rows kept), said once in the log (``graph_batch`` is ``B``, else ``None``). At open time an output
    that cannot be an embedding is refused with a one-line ``ValueError`` naming the file and the shape: not a
    numeric tensor, a zero-width feature axis, a wrong rank, or a fixed first dimension other than the input's
    static batch; at run time so is an output without one row per image.

    Args:
        path: the ``.onnx`` file.
        name: engine name (default: ``onnx_<precision>`` from the model metadata, else the file stem).
        providers: ORT execution providers, best first; default CPU only (pass e.g.
            ``["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]`` with
            onnxruntime-gpu). Unavailable providers are dropped with a warning.
        intra_op_threads: ORT intra-op thread count (None: ORT default).
        preprocess: the normalisation of a float-NCHW model: a ``core.contract.Preprocess`` (a bundle's, read
            from its manifest by ``device.manifest.manifest_preprocess``) or ``{"mean", "std"}`` (a user's
            declaration for a foreign file); default: the mean/std in the model's metadata. Ignored for uint8
            models.
        image_size: the side of the input images, for a model whose input height/width are dynamic (required
            then); a static input must match it.
        l2_normalize_output: for models that are not this project's bundles (foreign encoders, e.g. a torchvision
            ResNet exported as it is): their output may be un-normalised features, logits, or ``(N, C, 1, 1)``;
            with this flag an output ``(N, D)`` or ``(N, C, H, W)`` is flattened to ``(N, D)`` (``D = C*H*W``) and
            its rows L2-normalised here, so the engine contract holds. Other output ranks are refused.
        input_layout: the layout the caller declares (``GRAPH_INPUT_LAYOUTS``); a graph whose input is another one is
            refused. Default: whichever the graph has (``_input_layout``).
        output_name: the graph output that is the embedding, for a graph with several (e.g. features and logits);
            default: the first whose rank can be an embedding (``_chosen_output``), logged when there are others.
    """

    def __init__(self, path: Path | str, *, name: str | None = None, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, preprocess: Preprocess | Mapping[str, Any] | None = None,
                 image_size: int | None = None, l2_normalize_output: bool = False,
                 input_layout: str | None = None, output_name: str | None = None) -> None:
        self.source_path = Path(path)
        if not self.source_path.is_file():
            raise ValueError(f"ONNX model file not found: {self.source_path}")
        self._session = _open_session(self.source_path, providers, intra_op_threads)
        meta = self._session.get_modelmeta().custom_metadata_map
        inp = _single_input(self.source_path, self._session.get_inputs())
        self._input_name = inp.name
        self._normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self.input_layout = _input_layout(self.source_path, inp, input_layout)
        channels_last = self.input_layout != "float_nchw"
        height, width = _input_size(self.source_path, inp.name, inp.shape[1:3] if channels_last else inp.shape[2:4],
                                    image_size)
        self.input_spec = InputSpec(height=height, width=width)
        if self.input_layout != "uint8_nhwc":
            self._normalize = _float_normalization(self.source_path, meta, preprocess)
        self._input_dtype = FLOAT_INPUT_TYPES.get(inp.type, np.uint8)
        outputs = self._session.get_outputs()
        output = _chosen_output(self.source_path, outputs, output_name, l2_normalize_output)
        self._output_name = self.output_name = output.name
        self.output_shape = list(output.shape) if output.shape is not None else None
        self._l2_normalize_output = l2_normalize_output
        self.cache_variant = _contract_token(self.input_layout, self._normalize, output.name, len(outputs),
                                             l2_normalize_output)
        # The batch every session call holds: None (any), or the graph's static batch B, in chunks of exactly B.
        self.graph_batch, self._batch_reason = _graph_batch(self.source_path, inp, output, self.output_shape,
                                                            l2_normalize_output)
        self._batch_logged = False
        precision = meta.get("edge_encoder.precision")
        self.name = name or (f"onnx_{precision}" if precision else self.source_path.stem)
        self.providers = self._session.get_providers()

    def _run(self, images: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"engine {self.name!r} is closed")
        if self._normalize is not None:
            images = normalize_images(images, *self._normalize)
            if self.input_layout == "float_nhwc":  # a Keras/TensorFlow export: channels last
                images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
            images = images.astype(self._input_dtype, copy=False)
        if self.graph_batch is None:
            out = self._session_run(images)
        else:
            out = np.concatenate([self._session_run(chunk)[:rows] for chunk, rows in self._chunks(images)])
        if not self._l2_normalize_output:
            return out
        if out.ndim not in (2, 4):
            raise ValueError(f"engine {self.name!r}: output shape {out.shape}; expected (N, D) or (N, C, H, W)")
        flat = out.reshape(out.shape[0], -1).astype(np.float32, copy=False)
        if flat.shape[1] == 0:
            raise ValueError(f"{self.source_path}: output {self._output_name!r} has shape {out.shape}: a zero-width "
                             "embedding")
        # An all-zero row (e.g. a dead ReLU feature vector) stays zero rather than becoming NaN.
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    def _chunks(self, images: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """``[(chunk of exactly graph_batch images, rows to keep)]``: the last chunk is padded with copies of its
        last image, and only its real rows are kept."""
        size = int(self.graph_batch)  # type: ignore[arg-type]
        if not self._batch_logged:
            self._batch_logged = True
            logger.info("%s: %s; images run %d at a time (a last partial chunk is padded, its padding rows "
                        "dropped)", self.source_path, self._batch_reason, size)
        chunks = []
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            rows = len(chunk)
            if rows < size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - rows, axis=0)])
            chunks.append((chunk, rows))
        return chunks

    def _session_run(self, batch: np.ndarray) -> np.ndarray:
        """One session call; its output must have one row per image of ``batch``."""
        out = np.asarray(self._session.run([self._output_name], {self._input_name: batch})[0])
        if out.ndim == 0 or out.shape[0] != len(batch):
            raise ValueError(f"{self.source_path}: output {self._output_name!r} has shape {out.shape} for a batch of "
                             f"{len(batch)} images (graph output {self.output_shape}); an encoder output has one row "
                             "per image")
        return out

    def close(self) -> None:
        self._session = None
