"""OccFeat pretraining (``docs/method.md``): Lidar-occupancy and DINOv2-feature targets, the auxiliary head that unsplats
the BEV map into a 3D volume, the losses, the recipes, the training loop on the shared engine, and the export that
drops the head and hands the BEV network to the zoo."""

from .._callable import make_callable
from .head import MODES, OccFeatHead
from .losses import OccFeatLoss
from .model import OccFeatPretrainer
from .recipes import RECIPES, PretrainRecipe, get_recipe
from .targets import Targets, build_targets, occupancy_grid, voxelize
from .teacher import (
    DEFAULT_TEACHER,
    STAND_IN_TEACHER,
    SemanticTeacher,
    Teacher,
    TeacherCache,
    TeacherWeightsError,
    build_teacher,
)
from .training import PretrainResult, evaluate_pretraining, export_pretrain_run, pretrain

__all__ = [
    "DEFAULT_TEACHER",
    "STAND_IN_TEACHER",
    "SemanticTeacher",
    "build_teacher",
    "MODES",
    "OccFeatHead",
    "OccFeatLoss",
    "OccFeatPretrainer",
    "PretrainRecipe",
    "PretrainResult",
    "RECIPES",
    "Targets",
    "Teacher",
    "TeacherCache",
    "TeacherWeightsError",
    "build_targets",
    "evaluate_pretraining",
    "export_pretrain_run",
    "get_recipe",
    "occupancy_grid",
    "pretrain",
    "voxelize",
]


make_callable(__name__, "pretrain")  # occfeat.pretrain(...) runs a pretraining: occfeat.pretrain.training.pretrain
