"""The mobile study's protocol, as data: FFL and its baselines with a MobileNetV3Small-family
sub-network on Fashion-MNIST, under the reproduction's recipe and seeds.

The question it answers: does FFL help a modern mobile network, and its sub-network as
much as the reproduction's ResNet's? Runs, flags and claims take the shapes of
`protocol` (RUNS, PROTOCOL, Claim), so the reproduction's runner and report can read
them; the claims are read as docs/RESULTS.md reads the paper's (paired gain over seeds,
standard error).
"""

from reproduction.protocol import (
    GATED,
    HEAD_LABELS as RESNET_HEAD_LABELS,
    PROTOCOL as RESNET_PROTOCOL,
    SUB2,
    VANILLA,
    Claim,
)
from keras_ffl.heads import ENSEMBLE, FUSED, SUB_MEAN

#: Reduced width and the minimalistic blocks (no squeeze-excite, no hard-swish) train on
#: 2 cores; 32x32 is the family's minimum, resized from Fashion-MNIST's 28x28 inside the
#: network (so the exported models take the dataset's own images).
#: BatchNorm momentum 0.9, as keras_ffl's own backbones: with the family's 0.999 the
#: moving statistics lag the weights at this schedule, and every head's test accuracy
#: falls far below its training accuracy.
ARCH = "keras:MobileNetV3Small?alpha=0.75&minimalistic=true&bn_momentum=0.9"

#: The reproduction's schedule and recipe, with the mobile backbone and its input size.
PROTOCOL = {**RESNET_PROTOCOL, "arch": ARCH, "image_size": 32}

#: Run name -> (method, flags besides PROTOCOL's). As in the reproduction, the vanilla
#: network is the 2-net's members (each trained alone with cross-entropy on the same
#: batches). FFL and ONE share the trunk up to the family's default split (the blocks
#: at the last resolution branched), two branches each; FFL is also trained with
#: nothing shared (`shared_stages=0`: two whole networks and the fusion module), as
#: DML's peers are, to tell the shared trunk's effect from the distillation's.
RUNS = {
    "mobile_ffl": ("ffl", {}),
    "mobile_ensemble": ("ensemble", {}),
    "mobile_dml": ("dml", {}),
    "mobile_one": ("one", {"branches": 2}),
    "mobile_ffl_unshared": ("ffl", {"shared_stages": 0}),
    "mobile_ffl_case2": ("ffl", {"arch": ("resnet8x0.5", ARCH)}),
}

#: The vanilla mobile network and the head that reads it.
MOBILE_VANILLA = ("mobile_ensemble", SUB_MEAN)

#: The section's table, one row per run: (run, what it is, its combined head). The
#: 2-net's members are the vanilla network.
TABLE = (
    ("mobile_ensemble", "2-net: two vanilla networks, averaged logits", ENSEMBLE),
    ("mobile_dml", "DML: two peers", ENSEMBLE),
    ("mobile_one", "ONE: two branches on a shared trunk, gated", GATED),
    ("mobile_ffl", "FFL: two branches on a shared trunk, fused", FUSED),
    ("mobile_ffl_unshared", "FFL, nothing shared: two whole networks, fused", FUSED),
    ("mobile_ffl_case2", "FFL, case 2: resnet8x0.5 (net 1) & the mobile network (net 2)",
     FUSED),
)

#: Labels of the runs in the claims and the plot.
RUN_LABELS = {
    "mobile_ensemble": "2-net", "mobile_dml": "DML", "mobile_one": "ONE",
    "mobile_ffl": "FFL", "mobile_ffl_unshared": "FFL (nothing shared)",
    "mobile_ffl_case2": "FFL case 2",
}
HEAD_LABELS = {**RESNET_HEAD_LABELS, SUB2: "mobile net 2"}


def label(name, head):
    """A run's head as the section names it ("FFL fused", "vanilla" for MOBILE_VANILLA)."""
    if (name, head) == MOBILE_VANILLA:
        return "vanilla (2-net members)"
    return f"{RUN_LABELS[name]} {HEAD_LABELS[head]}"


CLAIMS = [
    Claim("FFL's sub-networks beat a vanilla network", "mobile",
          MOBILE_VANILLA, ("mobile_ffl", SUB_MEAN), None, "Table IV"),
    Claim("FFL's sub-networks beat ONE's branches", "mobile",
          ("mobile_one", SUB_MEAN), ("mobile_ffl", SUB_MEAN), None, "Table III"),
    Claim("FFL's fused classifier beats ONE's gated teacher", "mobile",
          ("mobile_one", GATED), ("mobile_ffl", FUSED), None, "Table III"),
    Claim("FFL's fused classifier beats its own sub-networks", "mobile",
          ("mobile_ffl", SUB_MEAN), ("mobile_ffl", FUSED), None, "Table II, A"),
    Claim("Nothing shared: FFL's sub-networks beat a vanilla network", "mobile",
          MOBILE_VANILLA, ("mobile_ffl_unshared", SUB_MEAN), None, "Table IV"),
    Claim("Nothing shared: FFL's sub-networks beat DML's peers", "mobile",
          ("mobile_dml", SUB_MEAN), ("mobile_ffl_unshared", SUB_MEAN), None, "Table V"),
    Claim("Nothing shared: FFL's fused classifier beats the 2-net ensemble", "mobile",
          ("mobile_ensemble", ENSEMBLE), ("mobile_ffl_unshared", FUSED), None, "Table VI"),
    Claim("Case 2: the mobile network fused with a ResNet beats a vanilla one", "mobile",
          MOBILE_VANILLA, ("mobile_ffl_case2", SUB2), None, "Table V"),
    Claim("Sharing the trunk helps FFL's sub-networks", "mobile",
          ("mobile_ffl_unshared", SUB_MEAN), ("mobile_ffl", SUB_MEAN), None,
          "case 1 as the paper defines it"),
]

#: The comparison with the reproduction: the same comparison's gain on each backbone,
#: the ResNet's read from the reproduction's runs (protocol.RUNS) of the same seeds.
GAIN_COMPARISON = (
    ("FFL's sub-networks beat a vanilla network",
     (VANILLA, ("ffl", SUB_MEAN)), (MOBILE_VANILLA, ("mobile_ffl", SUB_MEAN))),
    ("FFL's fused classifier beats its own sub-networks",
     (("ffl", SUB_MEAN), ("ffl", FUSED)), (("mobile_ffl", SUB_MEAN), ("mobile_ffl", FUSED))),
    ("Averaging FFL's sub-networks' logits helps (they differ)",
     (("ffl", SUB_MEAN), ("ffl", ENSEMBLE)),
     (("mobile_ffl", SUB_MEAN), ("mobile_ffl", ENSEMBLE))),
    ("Averaging the 2-net's members' logits helps (they differ)",
     (VANILLA, ("ensemble", ENSEMBLE)), (MOBILE_VANILLA, ("mobile_ensemble", ENSEMBLE))),
)

#: The section's plot: every run's combined head and sub-networks.
PLOT = "results_mobile.png"
#: Its Grad-CAM figure (tools/gradcam.py on the case-2 run, drawn by the command the
#: section gives), shown when docs/ has it.
GRADCAM = "gradcam_mobile.png"
PLOT_SERIES = [MOBILE_VANILLA, *((name, head) for name, _, head in TABLE),
               ("mobile_ffl", SUB_MEAN), ("mobile_ffl_unshared", SUB_MEAN),
               ("mobile_one", SUB_MEAN), ("mobile_dml", SUB_MEAN), ("mobile_ffl_case2", SUB2)]
