"""The frozen image teacher (DINOv2 through timm) and its on-disk feature cache.

The teacher sees each camera's whole image, resized to the nearest multiple of its patch size (224x480 -> 224x476,
a 16x34 patch grid for ViT-S/14): its patch grid then covers exactly the image's extent, so the unit image
coordinates of a projected voxel address the patch grid directly (``targets.sample_teacher_features``).

The weights come from the Hub (timm's copy, read from the local Hub cache without a request when it is there), or
from a local ``.safetensors`` file or folder in timm's, transformers' or the official release's layout
(``occfeat.pretrain.dinov2``), converted to timm's in memory; a pickle is refused (``occfeat convert dinov2``).

Features are rounded to ``storage_dtype`` (float16 by default) whether they come from the cache or not, so that a
cached run and an uncached one see bit-identical targets.

The cache holds one safetensors file per sample token under a folder named by the *cache key*: teacher name, the
identity of its weights (Hub tag, sha256 of a local file, or the seed of a random init), the network's image size,
the teacher's input size, the camera order, the storage dtype and any ``model_kwargs``. Change any of them and the
features are recomputed in a fresh folder; a file whose recorded key differs from its folder's is ignored and
rewritten. The layout a weights file was in is recorded (``weights_layout``) but is no part of the key: the sha256
already names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, HubError, InputError, TeacherWeightsError  # TeacherWeightsError: also imported from here
from ..io import atomic_write
from .dinov2 import load_into_model, read_safetensors, resolve_weights_file, to_timm_state_dict

DEFAULT_TEACHER = "vit_small_patch14_dinov2.lvd142m"
# A stand-in for DINOv2 on generated worlds (SemanticTeacher): what DINOv2 is to real images, made from the renderer's
# side-car class and instance maps and the image's colours. Never OccFeat's teacher, and never available on nuScenes.
STAND_IN_TEACHER = "synthetic-semantic"
# DINOv2's patch and the image height of the paper's working size: the stand-in's grid matches theirs, relative to
# the image, at any image size.
DINOV2_PATCH, DINOV2_REFERENCE_HEIGHT = 14, 224
TEACHER_WEIGHTS = ("auto", "hub", "random")  # or the path of a .safetensors file, or a folder holding one
RANDOM_TEACHER_SEED = 0


def teacher_input_size(image_hw: tuple[int, int], patch: int) -> tuple[int, int]:
    """The multiple of ``patch`` nearest to each side of ``image_hw`` (at least one patch)."""
    return tuple(max(1, round(s / patch)) * patch for s in image_hw)  # type: ignore[return-value]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection now (False in offline mode): "auto" asks this
    first, so that an air-gapped machine does not sit through huggingface_hub's retries (~45 s) before falling back."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    from ..zoo.hub import is_offline

    if is_offline():
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache, from the environment *now* (huggingface_hub's constants are frozen at its import,
    so a process that sets ``HF_HOME`` later would look in the wrong place)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _hub_source(name: str) -> tuple[str, str | None, str] | None:
    """(repository, revision, safetensors file name) timm would download teacher ``name`` from, or None."""
    from ..zoo.hub import timm_hub_source

    return timm_hub_source(name)


def cached_hub_weights(name: str) -> Path | None:
    """timm's Hub file of teacher ``name`` when it is already in the local Hub cache (``refs/main``), else None.
    Reads the disk only: no request, so it works offline (``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import try_to_load_from_cache

    source = _hub_source(name)
    if source is None:
        return None
    repo, revision, filename = source
    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TeacherSpec:
    """What determines the teacher's features for a sample (the cache key), and what the run records."""

    name: str
    weights: str  # "hub:<name>", "file:<sha256>" (of the file given) or "random:<seed>"
    image_size: tuple[int, int]  # the network's images
    input_size: tuple[int, int]  # what the teacher sees
    patch_grid: tuple[int, int]
    feature_dim: int
    cameras: tuple[str, ...]
    storage_dtype: str
    dataset: str = ""  # the dataroot and version the sample tokens belong to (set by the cache's user)
    weights_layout: str = ""  # "timm", "transformers" or "official": what the weights were in before conversion
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments (e.g. depth)

    @property
    def key(self) -> str:
        identity = asdict(self)
        # The layout is provenance, not identity (the sha256 names the file), and empty model_kwargs are left out:
        # features cached before these fields existed keep their key.
        identity.pop("weights_layout")
        if not identity["model_kwargs"]:
            identity.pop("model_kwargs")
        text = json.dumps(identity, sort_keys=True)
        return f"{self.name.replace('/', '_')}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    @property
    def map_shape(self) -> tuple[int, int, int, int]:
        """(N, D, h, w) of one sample's features."""
        return (len(self.cameras), self.feature_dim, *self.patch_grid)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


class Teacher(nn.Module):
    """A frozen timm ViT giving (B, N, D, h, w) patch-feature maps of normalised camera images.

    Args:
        name: a timm ViT (default DINOv2 ViT-S/14).
        image_size: (H, W) of the network's images.
        weights: "hub" (the local Hub cache when timm's file is there, no request; else timm downloads it; fails
            offline), "auto" (the cache, else the Hub when reachable, else random with a loud warning), "random"
            (seeded, with a loud warning), or a local ``.safetensors`` file in timm's, transformers' or the
            official layout, or a folder holding ``model.safetensors`` (a ``save_pretrained`` folder, a Hub
            snapshot, or a Hub cache folder ``models--timm--NAME``). Pickles are refused: convert them with
            ``occfeat convert dinov2 IN.pth OUT.safetensors``.
        image_mean / image_std: the normalisation of the images the network gets; the teacher renormalises to its
            own.
        cameras: camera names in the order of the batch (recorded in the cache key).
        storage_dtype: features are rounded to this dtype (the cache stores it).
        model_kwargs: extra ``timm.create_model`` arguments (recorded in the cache key), e.g. ``{"depth": 2}`` for a
            small test model.
    """

    def __init__(
        self,
        name: str = DEFAULT_TEACHER,
        *,
        image_size: tuple[int, int],
        weights: str | Path = "auto",
        image_mean: Sequence[float],
        image_std: Sequence[float],
        cameras: Sequence[str],
        storage_dtype: torch.dtype = torch.float16,
        model_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        import timm

        model_kwargs = dict(model_kwargs or {})
        reserved = sorted({"pretrained", "img_size", "pretrained_cfg_overlay"} & set(model_kwargs))
        if reserved:
            raise ConfigError(f"teacher model_kwargs {reserved}: the teacher sets these itself (pass weights=... and "
                              "image_size=... instead).")
        try:
            json.dumps(model_kwargs, sort_keys=True)
        except TypeError as error:
            raise ConfigError(f"teacher model_kwargs {model_kwargs!r} must be JSON values (they are part of the cache "
                              f"key): {error}") from error
        if not timm.is_model(name.split(".")[0]):
            raise ConfigError(f"teacher {name!r} is not a timm model; e.g. {DEFAULT_TEACHER!r} or vit_base_patch14_dinov2.")
        with torch.device("meta"):  # only to read the patch size
            probe = timm.create_model(name, pretrained=False, **model_kwargs)
        if not hasattr(probe, "patch_embed") or not hasattr(probe, "num_prefix_tokens"):
            raise ConfigError(f"teacher {name!r} is not a ViT (no patch embedding): choose a timm ViT such as {DEFAULT_TEACHER!r}.")
        patch = probe.patch_embed.patch_size[0]
        input_size = teacher_input_size(tuple(image_size), patch)
        self.model, weights_id, layout = self._build(name, weights, input_size, model_kwargs)
        self.model.eval().requires_grad_(False)
        teacher_cfg = self.model.pretrained_cfg
        mean, std = torch.tensor(teacher_cfg.get("mean", image_mean)), torch.tensor(teacher_cfg.get("std", image_std))
        # One affine from the network's normalisation to the teacher's: x_t = x_n * scale + shift.
        scale = torch.tensor(image_std) / std
        shift = (torch.tensor(image_mean) - mean) / std
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.storage_dtype = storage_dtype
        self.spec = TeacherSpec(
            name=name, weights=weights_id, image_size=tuple(image_size), input_size=input_size,
            patch_grid=(input_size[0] // patch, input_size[1] // patch), feature_dim=self.model.embed_dim,
            cameras=tuple(cameras), storage_dtype=str(storage_dtype).replace("torch.", ""),
            weights_layout=layout, model_kwargs=model_kwargs,
        )

    @staticmethod
    def _from_file(
        name: str, path: Path, input_size: tuple[int, int], model_kwargs: dict[str, Any],
    ) -> tuple[nn.Module, str]:
        """A timm model at ``input_size`` holding the weights of a ``.safetensors`` file of any DINOv2 layout."""
        import timm

        state_dict, layout = to_timm_state_dict(read_safetensors(path), source=str(path))
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG as it was
            model = timm.create_model(name, pretrained=False, img_size=input_size, **model_kwargs)
        load_into_model(model, state_dict, name, source=str(path))
        return model, layout

    @staticmethod
    def _build(
        name: str, weights: str | Path, input_size: tuple[int, int], model_kwargs: dict[str, Any] | None = None,
    ) -> tuple[nn.Module, str, str]:
        """(model, weights identity for the cache key, layout of the weights before conversion)."""
        import timm

        from ..zoo.hub import is_offline

        model_kwargs = dict(model_kwargs or {})
        weights = str(weights)
        if weights not in TEACHER_WEIGHTS:
            path = resolve_weights_file(weights)  # refuses pickles, naming `occfeat convert dinov2`
            model, layout = Teacher._from_file(name, path, input_size, model_kwargs)
            return model, f"file:{_sha256(path)}", layout
        if weights in ("hub", "auto"):
            cached = cached_hub_weights(name)
            if cached is not None:  # what timm would download, already here: read it without a request
                model, layout = Teacher._from_file(name, cached, input_size, model_kwargs)
                return model, f"hub:{name}", layout
        if weights == "hub" and is_offline():
            repo = (_hub_source(name) or (f"timm/{name}",))[0]
            raise TeacherWeightsError(
                f"teacher {name!r}: offline (HF_HUB_OFFLINE/OCCFEAT_OFFLINE) and its weights are not in the Hub cache "
                f"{hub_cache_dir()}. Fetch them where there is network (`hf download {repo}`) and copy that cache "
                "here, or give a file with --teacher-weights FILE.safetensors."
            )
        if weights == "auto" and not hub_reachable():
            reason = "the Hub is unreachable"
        elif weights in ("hub", "auto"):
            # Fetched by occfeat, not by timm: one attempt, no ~54 s of retries against an unreachable Hub.
            from ..zoo.hub import fetch_timm_weights

            try:
                path, _ = fetch_timm_weights(
                    name, what=f"teacher {name!r}", cache_dir=hub_cache_dir(),
                    local_option="--teacher-weights FILE.safetensors (teacher_weights=...)")
            except HubError as error:
                if weights == "hub":
                    raise TeacherWeightsError(
                        f"could not fetch the weights of teacher {name!r} from the Hub: {error} For a plumbing run, "
                        "pass teacher_weights='random'."
                    ) from error
                reason = f"the Hub could not give them ({type(error).__name__})"
            else:
                model, layout = Teacher._from_file(name, path, input_size, model_kwargs)
                return model, f"hub:{name}", layout
        else:
            reason = "teacher_weights='random'"
        warnings.warn(
            f"\n{'!' * 100}\nOccFeat teacher {name!r} uses RANDOM weights ({reason}): the feature targets are those of "
            "an untrained network. Fine for tests and plumbing runs; for real pretraining give DINOv2's weights "
            f"(--teacher-weights FILE.safetensors or network access).\n{'!' * 100}",
            stacklevel=3,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TEACHER_SEED)
            model = timm.create_model(name, pretrained=False, img_size=input_size, **model_kwargs)
        return model, f"random:{RANDOM_TEACHER_SEED}", ""

    needs: tuple[str, ...] = ("images",)  # the batch keys the teacher reads

    def features(self, batch: dict[str, Any], rows: Sequence[int] | None = None) -> Tensor:
        """(B', N, D, h, w) features of the batch's samples ``rows`` (all by default)."""
        images = batch["images"] if rows is None else batch["images"][list(rows)]
        return self(images)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """(B, N, 3, H, W) images normalised for the network -> (B, N, D, h, w) float32 features, rounded to
        ``storage_dtype``."""
        b, n = images.shape[:2]
        if tuple(images.shape[-2:]) != self.spec.image_size or n != len(self.spec.cameras):
            raise InputError(
                f"teacher: images of shape {tuple(images.shape)}, expected (B, {len(self.spec.cameras)}, 3, "
                f"{self.spec.image_size[0]}, {self.spec.image_size[1]}) as configured."
            )
        x = images.flatten(0, 1).float() * self.scale + self.shift
        if self.spec.input_size != self.spec.image_size:
            x = F.interpolate(x, size=self.spec.input_size, mode="bilinear", align_corners=False, antialias=True)
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]  # (B*N, h*w, D)
        h, w = self.spec.patch_grid
        maps = tokens.float().transpose(1, 2).reshape(b, n, -1, h, w)
        return maps.to(self.storage_dtype).float()


class SemanticTeacher(nn.Module):
    """The stand-in teacher for generated worlds: per-patch features from what a camera image shows, on the patch grid
    DINOv2 ViT-S/14 has at 224x480, relative to the image (16x34). It reads the renderer's side-car class maps
    (``NuScenesBEV(semantic_maps=True)``) and the image itself; no 3D labels and never the fine-tuning labels. A
    stand-in, named as one wherever it appears: its numbers are not OccFeat's with DINOv2.

    A pixel's feature is the sum of
    - its **class** vector: a unit vector per class (``SEMANTIC_CLASSES``); classes of one family
      (``SEMANTIC_FAMILIES``: the vehicles, the two-wheelers, road surfaces, ...) share ``family_share`` of it, so
      two subtypes (car, truck) have cosine ``family_share`` where unrelated classes have ~0, as an image model
      relates subtypes more than kinds;
    - its **appearance**: ``appearance_weight`` times a fixed random projection of a colour (RGB around mid-grey):
      for a pixel of an object, the object's mean colour in this image (the instance mask says which pixels are
      one object, as an image model groups them), else the pixel's own. So two cars differ as their paint differs,
      alike ones are alike, and all of one car's patches agree. This is the only instance component: nothing an
      image cannot show;
    - optionally ``instance_weight`` times a random vector per instance id (the earlier stand-in's; 0 by default,
      since no image can predict it).
    A patch is the mean over its pixels. The earlier regime's stand-in (bench/RESULTS.md, before issue 22) is
    ``patch=14, family_share=0, appearance_weight=0, instance_weight=0.5``.
    """

    def __init__(
        self,
        *,
        image_size: tuple[int, int],
        cameras: Sequence[str],
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        feature_dim: int = 384,
        patch: int | None = None,
        family_share: float = 0.5,
        appearance_weight: float = 1.0,
        instance_weight: float = 0.0,
        instance_buckets: int = 256,
        seed: int = RANDOM_TEACHER_SEED,
        storage_dtype: torch.dtype = torch.float16,
    ):
        super().__init__()
        from ..synthetic.semantic import SEMANTIC_CLASSES, SEMANTIC_FAMILIES

        if not 0.0 <= family_share < 1.0 or appearance_weight < 0 or instance_weight < 0:
            raise ConfigError(f"{STAND_IN_TEACHER} teacher: expected 0 <= family_share < 1 and non-negative weights.")
        # DINOv2's patch of 14 pixels at 224 rows, at this image height: 7 pixels at 112x240, a 16x34 grid.
        patch = patch or max(1, round(DINOV2_PATCH * image_size[0] / DINOV2_REFERENCE_HEIGHT))
        generator = torch.Generator().manual_seed(seed)
        own = F.normalize(torch.randn(len(SEMANTIC_CLASSES), feature_dim, generator=generator), dim=1)
        families = sorted(set(SEMANTIC_FAMILIES.values()))
        family = F.normalize(torch.randn(len(families), feature_dim, generator=generator), dim=1)
        family_of = torch.tensor([families.index(SEMANTIC_FAMILIES[c]) for c in SEMANTIC_CLASSES])
        classes = F.normalize(math.sqrt(family_share) * family[family_of] + math.sqrt(1 - family_share) * own, dim=1)
        instances = F.normalize(torch.randn(instance_buckets, feature_dim, generator=generator), dim=1)
        instances[0] = 0.0  # bucket 0: no instance
        colour = F.normalize(torch.randn(3, feature_dim, generator=generator), dim=1)
        self.register_buffer("class_embedding", classes, persistent=False)
        self.register_buffer("instance_embedding", instance_weight * instances, persistent=False)
        self.register_buffer("colour_projection", appearance_weight * colour, persistent=False)
        self.register_buffer("mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.needs: tuple[str, ...] = ("images", "semantic", "instance")
        self.storage_dtype = storage_dtype
        input_size = teacher_input_size(tuple(image_size), patch)
        self.spec = TeacherSpec(
            name=STAND_IN_TEACHER,
            weights=f"stand-in:classes={len(SEMANTIC_CLASSES)},families={len(families)},family_share={family_share},"
                    f"appearance_weight={appearance_weight},instance_weight={instance_weight},"
                    f"buckets={instance_buckets},patch={patch},seed={seed}",
            image_size=tuple(image_size), input_size=input_size, patch_grid=(input_size[0] // patch, input_size[1] // patch),
            feature_dim=feature_dim, cameras=tuple(cameras), storage_dtype=str(storage_dtype).replace("torch.", ""),
        )

    def features(self, batch: dict[str, Any], rows: Sequence[int] | None = None) -> Tensor:
        missing = [key for key in self.needs if key not in batch]
        if missing:
            raise InputError(
                f"the {STAND_IN_TEACHER!r} teacher needs the batch keys {missing}: build the dataset with "
                "NuScenesBEV(semantic_maps=True) on a world written with `occfeat synth --semantic-maps`."
            )
        pick = (lambda t: t) if rows is None else (lambda t: t[list(rows)])
        return self(pick(batch["images"]), pick(batch["semantic"]), pick(batch["instance"]))

    @torch.no_grad()
    def class_shares(self, semantic: Tensor) -> Tensor:
        """(B, N, H, W) class ids -> (B, N, C, h, w), the share of each class (``SEMANTIC_CLASSES``) in every patch.
        ``evaluate_pretraining``'s class-level reference samples it at the voxels exactly as the targets are."""
        b, n = semantic.shape[:2]
        h, w = self.spec.patch_grid
        shares = self._patch_shares(semantic.reshape(b * n, -1).long(), len(self.class_embedding), semantic.shape[-2:])
        return shares.transpose(1, 2).reshape(b, n, -1, h, w)

    def _patch_shares(self, codes: Tensor, size: int, image_hw: Sequence[int]) -> Tensor:
        """(M, H*W) codes in [0, size) -> (M, h*w, size): the share of each code among every patch's pixels."""
        patch, area = self._patches(*image_hw, codes.device)
        counts = torch.zeros(codes.shape[0], len(area) * size, device=codes.device)
        counts.scatter_add_(1, patch[None] * size + codes, torch.ones_like(codes, dtype=torch.float))
        return counts.view(codes.shape[0], len(area), size) / area[None, :, None]

    def _patches(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The patch of every pixel, (H*W,), and the pixels per patch, (h*w,)."""
        h, w = self.spec.patch_grid
        rows = torch.arange(height, device=device) * h // height
        cols = torch.arange(width, device=device) * w // width
        patch = (rows[:, None] * w + cols[None, :]).reshape(-1)
        return patch, torch.bincount(patch, minlength=h * w).clamp(min=1).float()

    @torch.no_grad()
    def forward(self, images: Tensor, semantic: Tensor, instance: Tensor) -> Tensor:
        """(B, N, 3, H, W) images normalised for the network, (B, N, H, W) class ids and instance ids (0: none) ->
        (B, N, D, h, w) float32 features, rounded to ``storage_dtype``."""
        b, n, height, width = semantic.shape
        if (height, width) != self.spec.image_size or n != len(self.spec.cameras) or images.shape[-2:] != semantic.shape[-2:]:
            raise InputError(
                f"{STAND_IN_TEACHER} teacher: images {tuple(images.shape)} and maps {tuple(semantic.shape)}, expected "
                f"(B, {len(self.spec.cameras)}, [3,] {self.spec.image_size[0]}, {self.spec.image_size[1]}) as configured."
            )
        device = self.class_embedding.device
        h, w = self.spec.patch_grid
        classes = self.class_shares(semantic.to(device)).flatten(3).transpose(2, 3).flatten(0, 1)  # (B*N, h*w, C)
        features = classes @ self.class_embedding
        # Appearance: a pixel of an object takes its object's mean colour in this image (what the object looks like:
        # one for all its pixels, different for a differently painted one); other pixels their own. RGB around
        # mid-grey, averaged per patch, projected.
        patch, area = self._patches(height, width, device)
        rgb = (images.to(device).flatten(0, 1).float() * self.std + self.mean - 0.5).flatten(2).transpose(1, 2)
        codes = instance.to(device).reshape(b * n, -1).long()  # (B*N, H*W), 0: no object
        rgb = torch.where((codes > 0)[..., None], _mean_per_code(rgb, codes), rgb)
        colour = rgb.new_zeros(b * n, h * w, 3).index_add_(1, patch, rgb) / area[None, :, None]
        features = features + colour @ self.colour_projection
        if self.instance_embedding.any():  # the earlier regime's random vector per instance
            buckets = torch.where(codes > 0, 1 + codes % (len(self.instance_embedding) - 1), 0)
            features = features + self._patch_shares(buckets, len(self.instance_embedding), (height, width)) @ self.instance_embedding
        return features.transpose(1, 2).reshape(b, n, -1, h, w).to(self.storage_dtype).float()


def _mean_per_code(values: Tensor, codes: Tensor) -> Tensor:
    """(M, P, K) values and (M, P) integer codes -> (M, P, K): every entry replaced by the mean over the entries of
    its row with the same code."""
    keys = torch.arange(codes.shape[0], device=codes.device)[:, None] * (int(codes.max()) + 1) + codes
    unique, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
    flat = values.reshape(-1, values.shape[-1])
    sums = flat.new_zeros(len(unique), flat.shape[1]).index_add_(0, inverse, flat)
    counts = torch.bincount(inverse, minlength=len(unique)).clamp(min=1)
    return (sums / counts[:, None])[inverse].view_as(values)


def build_teacher(
    name: str, *, image_size: tuple[int, int], weights: str | Path, image_mean: Sequence[float],
    image_std: Sequence[float], cameras: Sequence[str],
) -> Teacher | SemanticTeacher:
    """The teacher a recipe names: ``STAND_IN_TEACHER`` (generated worlds only; ``weights`` unused) or a timm ViT."""
    if name == STAND_IN_TEACHER:
        return SemanticTeacher(image_size=image_size, cameras=cameras, image_mean=image_mean, image_std=image_std)
    return Teacher(name, image_size=image_size, weights=weights, image_mean=image_mean, image_std=image_std,
                   cameras=cameras)


class TeacherCache:
    """Per-sample teacher features on disk, ``root/<spec.key>/<sample_token>.safetensors``. Picklable: data-loader
    workers read it."""

    def __init__(self, root: str | Path, spec: TeacherSpec):
        self.spec = spec
        self.folder = Path(root).expanduser() / spec.key
        self.folder.mkdir(parents=True, exist_ok=True)
        spec_file = self.folder / "teacher.json"
        if not spec_file.is_file():
            atomic_write(spec_file, lambda p: p.write_text(json.dumps(spec.to_dict(), indent=2) + "\n"))

    def path(self, token: str) -> Path:
        return self.folder / f"{token}.safetensors"

    def load(self, token: str) -> Tensor | None:
        """The sample's (N, D, h, w) features in ``storage_dtype``, or None when absent or stale."""
        from safetensors import safe_open

        path = self.path(token)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("key") != self.spec.key:
                    return None
                features = handle.get_tensor("features")
        except Exception:  # noqa: BLE001 (a truncated or foreign file is a cache miss, rewritten on store)
            return None
        return features if tuple(features.shape) == self.spec.map_shape else None

    def store(self, token: str, features: Tensor) -> None:
        from safetensors.torch import save_file

        dtype = getattr(torch, self.spec.storage_dtype)
        tensor = features.detach().to("cpu", dtype).contiguous()
        atomic_write(self.path(token), lambda p: save_file({"features": tensor}, str(p), metadata={"key": self.spec.key}))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.safetensors"))


class WithTeacherFeatures(torch.utils.data.Dataset):
    """A dataset whose items gain ``teacher_maps`` (N, D, h, w) from the cache (zeros when not cached yet) and
    ``teacher_cached`` (bool); the training step computes and stores the missing ones."""

    def __init__(self, dataset: Any, cache: TeacherCache):
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        features = self.cache.load(item["sample_token"])
        item["teacher_cached"] = torch.tensor(features is not None)
        item["teacher_maps"] = features if features is not None else torch.zeros(
            self.cache.spec.map_shape, dtype=getattr(torch, self.cache.spec.storage_dtype)
        )
        return item


def teacher_maps_for(batch: dict[str, Any], teacher: Teacher, cache: TeacherCache | None) -> Tensor:
    """(B, N, D, h, w) float32 teacher features of a batch: cached ones as loaded, the others computed now (and
    stored when there is a cache)."""
    if cache is None or "teacher_maps" not in batch:
        return teacher.features(batch)
    maps = batch["teacher_maps"].float()
    missing = (~batch["teacher_cached"].bool()).nonzero().flatten().tolist()
    if missing:
        computed = teacher.features(batch, missing)
        maps = maps.clone()
        maps[missing] = computed
        for row, i in enumerate(missing):
            cache.store(batch["sample_token"][i], computed[row])
    return maps
