"""Trainable parameter counts of every method in the paper's CIFAR-100 configurations.

The paper gives counts for FFL and the 2-net ensemble (Table VI); counting every
method the same way shows what each comparison costs.
"""

import keras

from keras_ffl.methods import get_method, method_names

#: The paper's CIFAR-100 sub-network configurations: name -> (architectures, branches).
#: One architecture is case 1 (ResNet-32 with 3 branches is Table III's); a pair is
#: case 2 (Table V's Pair1 and Pair2).
PAPER_CONFIGURATIONS = {
    "ResNet-32": ("resnet32", 2),
    "ResNet-56": ("resnet56", 2),
    "WRN-16-2": ("wrn16_2", 2),
    "WRN-40-2": ("wrn40_2", 2),
    "ResNet-32 x3": ("resnet32", 3),
    "Pair1 (ResNet-32 & WRN-16-2)": (("resnet32", "wrn16_2"), 2),
    "Pair2 (ResNet-56 & WRN-40-2)": (("resnet56", "wrn40_2"), 2),
}


def trainable_parameters(method, architectures, branches=2, num_classes=100,
                         input_shape=(32, 32, 3), **network_options):
    """Trainable parameters of `method`'s network; a method with a fixed number of
    sub-networks (vanilla) takes the first architecture alone. `network_options`
    (e.g. shared_stages) go to the method's network as the training command's do."""
    method_class = get_method(method)
    if method_class.fixed_subnetworks == 1:
        architectures = architectures if isinstance(architectures, str) else architectures[0]
        branches = 1
    network = method_class.build_network(
        architectures, num_classes, input_shape, branches=branches, **network_options
    )
    count = sum(int(keras.ops.size(v)) for v in network.trainable_variables)
    keras.backend.clear_session()
    return count


def parameter_table(methods=None, configurations=None):
    """{configuration: {method: count, or the reason the method cannot build it}}."""
    table = {}
    for name, (architectures, branches) in (configurations or PAPER_CONFIGURATIONS).items():
        row = table.setdefault(name, {})
        for method in methods or method_names():
            try:
                row[method] = trainable_parameters(method, architectures, branches)
            except ValueError as err:
                row[method] = str(err)
    return table
