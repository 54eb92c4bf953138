"""Deployment: a network as an ONNX file or a ``torch.export`` program, and ONNX Runtime as the check that it runs.

BEVFormer's published code cannot leave PyTorch (its deformable attention is a CUDA extension); occfeat's networks are
plain PyTorch, so they export with one command::

    occfeat export-onnx bevformer-enb0 --out bevformer.onnx --pt2 bevformer.pt2

The exported graph takes ``images`` (B, N, 3, H, W) normalised, ``intrinsics`` (B, N, 3, 3) and ``cam_to_ego``
(B, N, 4, 4), with N, H and W fixed to the model's input spec and the batch dimension dynamic, and returns one output
per head, named after it (``vehicle``, ``map``, ``center``, ``offset``). No BEV augmentation: a deployed network sees
the identity. While tracing, the few data-dependent fast paths (the sparse camera gathers sized by ``nonzero``, the
deformable attention's custom autograd function and its cache-sized chunks) take a dense path with static shapes that
computes the same numbers (``occfeat.models.ops.exporting``). The model's input transforms (image size, crop rule,
normalisation, cameras), its config and provenance go into the ONNX metadata (``metadata_props``).

``OnnxModel(path)`` runs a file with ONNX Runtime on the same batch dict as the PyTorch model and checks the batch
against the input spec first, so a wrong camera count or image size names the expected shape.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from . import __version__
from .conventions.geometry import NUSCENES_CAMERAS
from .errors import ConfigError, InputError
from .io import atomic_write

INPUT_NAMES = ("images", "intrinsics", "cam_to_ego")
# GridSample (4-D) is in the default ONNX domain from opset 16; 18 is the dynamo exporter's oldest supported opset.
OPSET = 18


class _Deployed(nn.Module):
    """The network with positional inputs and a tuple of outputs in head order (what exporters want)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.heads = tuple(model.config.heads)

    def forward(self, images: Tensor, intrinsics: Tensor, cam_to_ego: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(images, intrinsics, cam_to_ego)
        return tuple(outputs[name] for name in self.heads)


def _resolve_model(model: str | nn.Module) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    from .models import list_models
    from .zoo.loading import load

    return load(model, pretrained=model not in list_models())


def input_spec(model: nn.Module) -> dict[str, Any]:
    """What an exported network expects: cameras, image size, normalisation, raster, outputs."""
    config = model.config
    return {
        "inputs": {"images": ["batch", len(NUSCENES_CAMERAS), 3, *config.image_size],
                   "intrinsics": ["batch", len(NUSCENES_CAMERAS), 3, 3],
                   "cam_to_ego": ["batch", len(NUSCENES_CAMERAS), 4, 4]},
        "outputs": list(config.heads),
        "cameras": list(NUSCENES_CAMERAS),
        "image_size": list(config.image_size),
        "mean": list(config.image_mean),
        "std": list(config.image_std),
        "transforms": "occfeat.data.images: resize to cover the image size, crop the excess rows at the top and the "
                      "columns symmetrically (conventions.geometry.resize_crop_for), antialiased, then (x / 255 - "
                      "mean) / std; intrinsics updated by the same affine map",
        "raster": {"shape": list(config.grid.shape), "resolution": config.grid.resolution,
                   "frame": config.raster_frame, "camera": config.raster_camera},
    }


def example_inputs(model: nn.Module, batch_size: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Random images on the nominal nuScenes rig at the model's image size (tracing and checks)."""
    from .conventions.geometry import nuscenes_camera_rig

    intrinsics, cam_to_ego = nuscenes_camera_rig(tuple(model.config.image_size))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, len(NUSCENES_CAMERAS), 3, *model.config.image_size, generator=generator)
    return (images, intrinsics.expand(batch_size, -1, -1, -1).contiguous(),
            cam_to_ego.expand(batch_size, -1, -1, -1).contiguous())


def export_program(model: str | nn.Module, path: str | Path | None = None, *, batch_size: int = 2):
    """A ``torch.export`` program of the network (batch dimension dynamic), saved to ``path`` (``.pt2``) if given."""
    network = _resolve_model(model).eval()
    deployed = _Deployed(network)
    batch_size = max(2, batch_size)  # traced at batch 1, torch.export specialises the batch dimension to 1
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic = {name: {0: batch} for name in INPUT_NAMES}
    with torch.no_grad():
        program = torch.export.export(deployed, example_inputs(network, batch_size), dynamic_shapes=dynamic)
    if path is not None:  # through a buffer: torch.export.save wants a name ending in .pt2, atomic_write's is not
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={"occfeat.json": json.dumps(_metadata(network))})
        atomic_write(Path(path), lambda p: p.write_bytes(buffer.getvalue()))
    return program


def _metadata(model: nn.Module) -> dict[str, Any]:
    return {"occfeat_version": __version__, "architecture": model.config.arch, "input_spec": input_spec(model),
            "config": model.config.to_dict(), "provenance": getattr(model, "provenance", {}) or {},
            "weight_id": getattr(getattr(model, "weight_spec", None), "id", None)}


