"""Prints every method's trainable parameters in the paper's CIFAR-100 configurations,
and on a mobile backbone from Keras Applications (MobileNetV3Small).

    python tools/param_counts.py                    # every method, every configuration
    python tools/param_counts.py --methods=ffl,ensemble
"""

from keras_ffl import quiet

quiet.start_up()  # TensorFlow's C++ start-up lines hidden, unless asked for.

from absl import app, flags  # noqa: E402

from keras_ffl import parameter_counts  # noqa: E402
from keras_ffl.methods import method_names  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", None, f"Methods to count (default: all of {method_names()}).")

#: A mobile backbone counted as the paper's are: FFL case 1 against the 2-net ensemble.
MOBILE_CONFIGURATIONS = {
    "MobileNetV3Small": ("keras:MobileNetV3Small", 2),
    "MobileNetV3Small a0.75 min.": ("keras:MobileNetV3Small?alpha=0.75&minimalistic=true", 2),
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    methods = FLAGS.methods or method_names()
    unknown = sorted(set(methods) - set(method_names()))
    if unknown:
        raise app.UsageError(f"Unknown --methods {unknown}; known: {method_names()}.")
    table = parameter_counts.parameter_table(
        methods, {**parameter_counts.PAPER_CONFIGURATIONS, **MOBILE_CONFIGURATIONS}
    )
    width = max(len(name) for name in table) + 2
    print("Trainable parameters, CIFAR-100 (32x32x3, 100 classes); '-': not defined there")
    print(f"{'configuration':<{width}}" + "".join(f"{m:>12}" for m in methods))
    for name, row in table.items():
        cells = [f"{row[m]:>12,}" if isinstance(row[m], int) else f"{'-':>12}" for m in methods]
        print(f"{name:<{width}}" + "".join(cells))


if __name__ == "__main__":
    app.run(main)
