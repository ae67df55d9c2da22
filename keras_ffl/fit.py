"""Trains a model: python -m keras_ffl.fit [--method=ffl] --dataset=<name> --model_dir=<dir> [flags].

--method picks FFL (the default) or one of the baselines the paper compares it
with (vanilla, ensemble, dml, one, dualnet); each method's options are flags.

Hyperparameters default to a recipe (the paper's "cifar" or "imagenet", or
"small" for a CPU), chosen by the dataset unless --recipe is given; every flag
given explicitly overrides the recipe's value. Rerunning a command with an
existing --model_dir resumes its run (--epochs may be raised to extend it).
One process at a time may write a model directory.

An error is reported in one line, "keras_ffl.fit: error: <what> — <how to fix
it>", with exit status 1 (130 after Ctrl-C); --verbosity=1 adds its traceback.
A start that is refused writes nothing into a new --model_dir, and one that fails
before its first epoch is saved removes what it wrote. TensorFlow's start-up
lines are hidden (any --verbosity shows them); the command says in one line
whether it found GPUs, and in another how large the model is.

Examples:
  python -m keras_ffl.fit --dataset=fashion_mnist --model_dir=runs/fashion_mnist
  python -m keras_ffl.fit --dataset=cifar100 --model_dir=runs/c100 --arch=resnet32 --branches=3
  python -m keras_ffl.fit --dataset=cifar100 --model_dir=runs/c100_case2 --arch=resnet32,wrn16_2
  python -m keras_ffl.fit --method=vanilla --dataset=cifar100 --model_dir=runs/c100_vanilla
  python -m keras_ffl.fit --dataset=fashion_mnist --model_dir=runs/fm_mobile \
      --arch='keras:MobileNetV3Small?alpha=0.75&minimalistic=true' --image_size=32
  python -m keras_ffl.fit --dataset=fashion_mnist --model_dir=runs/mine --arch=file:my_model.keras
"""

import dataclasses
import re
import sys
import traceback

from keras_ffl import quiet

#: The GPUs TensorFlow found, listed while its start-up lines are hidden.
GPUS = quiet.start_up()

from absl import app, flags, logging  # noqa: E402

from keras_ffl import distribute, methods, recipes, run_dir, training  # noqa: E402
from keras_ffl.arguments import flag_message  # noqa: E402
from keras_ffl.models import ARCHITECTURE_HELP  # noqa: E402

_FROM_RECIPE = " Default: the recipe's."

# What to train, and where.
flags.DEFINE_enum(
    "method",
    "ffl",
    methods.method_names(),
    "Training method: "
    + "; ".join(f"{m}: {methods.get_method(m).summary}" for m in methods.method_names()),
)
flags.DEFINE_string(
    "dataset",
    "fashion_mnist",
    "cifar10, cifar100, imagenet2012 (prepared TFDS data), fashion_mnist (Debian's IDX "
    "files, offline), folder:<dir> (a sub-folder of images per class) or idx:<dir> "
    "(MNIST-format IDX files).",
)
flags.DEFINE_string(
    "data_dir", None, "Where the dataset's files are (TFDS data_dir, or IDX files)."
)
flags.DEFINE_string(
    "model_dir",
    None,
    "Directory of the run: config, checkpoints (last.keras, best.keras), history.csv, "
    "TensorBoard logs, results.json. An existing one is resumed.",
)
flags.mark_flag_as_required("model_dir")
flags.DEFINE_enum(
    "recipe",
    None,
    list(recipes.RECIPES),
    "Preset of every hyperparameter below: cifar (paper, 300 epochs), imagenet (paper, "
    "90 epochs) or small (a few epochs on a CPU). Default: the dataset's kind.",
)

