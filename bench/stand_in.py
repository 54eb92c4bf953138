"""How the stand-in teacher's patch features separate what a generated world's images show (issue 22).

    python bench/stand_in.py            # a 3-scene world with semantic maps, 112x240 images; about a minute

For every camera patch that one class covers to >= 90 %, the mean cosine between patches of: the same class; one
family but another class (car vs truck, road vs kerb); other families. Instances: the mean cosine between patches of
two different vehicle instances of the same class, and the relative spread of a class's patches (what an image model's
features vary by within a class). The earlier stand-in (random per-instance vectors, 8x17 grid) is printed beside the
current one. These are a stand-in's figures, not DINOv2's.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.nn.functional as F

from occfeat.data import NuScenesBEV
from occfeat.pretrain import SemanticTeacher
from occfeat.synthetic import SEMANTIC_CLASSES, generate_world
from occfeat.synthetic.semantic import SEMANTIC_FAMILIES

EARLIER = dict(patch=14, family_share=0.0, appearance_weight=0.0, instance_weight=0.5)


def pure_patches(teacher: SemanticTeacher, data: NuScenesBEV) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit features, class and instance of every patch that one class and one instance cover to >= 90 %."""
    features, classes, instances = [], [], []
    h, w = teacher.spec.patch_grid
    for index in range(len(data)):
        item = data[index]
        maps = teacher.features({k: v[None] for k, v in item.items() if k in ("images", "semantic", "instance")})[0]
        share, kind = F.adaptive_avg_pool2d(F.one_hot(item["semantic"], len(SEMANTIC_CLASSES)).permute(0, 3, 1, 2).float(),
                                            (h, w)).max(dim=1)
        # The instance covering most of each patch (0: none), by the same pooling over instance ids seen.
        ids = item["instance"].unique()
        cover, which = F.adaptive_avg_pool2d((item["instance"][:, None] == ids[None, :, None, None]).float(), (h, w)).max(1)
        keep = (share > 0.9) & ((ids[which] == 0) | (cover > 0.9))
        features.append(maps.permute(0, 2, 3, 1)[keep])
        classes.append(kind[keep])
        instances.append(ids[which][keep])
    return F.normalize(torch.cat(features), dim=1), torch.cat(classes), torch.cat(instances)


def figures(features: torch.Tensor, classes: torch.Tensor, instances: torch.Tensor) -> dict[str, float]:
    cosine = features @ features.T
    family = torch.tensor([sorted(set(SEMANTIC_FAMILIES.values())).index(SEMANTIC_FAMILIES[SEMANTIC_CLASSES[c]])
                           for c in classes.tolist()])
    same_class = classes[:, None] == classes[None, :]
    same_family = (family[:, None] == family[None, :]) & ~same_class
    vehicle = torch.tensor([SEMANTIC_FAMILIES[SEMANTIC_CLASSES[c]] == "vehicle" for c in classes.tolist()])
    two_instances = same_class & (instances[:, None] != instances[None, :]) & vehicle[:, None] & (instances[:, None] > 0)
    one_instance = same_class & (instances[:, None] == instances[None, :]) & (instances[:, None] > 0)
    off_diagonal = ~torch.eye(len(classes), dtype=torch.bool)
    return {"same class": cosine[same_class & off_diagonal].mean().item(),
            "same family, other class": cosine[same_family].mean().item() if same_family.any() else float("nan"),
            "other family": cosine[~same_class & ~same_family].mean().item(),
            "one vehicle instance": cosine[one_instance & off_diagonal & vehicle[:, None]].mean().item(),
            "two vehicles of one class": cosine[two_instances].mean().item() if two_instances.any() else float("nan"),
            "patches": float(len(classes))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--image-size", type=int, nargs=2, default=(112, 240))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        world = generate_world(folder, scenes=args.scenes, samples_per_scene=4, image_hw=(180, 320), seed=3,
                               semantic_maps=True, progress=False)
        data = NuScenesBEV(world.dataroot, world.version, "all", image_size=tuple(args.image_size), labels=False,
                           semantic_maps=True)
        print(f"| stand-in | grid | {' | '.join(['same class', 'same family, other class', 'other family', 'one vehicle instance', 'two vehicles of one class', 'patches'])} |")
        print("| --- | --- |" + " ---: |" * 6)
        for name, options in (("earlier (random instance vectors)", EARLIER), ("current (families + appearance)", {})):
            teacher = SemanticTeacher(image_size=tuple(args.image_size), cameras=data.cameras, **options)
            row = figures(*pure_patches(teacher, data))
            h, w = teacher.spec.patch_grid
            print(f"| {name} | {h}x{w} | " + " | ".join(f"{v:.0f}" if k == "patches" else f"{v:.3f}"
                                                      for k, v in row.items()) + " |")


if __name__ == "__main__":
    main()
