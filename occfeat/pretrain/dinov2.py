"""DINOv2 weights in the three layouts users hold, brought to timm's (the layout the OccFeat teacher loads).

- ``timm``: timm's ``model.safetensors`` (``timm/vit_small_patch14_dinov2.lvd142m``): ``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
  ``norm.*`` (``reg_token`` for the register models).
- ``transformers``: ``transformers.Dinov2Model`` (``facebook/dinov2-small``): ``embeddings.{cls_token,mask_token,
  position_embeddings,patch_embeddings.projection.*}``, ``encoder.layer.N.attention.attention.{query,key,value}``,
  ``attention.output.dense``, ``layer_scale{1,2}.lambda1``, ``mlp.fc1/fc2`` (``mlp.weights_in/weights_out`` for the
  SwiGLU giant), ``layernorm.*``; a ``dinov2.`` prefix (``Dinov2ForImageClassification``) is stripped.
- ``official``: facebookresearch/dinov2 (``dinov2_vits14_pretrain.pth``): timm's names plus ``mask_token``,
  ``register_tokens`` for the register models, ``mlp.w12/w3`` for SwiGLU, and blocks possibly nested in FSDP chunks
  (``blocks.C.N.``, where N is already the global block index: the chunks pad with ``nn.Identity``).

The conversion is a renaming (plus query/key/value concatenated into qkv, and the register models' class-token
folding that timm's own ``_convert_dinov2`` does); positional embeddings stay at the file's grid (37x37 for the 518
pixel releases): the teacher resamples them to its input grid at load time with timm's ``checkpoint_filter_fn``, so
occfeat's numbers are timm's. A pickle is read in one place only, ``convert_dinov2_checkpoint`` (through
``occfeat.io.read_pickled_weights``, ``weights_only=True``): training never reads a pickle.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..io import atomic_write, check_output_path, read_pickled_weights, sha256_file

Layout = Literal["timm", "transformers", "official"]
LAYOUTS: tuple[str, ...] = ("timm", "transformers", "official")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".pickle", ".ckpt")
CONVERT_COMMAND = "occfeat convert dinov2 IN.pth OUT.safetensors"
DINOV2_PATCH = 14
# Embedding width -> (timm size word, the paper's name): the four DINOv2 releases.
_SIZES = {384: ("small", "ViT-S/14"), 768: ("base", "ViT-B/14"), 1024: ("large", "ViT-L/14"),
          1536: ("giant", "ViT-g/14")}
_RELEASE_DEPTH = {384: 12, 768: 12, 1024: 24, 1536: 40}
# Wrappers around a backbone's keys: DDP/compile, transformers' task heads, the official training checkpoints
# ({"teacher": {"backbone.*", "dino_head.*", "ibot_head.*"}}). Keys outside the prefix (heads) are dropped.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "dinov2.", "backbone.", "teacher.", "model.")
_BACKBONE_MARKERS = ("cls_token", "pos_embed", "embeddings.", "blocks.", "encoder.layer.", "patch_embed.")

_TIMM_BLOCK = re.compile(
    r"blocks\.(\d+)\.(?:norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(?:weight|bias)$"
    r"|blocks\.(\d+)\.ls[12]\.gamma$"
)
_TIMM_TOP = {"cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
             "norm.bias"}
_EXPECTED = (
    "timm (cls_token, pos_embed, patch_embed.proj.weight, blocks.0.attn.qkv.weight, blocks.0.ls1.gamma, norm.weight), "
    "transformers Dinov2Model (embeddings.cls_token, embeddings.position_embeddings, "
    "encoder.layer.0.attention.attention.query.weight, encoder.layer.0.layer_scale1.lambda1, layernorm.weight) or "
    "official facebookresearch/dinov2 (timm's names plus mask_token; blocks possibly as blocks.<chunk>.<n>.)"
)


def _strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone's own keys: wrapper prefixes removed (repeatedly: ``module.backbone.``), heads beside them
    dropped. A state dict whose keys already start at the backbone is returned as is."""
    keys = dict(state_dict)
    changed = True
    while changed:
        changed = False
        if any(k.startswith(_BACKBONE_MARKERS) for k in keys):
            break
        for prefix in _WRAPPER_PREFIXES:
            inner = {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}
            if inner and any(k.startswith(_BACKBONE_MARKERS + _WRAPPER_PREFIXES) for k in inner):
                keys, changed = inner, True
                break
    return keys


