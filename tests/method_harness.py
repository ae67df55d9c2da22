"""A shared test harness for training methods: subclass `MethodTests` per method.

Each method's test file declares `class TestX(MethodTests): method = "x"` and adds
the tests of its own loss; the harness checks what every method must do: build
the heads it declares, take its own defaults, log every head's metrics, train
under `model.fit` (also in mixed float16 and bfloat16), learn a learnable toy
problem, survive a `.keras` round trip, train identically on two MirroredStrategy
replicas and on one device, export every head, and run as a `keras_ffl.fit` run.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_ffl import get_method, training
from keras_ffl.export import export_savedmodels, serving
from keras_ffl.export.exporter import keras_probabilities
from keras_ffl.heads import SUB_MEAN

NUM_CLASSES = 4
IMAGE_SHAPE = (12, 12, 3)


def learnable_data(n=512, size=12, classes=NUM_CLASSES, seed=0):
    """Images whose class is the bright quadrant, under noise: easy but not trivial."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, classes, n).astype("int32")
    x = rng.randn(n, size, size, 3).astype("float32")
    half = size // 2
    for i, c in enumerate(y):
        r, s = divmod(int(c), 2)
        x[i, r * half : (r + 1) * half, s * half : (s + 1) * half, :] += 1.5
    return x, y


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from keras_ffl import get_method

    method, variants = sys.argv[1], json.loads(sys.argv[2])

    def train(strategy, initial_weights, kwargs):
        with strategy.scope():
            model = get_method(method).create("resnet8", 5, (8, 8, 3), sync_bn=True, **kwargs)
            model.compile(optimizer=model.make_optimizer(0.1))
        if initial_weights is not None:
            model.set_weights(initial_weights)
        start = model.get_weights()
        rng = np.random.RandomState(0)
        x = rng.randn(16, 8, 8, 3).astype("float32")
        y = rng.randint(0, 5, 16).astype("int32")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = model.fit(data, epochs=1, verbose=0, shuffle=False)
        iterations = int(model.optimizer.iterations.value.read_value())
        return start, model.get_weights(), history.history["loss"][0], iterations

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    results = []
    for kwargs in variants:
        keras.utils.set_random_seed(0)
        start, single, single_loss, _ = train(
            tf.distribute.OneDeviceStrategy("/cpu:0"), None, kwargs
        )
        _, multi, multi_loss, iterations = train(mirrored, start, kwargs)
        moved = max(float(np.abs(a - b).max()) for a, b in zip(start, single))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(single, multi))
        results.append({"single_loss": single_loss, "multi_loss": multi_loss,
                        "moved": moved, "diff": diff, "iterations": iterations})
    print(json.dumps(results))
    """
)


def assert_two_replicas_match_one_device(method, variants):
    """Two MirroredStrategy replicas train `method` like one device on the same global
    batches, and advance the optimizer's step once per global batch; `variants` are the
    keyword arguments of each model tried (one process for all of them)."""
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, method, json.dumps(list(variants))],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for kwargs, values in zip(variants, json.loads(result.stdout.strip().splitlines()[-1])):
        assert values["moved"] > 1e-3, kwargs  # two steps changed the weights
        assert values["multi_loss"] == pytest.approx(values["single_loss"], rel=1e-5), kwargs
        assert values["diff"] < 1e-5, (kwargs, values)
        assert values["iterations"] == 2, (kwargs, values)  # 16 examples, global batch 8


def dtype(tensor):
    """A tensor's dtype as Keras names it, e.g. "float32"."""
    return keras.backend.standardize_dtype(tensor.dtype)