# The networks.
flags.DEFINE_list(
    "arch",
    None,
    "One architecture (FFL case 1: --branches copies of its last stages on a shared "
    f"trunk) or a comma list (case 2: independent sub-networks). Names: {ARCHITECTURE_HELP}."
    + _FROM_RECIPE,
)
flags.DEFINE_string(
    "weights",
    None,
    "keras: and file: architectures: start every copy from these weights, 'imagenet' "
    "(downloaded by Keras) or a weights file's path. Default: fresh weights.",
)
flags.DEFINE_integer(
    "image_size",
    None,
    "keras: architectures: resize the images to this size inside the network (training, "
    "evaluation and export alike), e.g. 32 for a family whose minimum is 32x32.",
)
flags.DEFINE_integer("branches", None, "Number of sub-networks in case 1." + _FROM_RECIPE)
flags.DEFINE_integer(
    "shared_stages",
    None,
    "Case 1: stages (the stem is stage 0) shared by the branches. Default: the "
    "architecture's (all but the last stage for CIFAR ResNets).",
)
flags.DEFINE_boolean(
    "sync_bn", None, "Synchronise BatchNorm statistics across replicas." + _FROM_RECIPE
)

# The objective.
flags.DEFINE_integer(
    "rampup_epochs",
    None,
    "R of the distillation weight's ramp-up exp(-5 (1 - epoch/R)^2); 0: no ramp-up."
    + _FROM_RECIPE,
)
flags.DEFINE_boolean("top5", None, "Also report top-5 accuracy." + _FROM_RECIPE)

# The optimisation.
flags.DEFINE_integer("epochs", None, "Epochs to train; raise it to extend a run." + _FROM_RECIPE)
flags.DEFINE_integer(
    "batch_size", None, "Global training batch, split over the replicas." + _FROM_RECIPE
)
flags.DEFINE_integer("eval_batch_size", None, "Global test batch." + _FROM_RECIPE)
flags.DEFINE_float("learning_rate", None, "Initial learning rate." + _FROM_RECIPE)
flags.DEFINE_list(
    "lr_milestones",
    None,
    "Epochs at which the learning rate is multiplied by --lr_factor, e.g. 150,225."
    + _FROM_RECIPE,
)
flags.DEFINE_float("lr_factor", None, "Learning-rate multiplier at each milestone." + _FROM_RECIPE)
flags.DEFINE_float(
    "weight_decay", None, "Coupled L2 decay of the sub-networks' weights." + _FROM_RECIPE
)
flags.DEFINE_float(
    "fusion_weight_decay",
    None,
    "Coupled L2 decay of the fusion module and fused classifier." + _FROM_RECIPE,
)
flags.DEFINE_integer(
    "steps_per_epoch",
    None,
    "Training steps per epoch, for quick runs. Default: one pass over the training split.",
)
flags.DEFINE_integer(
    "validation_steps",
    None,
    "Test batches evaluated per epoch, for quick runs. Default: the whole test split.",
)
flags.DEFINE_enum(
    "mixed_precision",
    None,
    list(training.DTYPE_POLICIES),
    "Compute in float16 (GPU) or bfloat16 (TPU) with float32 variables; none: float32."
    + _FROM_RECIPE,
)
flags.DEFINE_integer("seed", 0, "Seed of weight initialisation and data shuffling.")

# How to run it; these may change when a run resumes.
flags.DEFINE_enum(
    "strategy",
    "auto",
    list(distribute.STRATEGIES),
    "tf.distribute strategy: auto (mirrored on several GPUs, else one device), "
    "one_device, mirrored (all local GPUs), multi_worker_mirrored (workers from "
    "TF_CONFIG) or tpu.",
)
flags.DEFINE_string("tpu", "", "With --strategy=tpu: the TPU's name or grpc:// address.")
flags.DEFINE_boolean(
    "jit_compile", None, "Compile steps with XLA. Default: on GPU/TPU only (slower on CPU)."
)
flags.DEFINE_integer(
    "verbose", 1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch."
)

#: Flags that override the recipe field of the same name.
RECIPE_FLAGS = [f.name for f in dataclasses.fields(recipes.Recipe)]
FLAGS = flags.FLAGS


