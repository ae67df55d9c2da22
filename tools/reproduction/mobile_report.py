"""The mobile study's section of docs/RESULTS.md: FFL and its baselines with a
MobileNetV3Small-family sub-network (`mobile`), read claim by claim as the paper's
comparisons are, and set beside the same claims on the reproduction's ResNet."""

import os

import numpy as np

from reproduction import mobile
from reproduction.plots import plot_curves
from reproduction.protocol import ARCH as RESNET_ARCH, SUB1, SUB2, flag_args
from reproduction.runs import cost, load_curves, training_accuracy
from reproduction.verdicts import VERDICTS, final_errors, fmt, paired_gain, shown_gain, verdict
from keras_ffl.heads import ENSEMBLE, SUB_MEAN

#: The arch spec with the protocol's image size, as the parameter count builds it.
_SIZED_ARCH = f"{mobile.ARCH}&image_size={mobile.PROTOCOL['image_size']}"


def count_parameters():
    """Trainable parameters of every mobile run's network on Fashion-MNIST, and of the
    vanilla mobile network ("vanilla")."""
    from keras_ffl import quiet

    quiet.start_up()  # TensorFlow starts here, its C++ start-up lines hidden.
    from keras_ffl.parameter_counts import trainable_parameters

    shape = (28, 28, 1)
    counts = {"vanilla": trainable_parameters("vanilla", _SIZED_ARCH, 1, 10, shape)}
    for name, (method, options) in mobile.RUNS.items():
        arch = options.get("arch", _SIZED_ARCH)
        if isinstance(arch, tuple):
            arch = tuple(_SIZED_ARCH if a == mobile.ARCH else a for a in arch)
        network_options = {k: v for k, v in options.items() if k == "shared_stages"}
        counts[name] = trainable_parameters(method, arch, options.get("branches", 2), 10, shape,
                                            **network_options)
    return counts


def mobile_section(output_dir, docs_dir, seeds, resnet_err, parameters=None):
    """The section's markdown lines; draws its plot into docs_dir.

    `resnet_err` is the reproduction's {run: {head: {seed: error}}}, for the same claims'
    gains on the ResNet; `parameters` as count_parameters() returns (computed when None).
    """
    curves = load_curves(output_dir, seeds, mobile.RUNS)
    err = {
        name: {head: final_errors(curves, name, head)
               for head in set().union(*(set(h) for h in by_seed.values()))}
        for name, by_seed in curves.items()
    }
    parameters = count_parameters() if parameters is None else parameters
    plot_curves(curves, os.path.join(docs_dir, mobile.PLOT), "MobileNetV3Small sub-networks",
                mobile.PLOT_SERIES, mobile.label)
    return [
        *_protocol(output_dir, seeds, curves),
        *_table(output_dir, err, curves, parameters),
        f"![Mobile study curves]({mobile.PLOT})",
        "",
        *_claims(err),
        *_beside_the_resnet(err, resnet_err),
        *_commands(output_dir, docs_dir),
    ]


def _protocol(output_dir, seeds, curves):
    cpu, wall = cost(output_dir, mobile.RUNS)
    finished = sum(len(curves.get(name, {})) for name in mobile.RUNS)
    protocol = {k: v for k, v in mobile.PROTOCOL.items() if k != "arch"}
    return [
        "## A mobile network: FFL with MobileNetV3Small sub-networks",
        "",
        "Does FFL help a modern mobile network, and its sub-network as much as the "
        f"ResNet's above? The same data, recipe, schedule and seeds as the reproduction, "
        f"with `--arch={mobile.ARCH}` and `{' '.join(flag_args(protocol))}`: "
        "Keras's MobileNetV3Small without its top, at width 0.75 with the minimalistic "
        "blocks (no squeeze-excite, no hard-swish), trained from scratch on the 28×28 "
        "images resized to 32×32 inside the network (the family's smallest input, where "
        "its last feature map is 1×1). Its BatchNorm momentum is 0.9, as keras_ffl's own "
        "backbones', instead of the family's 0.999: from scratch at learning rate 0.1 "
        "for 8 passes, the moving statistics at 0.999 lag the weights, and every head's "
        "test accuracy falls far below its training accuracy. In case 1 (FFL, ONE) the "
        "branches are the blocks at the last resolution (the default split) on a shared "
        "trunk: at this input size each branch starts with block 8's strided depthwise "
        "convolution, which takes the trunk's 2×2 map to 1×1, and everything after it "
        "sees one pixel, so the branches are small per-pixel networks on the same "
        "features. FFL is also trained with nothing shared (`--shared_stages=0`: two whole "
        "networks and the fusion module, as DML's peers are), which tells the trunk's "
        "effect from the distillation's. The vanilla network is each member of the "
        "2-net. Every head is read at the last pass: top-1 test error (%), mean ± sample "
        f"standard deviation over seeds {', '.join(str(s) for s in seeds)}.",
        "",
        f"Finished runs: {finished} of {len(mobile.RUNS) * len(seeds)}, costing {cpu:.1f} "
        f"CPU-hours ({wall:.1f} wall hours summed, trained two at a time).",
        "",
    ]