class MethodTests:
    """What every method must do. Subclasses set `method` and may set `options`,
    `branches` (default: the method's, see `MultiHeadModel.resolve_subnetworks`)
    and `arch`."""

    method: str
    options: dict = {}
    branches: int | None = None
    arch = "resnet8"
    #: Options besides `options` under which two replicas must match one device.
    mirrored_variants: tuple = ({},)

    @property
    def method_class(self):
        return get_method(self.method)

    @property
    def num_subnetworks(self):
        return self.method_class.resolve_subnetworks(self.branches)

    def make_model(self, learning_rate=0.05, **overrides):
        kwargs = {"branches": self.num_subnetworks, "rampup_epochs": 2, **self.options}
        kwargs.update(overrides)
        model = self.method_class.create(self.arch, NUM_CLASSES, IMAGE_SHAPE, **kwargs)
        model.compile(optimizer=model.make_optimizer(learning_rate))
        return model

    def test_network_has_the_declared_heads(self):
        model = self.make_model()
        assert model.heads == self.method_class.heads_of(self.num_subnetworks)
        assert model.primary_head in model.heads + ["ensemble"]
        logits = model(np.zeros((2, *IMAGE_SHAPE), "float32"))
        for head in model.heads:
            assert tuple(logits[head].shape) == (2, NUM_CLASSES), head

    def test_create_takes_the_methods_defaults(self):
        model = self.method_class.create(self.arch, NUM_CLASSES, IMAGE_SHAPE)
        assert model.num_subnetworks == self.method_class.resolve_subnetworks()
        assert model.rampup_epochs == self.method_class.default_rampup_epochs
        config = model.get_config()
        for option in self.method_class.options:
            if not option.network:
                assert config[option.name] == option.default, option.name

    @pytest.mark.slow
    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision_trains_with_float32_variables_logits_and_losses(self, policy):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            model = self.make_model()
        finally:
            keras.config.set_dtype_policy(previous)
        x, y = learnable_data(32)
        logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history  # 2 steps
        assert all(np.isfinite(v[0]) for v in logs.values()), logs
        # Weights and BatchNorm statistics stay float32; layers compute in the policy's
        # half type, and every head's logits come out in float32 for a stable softmax.
        assert {v.dtype for v in model.network.variables} == {"float32"}
        compute = keras.DTypePolicy(policy).compute_dtype
        first = model.network.get_layer(f"{model.sub_heads[0]}_features").output
        assert first.dtype == compute
        logits = model.network(x[:4], training=False)
        assert {h: dtype(logits[h]) for h in model.heads} == {h: "float32" for h in model.heads}
        terms = model.loss_terms(y[:4], {h: ops.cast(z, compute) for h, z in logits.items()})
        assert {dtype(t) for t in terms.values()} == {"float32"}

    @pytest.fixture(scope="class")
    def trained(self):
        """A model after one epoch of `fit` with validation, and its logs (built once
        per method: building and tracing is most of a test's time)."""
        x, y = learnable_data(32)
        model = self.make_model()
        logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                         validation_data=(x, y)).history
        return model, logs

    def test_fit_logs_every_heads_metrics(self, trained):
        model, logs = trained
        expected = {"loss", "distill_weight", *model.logged_terms}
        expected |= {f"{h}_loss" for h in model.heads}
        expected |= {f"{h}_acc" for h in model.metric_heads}
        if model.num_subnetworks >= 2:
            expected.add(f"{SUB_MEAN}_acc")
        assert expected | {f"val_{k}" for k in expected - {"distill_weight"}} <= set(logs)
        assert all(np.isfinite(v[0]) for v in logs.values())

    def test_keras_round_trip_keeps_weights_options_and_optimizer_state(self, trained, tmp_path):
        x, _ = learnable_data(32)
        model, _ = trained
        path = tmp_path / f"{self.method}.keras"
        model.save(path)
        restored = keras.saving.load_model(path)
        assert type(restored) is type(model)
        options = {k: v for k, v in model.get_config().items() if k != "network"}
        assert {k: v for k, v in restored.get_config().items() if k != "network"} == options
        assert int(restored.optimizer.iterations) == int(model.optimizer.iterations)
        for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        expected, actual = model.predict(x, verbose=0), restored.predict(x, verbose=0)
        for head in model.heads:
            np.testing.assert_allclose(actual[head], expected[head], atol=1e-6)

    def test_export_writes_every_head(self, trained, tmp_path):
        model, _ = trained
        mean, std = (127.5,) * 3, (64.0,) * 3
        result = export_savedmodels(model, tmp_path, "m", mean=mean, std=std)
        names = sorted(m.name for m in result.models)
        assert names == sorted(f"m_{h}" for h in model.heads)
        images = np.random.default_rng(0).integers(0, 256, (4, *IMAGE_SHAPE), dtype=np.uint8)
        import tensorflow as tf

        for exported in result.models:
            head = exported.name.removeprefix("m_")
            served = serving.serve_probabilities(tf.saved_model.load(exported.path), images)
            expected = keras_probabilities(model.network, head, images, mean, std)
            np.testing.assert_allclose(served, expected, atol=1e-5)

    @pytest.mark.slow
    def test_few_hundred_steps_lift_every_head_well_above_chance(self):
        x, y = learnable_data(1024)
        x_test, y_test = learnable_data(256, seed=1)
        model = self.make_model()
        model.fit(x, y, batch_size=32, epochs=8, verbose=0)  # 256 steps
        logs = model.evaluate(x_test, y_test, return_dict=True, verbose=0)
        for head in model.metric_heads:
            assert logs[f"{head}_acc"] > 0.8, (head, logs)  # chance is 0.25

    @pytest.mark.slow
    def test_two_replicas_match_one_device(self):
        # rampup_epochs 0: w = 1, so the distillation terms count fully.
        assert_two_replicas_match_one_device(
            self.method,
            [{"branches": self.num_subnetworks, "rampup_epochs": 0, **self.options, **variant}
             for variant in self.mirrored_variants],
        )

    @pytest.mark.slow
    def test_a_training_run_reports_every_head(self, tmp_path):
        config = training.resolve_config(
            "fashion_mnist", method=self.method, arch=(self.arch,), epochs=1,
            steps_per_epoch=2, validation_steps=1, batch_size=16, eval_batch_size=50,
            **({"branches": self.branches} if self.branches else {}), **self.options,
        )
        results = training.train(config, str(tmp_path / "run"), verbose=0)
        heads = set(self.method_class.metric_heads_of(config.branches))
        if config.branches >= 2:
            heads.add(SUB_MEAN)
        assert set(results["test_accuracy"]) == heads
        assert config.best_metric == f"val_{self.method_class.primary_head}_acc"