def _define_option_flags():
    """One flag per method option, shared by the methods that have an option of that name.

    Its default is None: each method then takes its own default (or the recipe's).
    """
    by_name = {}
    for method in methods.method_names():
        for option in methods.get_method(method).options:
            by_name.setdefault(option.name, []).append((method, option))
    for name, owners in sorted(by_name.items()):
        option = owners[0][1]
        defaults = ", ".join(f"{m}: {o.default}" for m, o in owners)
        help_text = f"{option.help} Methods and defaults: {defaults}."
        if option.choices is not None:
            flags.DEFINE_enum(name, None, [str(c) for c in option.choices], help_text)
        elif isinstance(option.default, bool):
            flags.DEFINE_boolean(name, None, help_text)
        elif isinstance(option.default, int):
            flags.DEFINE_integer(name, None, help_text)
        elif isinstance(option.default, float):
            flags.DEFINE_float(name, None, help_text)
        else:
            flags.DEFINE_string(name, None, help_text)
    return sorted(by_name)


#: Flags of the methods' options.
OPTION_FLAGS = _define_option_flags()


@flags.validator("lr_milestones", "--lr_milestones must be a comma list of epochs, e.g. 150,225.")
def _check_milestones(value):
    return value is None or all(m.strip().isdigit() for m in value)


def recipe_overrides(flag_values):
    """The recipe fields and method options given on the command line, as
    `training.resolve_config` takes them."""
    overrides = {}
    for name in RECIPE_FLAGS + OPTION_FLAGS:
        value = flag_values[name].value
        if value is None:
            continue
        if name == "arch":
            value = tuple(value)
        elif name == "lr_milestones":
            value = tuple(int(m) for m in value)
        overrides[name] = value
    return overrides


def parse_flags(argv):
    """Parses the command line as absl does, reporting a bad flag in one line."""
    try:
        return FLAGS(argv)
    except flags.Error as err:
        _fail(f"{' '.join(str(err).split())} — see `python -m keras_ffl.fit --helpfull`")


def describe_error(err):
    """One line "<what> — <how to fix it>" for an exception the command met.

    Library errors name Python arguments; the message names their flags
    instead (`arguments.flag_message`). OSErrors of the file system get a fix
    by their errno.
    """
    if isinstance(err, OSError) and err.errno is not None:
        message = run_dir.describe_os_error(err)
    elif isinstance(err, (run_dir.RunError, ValueError, OSError)):
        message = flag_message(err)
    else:
        message = (
            f"unexpected {type(err).__name__}: {err} — rerun with --verbosity=1 to see its "
            "traceback, and report it"
        )
    text = " ".join(message.split())
    if " — " in text:
        return text
    # A message written as "<what>. <fix>." or "<what>; <fix>.".
    what, *fix = re.split(r"(?<=[.;]) (?=[A-Za-z])", text, maxsplit=1)
    fix = fix[0] if fix else "see `python -m keras_ffl.fit --helpfull` for the flags"
    return f"{what.rstrip('.;')} — {fix}"


def _fail(message):
    print(f"keras_ffl.fit: error: {message}", file=sys.stderr)
    sys.exit(1)


def _train():
    strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu)
    config = training.resolve_config(
        FLAGS.dataset,
        method=FLAGS.method,
        recipe=FLAGS.recipe,
        seed=FLAGS.seed,
        data_dir=FLAGS.data_dir,
        weights=FLAGS.weights,
        image_size=FLAGS.image_size,
        **recipe_overrides(FLAGS),
    )
    run = training.prepare(
        config,
        FLAGS.model_dir,
        strategy=strategy,
        data_dir=FLAGS.data_dir,
        jit_compile=FLAGS.jit_compile,
    )
    print(run.describe(), flush=True)
    print(run.describe_model(), flush=True)
    return run.fit(verbose=FLAGS.verbose)


def main(argv):
    debug = FLAGS.verbosity >= logging.DEBUG
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS's INFO lines would bury the output.
    try:
        if len(argv) > 1:
            raise ValueError(
                f"Unexpected arguments: {' '.join(argv[1:])} — pass every setting as "
                "--flag=value"
            )
        print(quiet.describe_gpus(GPUS), flush=True)
        results = _train()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("keras_ffl.fit: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # Every error ends in one line; the traceback is for debugging.
        if debug:
            traceback.print_exc()
        _fail(describe_error(err))
    print(training.format_results(results))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
