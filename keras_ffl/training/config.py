"""A run's configuration: the recipe's values resolved for a method and a dataset, and checked.

`RunConfig` is what a run directory's config.json holds. Errors name the
Python arguments of `resolve_config` (see `keras_ffl.arguments`); the command
line names its flags instead.
"""

import dataclasses
import json

from keras_ffl import data, methods, recipes, validation
from keras_ffl.arguments import ArgumentsError
from keras_ffl.models import get_architecture, network_input_convention
from keras_ffl.models.graph_backbone import GraphBackbone
from keras_ffl.run_dir import RunError
from keras_ffl.validation import ArgumentError

#: Keys of config.json that may change when a run resumes: the epoch count may
#: grow, and the recipe's name only says where the values came from.
RESUMABLE_CHANGES = ("epochs", "recipe")
#: `--mixed_precision` values and the Keras dtype policies they select.
DTYPE_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(recipes.Recipe):
    """Everything that defines a run: the method and its options, the recipe's values
    resolved, the data, the seed.

    It is what config.json holds, so it also carries the dataset facts that an
    exporter needs (classes, input shape, normalisation).
    """

    method: str
    method_options: dict
    dataset: str
    recipe: str
    seed: int
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: Recipe fields the method's `adapt_recipe` set (the user gave none of them). Not
    #: saved: a run started when the method adapted them otherwise resumes with its own.
    adapted: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    def to_json(self):
        """The configuration as JSON-compatible values (tuples become lists)."""
        values = dataclasses.asdict(self)
        del values["adapted"]
        return json.loads(json.dumps(values))

    @property
    def method_class(self):
        """The `MultiHeadModel` subclass of the run's method."""
        return methods.get_method(self.method)

    @property
    def best_metric(self):
        """The history column that selects best.keras: the primary head's test accuracy."""
        return f"val_{self.method_class.primary_head}_acc"


def resolve_config(
    dataset, *, method="ffl", recipe=None, seed=0, data_dir=None, weights=None, image_size=None,
    **overrides,
):
    """Returns the `RunConfig` of a run of `method` on `dataset`.

    Values come from `recipe` (default: the dataset's recipe kind) and the
    method's option defaults, with `overrides` (any `recipes.Recipe` field or
    option of the method, e.g. the flags given on the command line) taking
    precedence. `arch` may be one name (case 1) or several (case 2, where
    `branches` is their number). `steps_per_epoch` defaults to one pass over the
    training split in full batches. `weights` and `image_size` apply to every
    Keras Applications (and `weights` to every file:) architecture that does not
    set its own; the images are normalised to the architectures' input convention
    (`keras_ffl.models.network_input_convention`), else with the dataset's statistics.
    """
    method_class = methods.get_method(method)
    data.check_dataset(dataset, data_dir)
    spec = data.get_spec(dataset, data_dir)
    recipe_name = recipe or spec.recipe
    fields = {f.name for f in dataclasses.fields(recipes.Recipe)}
    option_names = {o.name for o in method_class.options}
    given = set(overrides)
    unknown = sorted(given - fields - option_names)
    if unknown:
        raise ArgumentsError(_unknown_settings_message(method, unknown, fields, option_names))
    options = {
        k: v for k, v in recipes.OPTION_DEFAULTS.get(recipe_name, {}).items() if k in option_names
    }
    options.update((k, v) for k, v in overrides.items() if k in option_names)
    overrides = {k: v for k, v in overrides.items() if k in fields}
    values = dataclasses.asdict(dataclasses.replace(recipes.get_recipe(recipe_name), **overrides))

    names = _architecture_names(values["arch"])
    # Canonical names, so that "ResNet-32" and "resnet32" make the same run.
    archs = [get_architecture(name, weights=weights, image_size=image_size) for name in names]
    values["arch"] = tuple(arch.name for arch in archs)
    if (weights, image_size) != (None, None) and not any(
        isinstance(arch, GraphBackbone) for arch in archs
    ):
        raise ArgumentsError(
            "{arg:weights} and {arg:image_size} apply to keras: and file: architectures; "
            f"{','.join(values['arch'])} trains from scratch at the data's size. Leave them out."
        )
    convention = network_input_convention(archs)
    if convention is not None:
        convention = convention.for_channels(spec.image_shape[-1])
    values["branches"] = _resolve_branches(method_class, values, overrides)
    if overrides.get("shared_stages") is not None and (
        len(values["arch"]) > 1 or not method_class.shares_trunk
    ):
        raise ArgumentsError(
            "{arg:shared_stages} applies to one architecture with branches on a shared trunk "
            f"(case 1 of {', '.join(_trunk_sharing_methods())}); sub-networks of several "
            f"architectures, and those of {{arg:method}}={method}, share nothing. Leave it out."
        )
    if values["mixed_precision"] not in DTYPE_POLICIES:
        raise ArgumentError(
            "mixed_precision",
            f"{{arg}} must be one of {sorted(DTYPE_POLICIES)}; got {values['mixed_precision']!r}.",
        )
    values["lr_milestones"] = tuple(sorted(int(m) for m in values["lr_milestones"]))
    network_options, model_options = method_class.split_options(options)
    validation.check_hyperparameters(values)
    _check_batches(spec, values, data_dir)
    recipe_values = values
    values = method_class.adapt_recipe(values, {**network_options, **model_options}, given)
    adapted = tuple(sorted(k for k in values if values[k] != recipe_values[k]))
    return RunConfig(
        **values,
        method=method,
        method_options={**network_options, **model_options},
        dataset=spec.name,
        recipe=recipe_name,
        seed=int(seed),
        num_classes=spec.num_classes,
        image_shape=tuple(int(d) for d in spec.image_shape),
        mean=tuple(float(m) for m in (convention or spec).mean),
        std=tuple(float(s) for s in (convention or spec).std),
        adapted=adapted,
    )


