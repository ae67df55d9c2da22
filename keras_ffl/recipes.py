"""The paper's training recipes, and a small one for CPU, as plain data.

A recipe holds the hyperparameters of a run. `python -m keras_ffl.fit` starts
from the recipe of the dataset's kind (or `--recipe`) and lets every flag given
on the command line override the matching field.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training recipe; each field is a flag of the same name.

    `arch` holds one architecture name (case 1: `branches` sub-networks, for
    FFL and ONE copies of its high-level stages on a shared trunk of
    `shared_stages` stages, None meaning the architecture's default) or several
    (case 2: independent sub-networks). `fusion_weight_decay` is the lower decay
    of a method's fusion layers (FFL's fusion module and fused classifier). A
    method's own options (e.g. FFL's temperature) are not recipe fields: they
    default to the method's values.
    `lr_milestones` are epochs at which the learning rate is multiplied by
    `lr_factor`. `steps_per_epoch` None means one pass over the training split,
    `validation_steps` None one pass over the test split.
    """

    arch: tuple[str, ...]
    branches: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    learning_rate: float
    lr_milestones: tuple[int, ...]
    rampup_epochs: int
    shared_stages: int | None = None
    lr_factor: float = 0.1
    weight_decay: float = 1e-4
    fusion_weight_decay: float = 1e-5
    top5: bool = False
    sync_bn: bool = False
    mixed_precision: str = "none"
    steps_per_epoch: int | None = None
    validation_steps: int | None = None


RECIPES = {
    # Paper §IV-A, CIFAR-10/100: 2 x ResNet-32 sharing all but the last stage.
    "cifar": Recipe(
        arch=("resnet32",),
        branches=2,
        epochs=300,
        batch_size=128,
        eval_batch_size=100,
        learning_rate=0.1,
        lr_milestones=(150, 225),
        rampup_epochs=80,
    ),
    # Paper §IV-B, ImageNet: 2 x ResNet-34, top-5 tracked.
    "imagenet": Recipe(
        arch=("resnet34",),
        branches=2,
        epochs=90,
        batch_size=256,
        eval_batch_size=256,
        learning_rate=0.1,
        lr_milestones=(30, 60),
        rampup_epochs=20,
        top5=True,
    ),
    # Not in the paper: the CIFAR recipe scaled down to 6 epochs for Fashion-MNIST-sized
    # data (the offline default); docs/RESULTS.md gives its accuracy and cost.
    "small": Recipe(
        arch=("resnet8",),
        branches=2,
        epochs=6,
        batch_size=128,
        eval_batch_size=500,
        learning_rate=0.1,
        lr_milestones=(3, 5),
        rampup_epochs=2,
    ),
}


#: Method options a recipe sets for every method that has them (the option's own
#: default applies elsewhere). Paper §IV-B: ImageNet's fusion module keeps sum(C_k)
#: channels. The small recipe's 6 epochs hold Table VII's DualNet schedule scaled
#: down (256 iterative epochs of 307): 5 iterative epochs, then 1 joint.
OPTION_DEFAULTS = {"imagenet": {"fusion_channels": "sum"}, "small": {"iterative_epochs": 5}}


def get_recipe(name):
    """Returns the `Recipe` called `name` ("cifar", "imagenet" or "small")."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Known recipes: {', '.join(RECIPES)}.")
    return RECIPES[name]
