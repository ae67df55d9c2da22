"""Reproduces the paper's claims at small scale on real Fashion-MNIST, offline.

Over several seeds it trains: a vanilla sub-network; a second one to form the
averaged 2-net ensemble; FFL (case 1, two branches); and the paper's Table II
ablations (B: averaging instead of the fusion module, C: without EKD, D:
without EKD and FKD). Each run's per-epoch test accuracies are stored under
--output_dir (finished runs are skipped on a rerun), and the report — a table of
top-1 error (mean ± std over seeds), a plot of test accuracy per head over
epochs, and a reading of each claim — is written to --docs_dir/RESULTS.md.

    python tools/reproduce.py                  # everything (about an hour on 2 CPU cores)
    python tools/reproduce.py --report_only    # redraw the report from finished runs
"""

import json
import os
import time

from absl import app, flags

_FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/reproduction", "Where each run's results go.")
flags.DEFINE_string("docs_dir", "docs", "Where RESULTS.md and the plot are written.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name (keras_ffl.data).")
flags.DEFINE_string("data_dir", None, "Directory with the dataset's files, if not the default.")
flags.DEFINE_string("arch", "resnet8", "Sub-network architecture.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every configuration runs once per seed.")
flags.DEFINE_integer("epochs", 10, "Epochs per run.")
flags.DEFINE_integer("steps_per_epoch", 120, "Training steps per epoch (120 x 128 = 15,360 images).")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_float("learning_rate", 0.1, "Initial learning rate; x0.1 at 50% and 75% of the epochs.")
flags.DEFINE_bool("report_only", False, "Only rebuild the report from finished runs.")

# name -> (label, method, options). Letters are the rows of the paper's Table II.
CONFIGS = {
    "vanilla": ("Vanilla sub-network", "vanilla", {}),
    "vanilla_b": ("Second vanilla (for the 2-net ensemble)", "vanilla", {}),
    "ffl": ("FFL (A: fusion module, EKD, FKD)", "ffl", {}),
    "ffl_average": ("B: averaging instead of the fusion module", "ffl", {"fusion": "average"}),
    "ffl_no_ekd": ("C: without EKD", "ffl", {"ekd": False}),
    "ffl_no_kd": ("D: without EKD and FKD", "ffl", {"ekd": False, "fkd": False}),
}
# The second vanilla network must differ from the first: another initialisation and data order.
SEED_OFFSET = {"vanilla_b": 1000}


def recipe(epochs):
    """The paper's CIFAR recipe scaled to `epochs`: LR drops at 50%/75%, ramp-up over 80/300."""
    return {
        "milestones": (epochs // 2, (3 * epochs) // 4),
        "rampup_epochs": max(1, round(epochs * 80 / 300)),
    }


def train_run(name, seed, run_dir):
    """Trains one configuration with one seed; writes run.json (and test logits for vanilla)."""
    import keras
    import numpy as np

    from keras_ffl import data, training
    from keras_ffl.heads import SUB_MEAN

    label, method, options = CONFIGS[name]
    run_seed = seed + SEED_OFFSET.get(name, 0)
    keras.utils.set_random_seed(run_seed)
    spec = data.get_spec(_FLAGS.dataset)
    train = data.make_dataset(
        spec, "train", _FLAGS.batch_size, data_dir=_FLAGS.data_dir, training=True, seed=run_seed
    ).repeat()
    test = data.make_dataset(spec, "test", 500, data_dir=_FLAGS.data_dir, training=False)
    plan = recipe(_FLAGS.epochs)
    # The training command's own model: the same recipe, resolved the same way.
    config = training.resolve_config(
        _FLAGS.dataset,
        method=method,
        recipe="small",
        seed=run_seed,
        data_dir=_FLAGS.data_dir,
        arch=(_FLAGS.arch,),
        epochs=_FLAGS.epochs,
        steps_per_epoch=_FLAGS.steps_per_epoch,
        batch_size=_FLAGS.batch_size,
        learning_rate=_FLAGS.learning_rate,
        lr_milestones=plan["milestones"],
        rampup_epochs=plan["rampup_epochs"],
        **options,
    )
    model = training.build_model(config)
    start = time.time()
    history = model.fit(
        train,
        epochs=_FLAGS.epochs,
        steps_per_epoch=_FLAGS.steps_per_epoch,
        validation_data=test,
        verbose=2,
    ).history
    if method == "vanilla":
        accuracy = {"net": history[f"val_{model.primary_head}_acc"]}
        # Kept to score the averaged ensemble of two independently trained networks.
        logits = model.predict(test, verbose=0)[model.primary_head]
        np.save(os.path.join(run_dir, "test_logits.npy"), logits)
        labels = np.concatenate([y for _, y in test.as_numpy_iterator()])
        np.save(os.path.join(run_dir, "test_labels.npy"), labels)
    else:
        heads = model.metric_heads + [SUB_MEAN]
        accuracy = {head: history[f"val_{head}_acc"] for head in heads}
    result = {
        "config": name,
        "label": label,
        "seed": run_seed,
        "arch": _FLAGS.arch,
        "epochs": _FLAGS.epochs,
        "steps_per_epoch": _FLAGS.steps_per_epoch,
        "batch_size": _FLAGS.batch_size,
        "seconds": time.time() - start,
        "test_accuracy": {head: [float(v) for v in values] for head, values in accuracy.items()},
    }
    _write_json(os.path.join(run_dir, "run.json"), result)
    return result


def _write_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def _run_dir(name, seed):
    return os.path.join(_FLAGS.output_dir, f"{name}_seed{seed}")


def load_runs(seeds):
    """{config: {seed: run.json}} of the finished runs."""
    runs = {}
    for name in CONFIGS:
        for seed in seeds:
            path = os.path.join(_run_dir(name, seed), "run.json")
            if os.path.exists(path):
                with open(path) as f:
                    runs.setdefault(name, {})[seed] = json.load(f)
    return runs


def main(argv):
    del argv
    seeds = [int(s) for s in _FLAGS.seeds]
    if not _FLAGS.report_only:
        for seed in seeds:
            for name in CONFIGS:
                run_dir = _run_dir(name, seed)
                if os.path.exists(os.path.join(run_dir, "run.json")):
                    continue
                os.makedirs(run_dir, exist_ok=True)
                print(f"== {name}, seed {seed}", flush=True)
                train_run(name, seed, run_dir)
    import reproduction_report  # beside this file

    reproduction_report.write_report(
        load_runs(seeds), _FLAGS.output_dir, _FLAGS.docs_dir, command=_command_line()
    )


def _command_line():
    """The command that regenerates the report, with the flags that differ from defaults."""
    args = [
        f"--{name}={','.join(value) if isinstance(value, list) else value}"
        for name, value in sorted(_FLAGS.flag_values_dict().items())
        if name in _OWN_FLAGS and _FLAGS[name].present and name != "report_only"
    ]
    return " ".join(["python tools/reproduce.py", *args])


_OWN_FLAGS = {
    "output_dir", "docs_dir", "dataset", "data_dir", "arch", "seeds", "epochs",
    "steps_per_epoch", "batch_size", "learning_rate",
}


if __name__ == "__main__":
    app.run(main)