def export_onnx(model: str | nn.Module, path: str | Path, *, batch_size: int = 2, opset: int = OPSET,
                program: Any = None) -> Path:
    """Write the network as an ONNX file (dynamic batch; outputs named after the heads; metadata: input spec,
    config, provenance). ``model``: a ``BEVModel`` or anything ``occfeat.load`` takes (an architecture builds it
    untrained); ``program``: its ``export_program`` if already traced (the ONNX file is converted from it)."""
    try:
        import onnx
    except ImportError as error:
        raise ConfigError("export_onnx needs the onnx and onnxscript packages: pip install 'occfeat[deploy]'.") from error
    network = _resolve_model(model).eval()
    program = program if program is not None else export_program(network, batch_size=batch_size)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notices about its own internals
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                                         output_names=list(network.config.heads), optimize=True, verbose=False)
    proto = onnx_program.model_proto
    for key, value in _metadata(network).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"occfeat.{key}", json.dumps(value)
    proto.producer_name, proto.producer_version = "occfeat", __version__
    atomic_write(path, lambda p: onnx.save_model(proto, str(p)))
    return path


def check_batch(batch: Mapping[str, Tensor], spec: Mapping[str, Any]) -> int:
    """Raise ``InputError`` naming the expected shape when ``batch`` does not fit an exported network; returns B."""
    missing = [name for name in INPUT_NAMES if name not in batch]
    if missing:
        raise InputError(f"the exported network needs {list(INPUT_NAMES)}; the batch lacks {missing}.")
    b = int(batch["images"].shape[0]) if batch["images"].dim() else 0
    for name in INPUT_NAMES:
        expected = [b if d == "batch" else d for d in spec["inputs"][name]]
        if list(batch[name].shape) != expected:
            cameras, (h, w) = len(spec["cameras"]), spec["image_size"]
            raise InputError(
                f"{name}: got shape {tuple(batch[name].shape)}, the exported network takes {tuple(expected)} "
                f"(B, N={cameras} cameras {spec['cameras']}, images {h}x{w}). Resize and crop with the model's "
                "transforms (occfeat.get_weights(ID).transforms() or the metadata's input_spec), one image per camera."
            )
    return b


class OnnxModel:
    """An exported network run by ONNX Runtime (CPU by default) on occfeat's batch dicts.

    >>> onnx_model = OnnxModel("bevformer.onnx")  # doctest: +SKIP
    >>> outputs = onnx_model(batch)  # {"vehicle": (B, 1, 200, 200) logits, ...}  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ConfigError("OnnxModel needs onnxruntime: pip install 'occfeat[deploy]'.") from error
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path} does not exist; write it with `occfeat export-onnx MODEL --out FILE`.")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options,
                                                    providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "occfeat.input_spec" not in meta:
            raise InputError(f"{self.path}: not an occfeat export (no occfeat.input_spec metadata).")
        self.metadata = {k.removeprefix("occfeat."): json.loads(v) for k, v in meta.items() if k.startswith("occfeat.")}
        self.spec = self.metadata["input_spec"]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        check_batch(batch, self.spec)
        feed = {name: batch[name].detach().cpu().float().contiguous().numpy() for name in INPUT_NAMES}
        outputs = self.session.run(self.output_names, feed)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)}


class ProgramModel:
    """A saved ``torch.export`` program (``.pt2``) on occfeat's batch dicts, with the same input check."""

    def __init__(self, path: str | Path):
        extra = {"occfeat.json": ""}
        self.program = torch.export.load(str(path), extra_files=extra)
        self.metadata = json.loads(extra["occfeat.json"])
        self.spec = self.metadata["input_spec"]
        self.module = self.program.module()

    def __call__(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        check_batch(batch, self.spec)
        with torch.no_grad():
            outputs = self.module(*(batch[name] for name in INPUT_NAMES))
        return dict(zip(self.spec["outputs"], outputs))


def compare(model: nn.Module, runner: Any, batch_sizes: tuple[int, ...] = (1, 2)) -> dict[str, float]:
    """The largest difference between ``runner`` (an ``OnnxModel`` or ``ProgramModel``) and the PyTorch model on
    random inputs, per output, relative to that output's largest magnitude, over ``batch_sizes``."""
    worst: dict[str, float] = {}
    model = model.eval()
    for batch_size in batch_sizes:
        images, intrinsics, cam_to_ego = example_inputs(model, batch_size)
        batch = {"images": images, "intrinsics": intrinsics, "cam_to_ego": cam_to_ego}
        with torch.no_grad():
            expected = model(**batch)
        got = runner(batch)
        for name, value in expected.items():
            relative = float((got[name] - value).abs().max() / value.abs().max().clamp(min=1e-12))
            worst[name] = max(worst.get(name, 0.0), relative)
    return worst