def _sample(keys: Any, count: int = 6) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def detect_layout(state_dict: Mapping[str, Any], *, source: str = "the state dict") -> Layout:
    """ "timm", "transformers" or "official", from the key names alone (after wrapper prefixes such as
    ``dinov2.``/``module.`` are stripped). Raises ``InputError`` naming the expected keys when none fits."""
    keys = set(_strip_wrappers(state_dict))
    if any(k.startswith("embeddings.") for k in keys) and any(k.startswith("encoder.layer.") for k in keys):
        return "transformers"
    if {"cls_token", "pos_embed"} <= keys and any(k.startswith("blocks.") for k in keys):
        chunked = any(re.match(r"blocks\.\d+\.\d+\.", k) for k in keys)
        swiglu = any(re.match(r"blocks\.\d+\.mlp\.w(12|3)\.", k) for k in keys)
        if "mask_token" in keys or "register_tokens" in keys or chunked or swiglu:
            return "official"
        return "timm"
    raise InputError(
        f"{source}: its keys ({_sample(keys) or 'none'}) are of no DINOv2 layout occfeat knows. Expected {_EXPECTED}. "
        "Give DINOv2's weights in one of these layouts."
    )


def _check_is_dinov2(keys: set[str], patch_weight: Tensor | None, source: str) -> None:
    """A ViT that is not DINOv2 (e.g. timm's vit_small_patch16_224) must not be distilled from silently."""
    layer_scale = any(k.endswith(("ls1.gamma", "layer_scale1.lambda1")) for k in keys)
    patch = None if patch_weight is None or patch_weight.ndim != 4 else int(patch_weight.shape[-1])
    if layer_scale and patch == DINOV2_PATCH:
        return
    found = ", ".join(
        ([f"{patch}-pixel patches"] if patch not in (None, DINOV2_PATCH) else [])
        + ([] if layer_scale else ["no layer scale"])
        + ([] if patch_weight is not None else ["no patch embedding"])
    )
    raise InputError(
        f"{source} is not DINOv2 ({found}): DINOv2 ViTs have {DINOV2_PATCH}-pixel patches and a layer scale in every "
        "block (ls1.gamma / layer_scale1.lambda1). Give DINOv2's weights: timm's vit_small_patch14_dinov2.lvd142m "
        "model.safetensors, transformers' facebook/dinov2-small model.safetensors, or the official "
        f"dinov2_vits14_pretrain.pth converted with `{CONVERT_COMMAND}`."
    )


def _fold_registers(out: dict[str, Tensor]) -> None:
    """Official/transformers register models -> timm's (no_embed_class): registers become ``reg_token`` and the class
    token absorbs its positional embedding, as timm's own ``_convert_dinov2`` does."""
    if "register_tokens" not in out:
        return
    out["reg_token"] = out.pop("register_tokens")
    pos_embed = out.pop("pos_embed")
    out["cls_token"] = out.pop("cls_token") + pos_embed[:, :1]
    out["pos_embed"] = pos_embed[:, 1:]