def _table(output_dir, err, curves, parameters):
    lines = [
        "| network | parameters | net 1 | net 2 | sub-networks | combined head "
        "| averaging the sub-networks' logits gains | sub-networks' training accuracy, "
        "last pass |",
        "|---|---|---|---|---|---|---|---|",
        f"| vanilla (each member of the 2-net) | {_count(parameters, 'vanilla')} "
        f"| | | {fmt(err.get(mobile.MOBILE_VANILLA[0], {}).get(SUB_MEAN, {}))} | | | |",
    ]
    for name, what, head in mobile.TABLE:
        errors = err.get(name, {})
        cells = [fmt(errors.get(h, {})) for h in (SUB1, SUB2, SUB_MEAN)]
        averaging = _gain(err, (name, SUB_MEAN), (name, ENSEMBLE))
        trained = [training_accuracy(output_dir, name, seed, SUB_MEAN)
                   for seed in curves.get(name, {})]
        accuracy = f"{np.mean(trained):.2f}%" if trained else "—"
        lines.append(f"| {what} | {_count(parameters, name)} | {' | '.join(cells)} "
                     f"| {mobile.HEAD_LABELS[head]}: {fmt(errors.get(head, {}))} "
                     f"| {'—' if averaging is None else shown_gain(*averaging[:2])} "
                     f"| {accuracy} |")
    return lines + [
        "",
        "Averaging the sub-networks' logits gains as much as they disagree: the gain "
        "(error points, paired by seed) measures how different the sub-networks are, "
        "which is what online distillation feeds on.",
        "",
    ]


def _count(parameters, name):
    return f"{parameters[name]:,}" if name in parameters else "—"


def _claims(err):
    lines = [
        "The comparisons, as the paper's claims are read above (gain: error reduction in "
        "points, paired by seed, mean ± standard error; the same verdicts):",
        "",
        "| comparison | the paper's claim it mirrors | gain here | seeds | verdict |",
        "|---|---|---|---|---|",
    ]
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in mobile.CLAIMS:
        gain = _gain(err, claim.worse, claim.better)
        if gain is None:
            lines.append(f"| {claim.text} | {claim.where} | — | 0 | not run yet |")
            continue
        mean, error, n = gain
        counts[verdict(mean, error)] += 1
        lines.append(f"| {claim.text} | {claim.where} | {shown_gain(mean, error)} | {n} "
                     f"| {verdict(mean, error)} |")
    return lines + [
        "",
        f"Of {len(mobile.CLAIMS)} comparisons: "
        + ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + ".",
        "",
    ]


def _gain(err, worse, better):
    return paired_gain(err.get(worse[0], {}).get(worse[1], {}),
                       err.get(better[0], {}).get(better[1], {}))


def _beside_the_resnet(err, resnet_err):
    lines = [
        f"The same comparisons on each backbone (gain in error points, paired by seed; "
        f"the ResNet's from the reproduction's `{RESNET_ARCH}` runs):",
        "",
        f"| comparison | `{RESNET_ARCH}` | MobileNetV3Small |",
        "|---|---|---|",
    ]
    for text, resnet, mobile_claim in mobile.GAIN_COMPARISON:
        shown = []
        for errors, (worse, better) in ((resnet_err, resnet), (err, mobile_claim)):
            gain = _gain(errors, worse, better)
            shown.append("—" if gain is None else shown_gain(*gain[:2]))
        lines.append(f"| {text} | {' | '.join(shown)} |")
    return lines + [""]


def _commands(output_dir, docs_dir):
    run = os.path.join(output_dir, "mobile_ffl", "seed0")
    case2 = os.path.join(output_dir, "mobile_ffl_case2", "seed0")
    vanilla = os.path.join(output_dir, "mobile_ensemble", "seed0")
    names = ",".join(mobile.RUNS)
    return [
        "Train (or resume) only this study, then export its FFL run's heads (a plain-Keras "
        "`.keras` mobile sub-network among them) and draw Grad-CAM of the case-2 run, "
        "whose ResNet's 7×7 map shows where it looks (the mobile network's 1×1 map at "
        "this input size makes its heat map uniform):",
        "",
        f"    python tools/reproduce.py --runs={names}",
        f"    python tools/export.py --model_dir={run} --export_dir=export/mobile --name=mobile_ffl",
        f"    python tools/gradcam.py --model_dir={case2} --compare={vanilla} "
        f"--output={os.path.join(docs_dir, mobile.GRADCAM)}",
        "",
        *([f"![Grad-CAM of the case-2 run]({mobile.GRADCAM})", ""]
          if os.path.exists(os.path.join(docs_dir, mobile.GRADCAM)) else []),
    ]
