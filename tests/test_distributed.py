"""Two replicas of MirroredStrategy train exactly like one device on the same global batch."""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from keras_ffl import FFLModel, build_ffl_network, ffl_sgd

    def train(strategy, initial_weights):
        with strategy.scope():
            network = build_ffl_network(
                "resnet8", 5, (8, 8, 3), sync_bn=True, fusion_channels="sum"
            )
            model = FFLModel(network, rampup_epochs=0)
            model.compile(optimizer=ffl_sgd(0.1))
        if initial_weights is not None:
            model.set_weights(initial_weights)
        start = model.get_weights()
        rng = np.random.RandomState(0)
        x = rng.randn(16, 8, 8, 3).astype("float32")
        y = rng.randint(0, 5, 16).astype("int32")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = model.fit(data, epochs=1, verbose=0, shuffle=False)
        return start, model.get_weights(), history.history["loss"][0]

    keras.utils.set_random_seed(0)
    start, single, single_loss = train(tf.distribute.OneDeviceStrategy("/cpu:0"), None)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    _, multi, multi_loss = train(mirrored, start)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(start, single))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(single, multi))
    print(json.dumps({"single_loss": single_loss, "multi_loss": multi_loss,
                      "moved": moved, "diff": diff}))
    """
)


@pytest.mark.slow
def test_two_replicas_match_one_device():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["moved"] > 1e-3  # two steps changed the weights
    assert values["multi_loss"] == pytest.approx(values["single_loss"], rel=1e-5)
    assert values["diff"] < 1e-5, values