def _from_transformers(keys: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    top = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    # Per-layer renames; both the Hub files' names and transformers 5's in-memory names (q_proj, ...).
    inner = {
        "norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
        "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.fc1", "mlp.weights_out": "mlp.fc2",
        "mlp.down_proj": "mlp.fc2",
    }
    qkv_parts = {"attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
                 "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}
    swiglu_parts = {"mlp.gate_proj": 0, "mlp.up_proj": 1}  # the packed fc1 is [gate; up] (silu on the first half)
    out: dict[str, Tensor] = {}
    grouped: dict[str, dict[int, Tensor]] = {}
    unknown = []
    for key, value in keys.items():
        if key == "embeddings.mask_token":
            continue  # masked-image training only
        if key in top:
            out[top[key]] = value
            continue
        match = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", key)
        if not match:
            unknown.append(key)
            continue
        n, module, param = match.groups()
        if param == "lambda1" and module in ("layer_scale1", "layer_scale2"):
            out[f"blocks.{n}.ls{module[-1]}.gamma"] = value
        elif module in inner and param != "lambda1":
            out[f"blocks.{n}.{inner[module]}.{param}"] = value
        elif module in qkv_parts and param != "lambda1":
            grouped.setdefault(f"blocks.{n}.attn.qkv.{param}", {})[qkv_parts[module]] = value
        elif module in swiglu_parts and param != "lambda1":
            grouped.setdefault(f"blocks.{n}.mlp.fc1.{param}", {})[swiglu_parts[module]] = value
        else:
            unknown.append(key)
    if unknown:
        raise InputError(f"{source}: transformers-layout keys occfeat cannot map to timm's DINOv2: {_sample(unknown)}.")
    for key, parts in grouped.items():
        needed = 2 if ".mlp." in key else 3
        if sorted(parts) != list(range(needed)):
            raise InputError(f"{source}: {key} needs all of its {needed} parts (query/key/value or gate/up); some are "
                             "missing: the file is truncated or not a Dinov2Model.")
        out[key] = torch.cat([parts[i] for i in range(needed)], dim=0)
    _fold_registers(out)
    return out


def _from_official(keys: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in keys.items():
        if key == "mask_token":
            continue  # masked-image training only
        chunked = re.match(r"blocks\.(\d+)\.(\d+)\.(.+)$", key)
        if chunked:  # blocks.<chunk>.<n>.*: n is already the global index (the chunks are padded with Identity)
            key = f"blocks.{chunked.group(2)}.{chunked.group(3)}"
            if key in out:
                raise InputError(f"{source}: block key {key} appears in two FSDP chunks; the file is not a DINOv2 "
                                 "release (its chunks number blocks globally).")
        key = re.sub(r"^(blocks\.\d+\.mlp)\.w12\.", r"\1.fc1.", key)  # SwiGLU, as timm's _convert_dinov2 maps it
        key = re.sub(r"^(blocks\.\d+\.mlp)\.w3\.", r"\1.fc2.", key)
        out[key] = value
    _fold_registers(out)
    return out


def to_timm_state_dict(
    state_dict: Mapping[str, Any], *, source: str = "the state dict",
) -> tuple[dict[str, Tensor], Layout]:
    """``state_dict`` in any of the three layouts -> (timm-layout state dict, the layout it was in). In memory; the
    positional embeddings keep the file's grid. Raises ``InputError`` for keys of no known layout, a ViT that is not
    DINOv2, or keys that do not map onto timm's DINOv2."""
    keys = _strip_wrappers(state_dict)
    layout = detect_layout(keys, source=source)
    not_tensors = sorted(k for k, v in keys.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise InputError(f"{source}: entries that are not tensors ({_sample(not_tensors)}): give the model's state "
                         "dict.")
    patch_key = ("embeddings.patch_embeddings.projection.weight" if layout == "transformers"
                 else "patch_embed.proj.weight")
    _check_is_dinov2(set(keys), keys.get(patch_key), source)
    if layout == "transformers":
        out = _from_transformers(keys, source)
    elif layout == "official":
        out = _from_official(keys, source)
    else:
        out = dict(keys)
    unknown = sorted(k for k in out if k not in _TIMM_TOP and not _TIMM_BLOCK.match(k))
    if unknown:
        raise InputError(f"{source} ({layout} layout): keys that are not part of a DINOv2 backbone: "
                         f"{_sample(unknown)}. Expected {_EXPECTED}.")
    return out, layout


def describe(timm_state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """What a timm-layout DINOv2 state dict holds: embed_dim, depth, patch, registers, mlp_hidden, swiglu."""
    patch_weight = timm_state_dict["patch_embed.proj.weight"]
    embed_dim = int(patch_weight.shape[0])
    depth = len({int(m.group(1) or m.group(2)) for k in timm_state_dict if (m := _TIMM_BLOCK.match(k))})
    fc1 = timm_state_dict.get("blocks.0.mlp.fc1.weight")
    fc2 = timm_state_dict.get("blocks.0.mlp.fc2.weight")
    reg = timm_state_dict.get("reg_token")
    return {
        "embed_dim": embed_dim, "depth": depth, "patch": int(patch_weight.shape[-1]),
        "registers": 0 if reg is None else int(reg.shape[1]),
        "mlp_hidden": None if fc1 is None else int(fc1.shape[0]),
        "swiglu": fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1],
    }


def teacher_name_for(info: Mapping[str, Any]) -> str | None:
    """The timm DINOv2 name of a file's architecture (e.g. vit_base_patch14_dinov2.lvd142m), or None."""
    size = _SIZES.get(info["embed_dim"])
    if size is None or info["patch"] != DINOV2_PATCH:
        return None
    registers = f"_reg{info['registers']}" if info["registers"] else ""
    return f"vit_{size[0]}_patch14{registers}_dinov2.lvd142m"


def _architecture(info: Mapping[str, Any]) -> str:
    label = _SIZES.get(info["embed_dim"], ("", f"ViT/{info['patch']}"))[1]
    registers = f", {info['registers']} registers" if info["registers"] else ""
    return f"a {label} (embed dim {info['embed_dim']}, {info['depth']} blocks{registers})"


def check_matches_model(timm_state_dict: Mapping[str, Tensor], model: nn.Module, name: str, *, source: str) -> None:
    """``ConfigError`` naming the right teacher when the file's architecture is not the one ``name`` builds."""
    info = describe(timm_state_dict)
    fc1 = getattr(getattr(model.blocks[0], "mlp", None), "fc1", None) if len(model.blocks) else None
    wanted = {
        "embed_dim": int(model.embed_dim), "depth": len(model.blocks), "patch": int(model.patch_embed.patch_size[0]),
        "registers": int(getattr(model, "num_reg_tokens", 0)),
        "mlp_hidden": None if fc1 is None else int(fc1.weight.shape[0]),
    }
    differs = [k for k, v in wanted.items() if info[k] != v]
    if not differs:
        return
    suggestion = teacher_name_for(info)
    holds = _architecture(info)
    if suggestion and suggestion.split(".")[0] != name.split(".")[0]:
        fix = f"use --teacher {suggestion} (teacher={suggestion!r})"
    elif "depth" in differs and info["depth"] == _RELEASE_DEPTH.get(info["embed_dim"]):
        fix = f"the file is a full release: drop the teacher's model_kwargs depth={wanted['depth']}"
    elif "depth" in differs:
        fix = (f"the file is not a full DINOv2 release ({info['depth']} blocks, the release has "
               f"{_RELEASE_DEPTH.get(info['embed_dim'])}); for a cut-down test model pass model_kwargs="
               f"{{'depth': {info['depth']}}}")
    else:
        fix = "give the weights of the teacher you named, or name the teacher the weights are of"
    raise ConfigError(f"{source}: the file holds {holds}, teacher {name!r} is {_architecture(wanted)} (differs in "
                      f"{', '.join(differs)}): {fix}.")


def load_into_model(model: nn.Module, timm_state_dict: Mapping[str, Tensor], name: str, *, source: str) -> None:
    """Load a timm-layout DINOv2 state dict into ``model`` (a timm ViT built at the teacher's input size) with
    strict key checking, the positional embeddings resampled by timm's own ``checkpoint_filter_fn`` (bicubic,
    antialiased: what ``timm.create_model(pretrained=True, img_size=...)`` does)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    check_matches_model(timm_state_dict, model, name, source=source)
    filtered = checkpoint_filter_fn(dict(timm_state_dict), model)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(filtered)), sorted(set(filtered) - expected)
    if missing or unexpected:
        raise InputError(f"{source}: does not fit teacher {name!r}: missing keys [{_sample(missing)}], unexpected keys "
                         f"[{_sample(unexpected)}]. Give the weights of the teacher you named.")
    try:
        model.load_state_dict(filtered, strict=True)
    except RuntimeError as error:  # a shape mismatch the architecture check did not foresee
        raise InputError(f"{source}: does not fit teacher {name!r}: {error}") from error


def resolve_weights_file(path: str | Path) -> Path:
    """The ``.safetensors`` file a path names: the file itself; in a folder, its ``model.safetensors`` (a
    ``save_pretrained`` folder or a Hub snapshot); in a Hub cache folder (``models--timm--NAME``), the snapshot
    ``refs/main`` points at (else its only snapshot). Pickles are refused with the convert command."""
    path = Path(path).expanduser()
    if path.suffix in PICKLE_SUFFIXES and not path.is_dir():
        raise InputError(f"teacher weights {path}: occfeat reads teacher weights from .safetensors files only (a "
                         f"pickle can run code). Convert it once where you trust it: `{CONVERT_COMMAND}`.")
    if not path.exists():
        raise InputError(f"teacher weights {path} do not exist.")
    if path.is_dir():
        if (path / "snapshots").is_dir():  # a Hub cache folder: models--OWNER--NAME
            ref = path / "refs" / "main"
            snapshots = sorted(p for p in (path / "snapshots").iterdir() if p.is_dir())
            if ref.is_file() and (path / "snapshots" / ref.read_text().strip()).is_dir():
                path = path / "snapshots" / ref.read_text().strip()
            elif len(snapshots) == 1:
                path = snapshots[0]
            else:
                raise InputError(f"teacher weights {path}: a Hub cache folder with {len(snapshots)} snapshots and no "
                                 "refs/main: give the snapshots/<revision> folder you mean.")
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        if (path / "model.safetensors.index.json").is_file():
            raise InputError(f"teacher weights {path}: sharded safetensors (model.safetensors.index.json) are not "
                             "read; merge the shards into one model.safetensors (safetensors.torch.save_file).")
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) == 1:
            return candidates[0]
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(f"teacher weights {path} hold only pickles ({', '.join(pickles)}): occfeat trains from "
                             f".safetensors only (a pickle can run code). Convert once: `{CONVERT_COMMAND}`.")
        raise InputError(f"teacher weights {path}: no model.safetensors in the folder (found "
                         f"{[p.name for p in candidates] or 'no .safetensors'}); give the file itself.")
    if path.suffix != ".safetensors":
        raise InputError(f"teacher weights {path}: expected a .safetensors file or a folder holding model.safetensors.")
    return path


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 (safetensors raises its own errors for truncated or foreign files)
        raise InputError(f"{path}: not a readable .safetensors file ({type(error).__name__}: {error}).") from error


def _read_pickle(path: Path) -> dict[str, Any]:
    """The one place occfeat unpickles: ``weights_only=True`` (tensors and plain containers only)."""
    loaded = read_pickled_weights(path, expected="a plain state dict of a DINOv2 ViT")
    if not isinstance(loaded, Mapping):
        raise InputError(f"{path}: holds a {type(loaded).__name__}, not a state dict.")
    for nest in ("model", "state_dict", "teacher"):  # training checkpoints nest the weights
        if nest in loaded and isinstance(loaded[nest], Mapping):
            return dict(loaded[nest])
    return dict(loaded)


def convert_dinov2_checkpoint(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """A DINOv2 checkpoint (official ``.pth``/``.pt``, transformers or timm ``.safetensors``, or a folder holding
    ``model.safetensors``) -> ``out``, a timm-layout ``.safetensors`` the teacher loads, written atomically.

    Returns ``{"layout", "sha256" (of out), "tensors", "embed_dim", "depth", "patch", "registers",
    "source_sha256", "teacher"}`` (``teacher``: the timm name of the architecture).

    ``out`` is checked before the checkpoint is read (``InputError`` for a folder in its place, or a file in the place
    of a parent folder). A pickle's tensors are bounded before any is copied (``read_pickled_weights``: an expanded
    view such as ``torch.zeros(1).expand(2**32)`` is refused, not materialised)."""
    from safetensors.torch import save_file

    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise InputError(f"occfeat convert dinov2: the output {out} must end in .safetensors.")
    check_output_path(out, kind="file", what="occfeat convert dinov2: the output")
    if not checkpoint.exists():
        raise InputError(f"occfeat convert dinov2: {checkpoint} does not exist.")
    if checkpoint.is_file() and checkpoint.suffix in PICKLE_SUFFIXES:
        source_file, raw = checkpoint, _read_pickle(checkpoint)
    else:
        source_file = resolve_weights_file(checkpoint)
        raw = read_safetensors(source_file)
    timm_state_dict, layout = to_timm_state_dict(raw, source=str(checkpoint))
    info = describe(timm_state_dict)
    # Own, contiguous storage per tensor: safetensors refuses tensors that share memory (views of a pickle's storage).
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sorted(timm_state_dict.items())}
    source_sha256 = sha256_file(source_file)
    # One metadata entry: safetensors writes a header's entries in hash order, so two would make the bytes (and the
    # sha256, the teacher-cache identity) differ between two conversions of the same checkpoint.
    metadata = {"occfeat_converted_from": json.dumps({"layout": layout, "sha256": source_sha256}, sort_keys=True)}
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    grid = int(math.isqrt(tensors["pos_embed"].shape[1] - (0 if info["registers"] else 1)))
    return {"layout": layout, "sha256": sha256_file(out), "tensors": len(tensors), "embed_dim": info["embed_dim"],
            "depth": info["depth"], "patch": info["patch"], "registers": info["registers"], "pos_grid": grid,
            "source_sha256": source_sha256, "teacher": teacher_name_for(info)}