def _architecture_names(arch):
    """The names in `arch` (one name, a comma list, or a list); a model object is refused,
    since a run records its architectures by name in config.json to resume from it."""
    names = arch.split(",") if isinstance(arch, str) else (
        list(arch) if isinstance(arch, (list, tuple)) else [arch]
    )
    for name in names:
        if not isinstance(name, str):
            label = getattr(name, "name", getattr(name, "__name__", type(name).__name__))
            raise ArgumentError(
                "arch",
                f"{{arg}} is a Python object ({label}); a run records its architectures by "
                "name in config.json, to resume from them — save the model "
                f"(model.save('{label}.keras')) and pass {{arg}}='file:{label}.keras'. "
                "To build a method's network from the object itself, use "
                "get_method(method).create(model, ...)",
            )
    return names


def _check_batches(spec, values, data_dir):
    """Fills in `steps_per_epoch` (one pass in full batches) and refuses batches the
    splits cannot give.

    The training pipeline repeats, so any `steps_per_epoch` trains as long as the
    split holds one full batch; the test split is read once, so `validation_steps`
    cannot exceed its batches. Either would otherwise end an epoch early, Keras
    only warning that the input ran out of data.
    """
    examples = data.num_examples(spec, "train", data_dir)
    batches = examples // values["batch_size"]
    if not batches:
        raise ArgumentsError(
            f"{spec.name}'s training split has {examples} examples, fewer than one batch of "
            f"{{arg:batch_size}}={values['batch_size']}, so no training step can run — pass "
            f"{{arg:batch_size}}={examples} or less"
        )
    if values["steps_per_epoch"] is None:
        values["steps_per_epoch"] = batches
    if values["validation_steps"] is None:
        return
    examples = data.num_examples(spec, "test", data_dir)
    batches = -(-examples // values["eval_batch_size"])
    if values["validation_steps"] > batches:
        raise ArgumentsError(
            f"{{arg:validation_steps}}={values['validation_steps']} needs that many test "
            f"batches, but {spec.name}'s test split of {examples} examples gives {batches} "
            f"of {{arg:eval_batch_size}}={values['eval_batch_size']} — pass "
            f"{{arg:validation_steps}}={batches} or less, or leave it out for the whole split"
        )


def _resolve_branches(method_class, values, overrides):
    """The number of sub-networks: the architectures' count in case 2, the method's
    fixed number if it has one, else `branches`."""
    count = len(values["arch"])
    given = overrides.get("branches")
    fixed = method_class.fixed_subnetworks
    if count > 1:
        if given is not None and given != count:
            raise ArgumentsError(
                f"{{arg:branches}}={given} contradicts the {count} architectures of "
                f"{{arg:arch}}={','.join(values['arch'])}; with several architectures (case 2) "
                "leave {arg:branches} out."
            )
        if fixed is not None and fixed != count:
            raise ArgumentsError(
                f"{{arg:method}}={method_class.method_name} trains {fixed} sub-network(s); "
                f"{{arg:arch}}={','.join(values['arch'])} names {count}. "
                f"Give {fixed} architecture(s)."
            )
        return count
    if fixed is not None and given is not None and given != fixed:
        raise ArgumentsError(
            f"{{arg:method}}={method_class.method_name} trains {fixed} sub-network(s); "
            f"leave {{arg:branches}} out (got {{arg:branches}}={given})."
        )
    return method_class.resolve_subnetworks(values["branches"])


def _trunk_sharing_methods():
    return [m for m in methods.method_names() if methods.get_method(m).shares_trunk]


def _unknown_settings_message(method, unknown, fields, option_names):
    owners = {
        name: [m for m in methods.method_names()
               if name in {o.name for o in methods.get_method(m).options}]
        for name in unknown
    }
    other = [f"{n} (an option of {{arg:method}}={'/'.join(o)})" for n, o in owners.items() if o]
    unknown = [n for n, o in owners.items() if not o]
    parts = []
    if other:
        parts.append(
            f"{{arg:method}}={method} does not take {', '.join(other)}; its options: "
            f"{', '.join(sorted(option_names)) or 'none'}."
        )
    if unknown:
        parts.append(f"Unknown settings {unknown}; recipe fields: {sorted(fields)}.")
    return " ".join(parts)


def check_same_run(saved, config, model_dir):
    """The configuration to resume the run `saved` (a config.json's dict) with: `config`,
    with the directory's values of the fields the method adapted (see
    `RunConfig.adapted`). Raises a RunError naming the keys (method options by name)
    in which the two differ otherwise."""
    current = config.to_json()
    kept = {
        key: tuple(saved[key]) if isinstance(saved[key], list) else saved[key]
        for key in config.adapted
        if key in saved and saved[key] != current[key]
    }
    config = dataclasses.replace(config, **kept)
    saved, current = _flat_config(saved), _flat_config(config.to_json())
    keys = sorted((saved.keys() | current.keys()) - set(RESUMABLE_CHANGES))
    differences = [
        f"{key}: {saved.get(key)!r} in the directory, {current.get(key)!r} now"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise RunError(
            f"{model_dir} holds a run with a different configuration, so it cannot be "
            f"resumed with these settings ({'; '.join(differences)}) — rerun with the "
            "directory's settings to resume it, or choose a new {arg:model_dir}"
        )
    return config


def _flat_config(config):
    """config.json's values with the method's options at the top level."""
    flat = {k: v for k, v in config.items() if k != "method_options"}
    flat.update(config.get("method_options") or {})
    return flat
