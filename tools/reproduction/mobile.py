"""The mobile study's protocol, as data: FFL and its baselines with a MobileNetV3Small-family
sub-network on Fashion-MNIST, under the reproduction's recipe and seeds.

The question it answers: does FFL help a modern mobile network, and its sub-network as
much as the reproduction's ResNet's? Runs, flags and claims take the shapes of
`protocol` (RUNS, PROTOCOL, Claim), so the reproduction's runner and report can read
them; the claims are read as docs/RESULTS.md reads the paper's (paired gain over seeds,
standard error).
"""

from reproduction.protocol import GATED, PROTOCOL as RESNET_PROTOCOL, SUB2, VANILLA, Claim
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

SEEDS = (0, 1, 2)

#: Run name -> (method, flags besides PROTOCOL's). As in the reproduction, the vanilla
#: network is the 2-net's members (each trained alone with cross-entropy on the same
#: batches); ONE shares the trunk up to the default split (the last stage branched).
RUNS = {
    "mobile_ffl": ("ffl", {}),
    "mobile_ensemble": ("ensemble", {}),
    "mobile_dml": ("dml", {}),
    "mobile_one": ("one", {}),
    "mobile_ffl_case2": ("ffl", {"arch": ("resnet8x0.5", ARCH)}),
}

#: The vanilla mobile network and the head that reads it.
MOBILE_VANILLA = ("mobile_ensemble", SUB_MEAN)

CLAIMS = [
    Claim("Mobile: FFL's sub-networks beat a vanilla network", "mobile",
          MOBILE_VANILLA, ("mobile_ffl", SUB_MEAN), None, "ResNet: Table IV"),
    Claim("Mobile: FFL's sub-networks beat DML's peers", "mobile",
          ("mobile_dml", SUB_MEAN), ("mobile_ffl", SUB_MEAN), None, "ResNet: Table V"),
    Claim("Mobile: FFL's sub-networks beat ONE's branches", "mobile",
          ("mobile_one", SUB_MEAN), ("mobile_ffl", SUB_MEAN), None, "ResNet: Table III"),
    Claim("Mobile: FFL's fused classifier beats ONE's gated teacher", "mobile",
          ("mobile_one", GATED), ("mobile_ffl", FUSED), None, "ResNet: Table III"),
    Claim("Mobile: FFL's fused classifier beats the 2-net ensemble", "mobile",
          ("mobile_ensemble", ENSEMBLE), ("mobile_ffl", FUSED), None, "ResNet: Table VI"),
    Claim("Mobile: FFL's fused classifier beats its own sub-networks", "mobile",
          ("mobile_ffl", SUB_MEAN), ("mobile_ffl", FUSED), None, "ResNet: Table II, A"),
    Claim("Mobile, case 2: the mobile sub-network fused with a ResNet beats a vanilla one",
          "mobile", MOBILE_VANILLA, ("mobile_ffl_case2", SUB2), None, "ResNet: Table V"),
]

#: The comparison with the reproduction: the same claim's gain on each backbone, the
#: ResNet's read from the reproduction's runs (protocol.RUNS) of the same seeds.
GAIN_COMPARISON = (
    ("FFL's sub-networks over a vanilla network",
     (VANILLA, ("ffl", SUB_MEAN)), (MOBILE_VANILLA, ("mobile_ffl", SUB_MEAN))),
)

#: What the later session also produces from these runs (docs/RESULTS.md's own section):
#: the plot of every head's error per run (reproduction.plots), the export of the best
#: seed's mobile_ffl run (tools/export.py, with the plain-Keras sub-network), and the
#: Grad-CAM figure of its sub-networks (tools/gradcam.py on that run).
PLOT = "results_mobile.png"
