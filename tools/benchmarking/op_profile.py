"""Where a compiled training step spends its time: TensorFlow's op profile, by category.

`profile_steps(run_steps)` traces a callable that runs training steps with
`tf.profiler`, reads the host plane of the trace (XSpace protobuf) and sums the
duration of every TensorFlow op executed, by category (`classify`). Op times
on the executor threads overlap when TF runs independent ops at once, so the
shares are of total op time, not of wall time. tools/benchmark.py's
`--sections=profile` prints them for each model (`sections.benchmark_profile`).
"""

import collections
import glob
import os
import re
import shutil
import tempfile

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

#: Categories in the order of the printed table.
CATEGORIES = (
    "convolution forward",
    "convolution backward",
    "BatchNorm",
    "element-wise",
    "classifiers",
    "loss and metrics",
    "optimizer",
    "copies and other",
)
_CONVOLUTIONS = re.compile(r"Conv2D|DepthwiseConv2dNative|Conv2DBackprop")
# A Keras BatchNormalization layer's scope ("stem_bn", "stem_bn_1") or its gradient's.
_BATCH_NORM = re.compile(r"(^|_)bn(_\d+)?(_grad)?$|batch_normalization|batch_norm")
_CLASSIFIER = re.compile(r"(^|_)(logits|pool)(_\d+)?$")
_ELEMENT_WISE = {
    "Relu", "ReluGrad", "AddV2", "Add", "AddN", "Sub", "Mul", "Neg", "Square", "Maximum",
    "Pad", "Slice", "ConcatV2", "Mean", "Sum", "Tile", "Select", "SelectV2",
}  # fmt: skip
_CLASSIFIER_TYPES = {"MatMul", "BiasAdd", "BiasAddGrad"}
_COPIES = {"Identity", "IdentityN", "Reshape", "Transpose", "Cast", "Pack", "_Send", "_Recv"}
_OPTIMIZER_TYPES = {"AssignSubVariableOp", "ResourceApplyGradientDescent"}
_LOSS_AND_METRIC_TYPES = {
    "SparseSoftmaxCrossEntropyWithLogits", "Softmax", "LogSoftmax", "Exp", "Log", "ArgMax",
    "Equal", "DivNoNan", "AssignAddVariableOp", "TopKV2", "InTopKV2",
}  # fmt: skip
# Wrappers whose events contain the ops they run.
# Where in the network an op runs: "shared_stage2", "sub1_stage3", "stage1", "fusion"...
_PART = re.compile(r"(?:^|/)((?:shared_|sub\d+_)?(?:stem|stage\d+)|fusion)")
_CONTAINERS = {"StatefulPartitionedCall", "PartitionedCall", "While", "If", "StatelessIf"}


def classify(op_name, op_type, network_scope, optimizer_scope="coupled_sgd"):
    """The category of one executed op, from its type and the scopes of its name.

    `network_scope` is the network's name (its ops run under "<name>" or
    "<name>_<k>", its gradients under "gradient_tape/<name>..."); the ops of
    the loss and the metrics have no scope, and gradient sums at fan-out
    points (AddN) none either.
    """
    scopes = op_name.split("/")[:-1]
    if _CONVOLUTIONS.search(op_type):
        return "convolution backward" if "Backprop" in op_type else "convolution forward"
    if any(_BATCH_NORM.search(scope) for scope in scopes):
        return "BatchNorm"
    if any(scope.startswith(optimizer_scope) for scope in scopes) or op_type in _OPTIMIZER_TYPES:
        return "optimizer"
    if any(_CLASSIFIER.search(scope) for scope in scopes) or op_type in _CLASSIFIER_TYPES:
        return "classifiers"
    if op_type in _COPIES:
        return "copies and other"
    in_network = any(scope.startswith(network_scope) for scope in scopes)
    if op_type in _ELEMENT_WISE and (in_network or op_type == "AddN"):
        return "element-wise"
    if op_type in _ELEMENT_WISE or op_type in _LOSS_AND_METRIC_TYPES:
        return "loss and metrics"
    return "copies and other"


def op_durations(xspace):
    """{(op name, op type): total picoseconds} of the ops executed on the host."""
    totals = collections.Counter()
    for plane in xspace.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        metadata = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                label = metadata[event.metadata_id].name
                if ":" not in label or "::" in label:
                    continue  # Not an op: an executor or thread-pool region.
                name, op_type = label.rsplit(":", 1)
                if op_type not in _CONTAINERS:
                    totals[(name, op_type)] += event.duration_ps
    return totals


def trace(run_steps):
    """Runs `run_steps()` under tf.profiler; returns its XSpace."""
    logdir = tempfile.mkdtemp(prefix="ffl_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        try:
            run_steps()
        finally:
            tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        xspace = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            xspace.ParseFromString(file.read())
        return xspace
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def profile_steps(run_steps, steps, network_scope, optimizer_scope="coupled_sgd"):
    """Op time per step by category: {"ms_per_step": {category: ms}, "top_ops": [...], "by_part": {...}}.

    `run_steps()` must run `steps` training steps. "top_ops" lists the 15 op
    types (by category) that took the most time, in ms per step; "by_part" the
    op time of each stage of each sub-network (forward and gradient), e.g.
    "shared_stage2", "sub2_stage3", "fusion".
    """
    durations = op_durations(trace(run_steps))
    per_category = collections.Counter()
    per_type = collections.Counter()
    per_part = collections.Counter()
    for (name, op_type), picoseconds in durations.items():
        part = _PART.search(name)
        per_part[part.group(1) if part else "other"] += picoseconds
        category = classify(name, op_type, network_scope, optimizer_scope)
        per_category[category] += picoseconds
        per_type[(category, op_type)] += picoseconds
    to_ms = 1e-9 / steps
    return {
        "ms_per_step": {c: per_category[c] * to_ms for c in CATEGORIES},
        "top_ops": [
            {"category": c, "op": t, "ms_per_step": v * to_ms}
            for (c, t), v in per_type.most_common(15)
        ],
        "by_part": {part: v * to_ms for part, v in sorted(per_part.items())},
    }
