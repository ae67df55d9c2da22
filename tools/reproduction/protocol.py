"""The reproduction's protocol, as data: its runs and flags, the convergence check, the
paper's claims with their gains, the layout of the paper's tables, and how the report
names and plots the runs' heads.

tools/reproduce.py trains what this says (`runner`) and reports on it (`report`, `plots`).
"""

import typing

from keras_ffl.heads import ENSEMBLE, FUSED, SUB_MEAN, sub_name

#: Case 1's architecture, and case 2's pair: a ResNet and a WRN of this machine's
#: scale. ResNet-8 at half width (8/16/32 channels) is the scale at which 11
#: configurations x 3 seeds train in one working session on 2 cores (docs/RESULTS.md
#: gives the cost); case 2 pairs it with
#: the pre-activation WRN-10 at the same widths (the paper's Pair1 is ResNet-32 &
#: WRN-16-2).
ARCH = "resnet8x0.5"
CASE2_ARCH = (ARCH, "wrn10_0.5")

#: The training command's flags every run gets, on top of the Fashion-MNIST recipe
#: ("small": batch 128, Nesterov SGD 0.1, L2 1e-4 / fusion 1e-5, T = 3): the paper's
#: CIFAR schedule (300 epochs, x0.1 at 50% and 75%, ramp-up over 27%) scaled to 8
#: full passes over the training set, spelled out so that the protocol does not
#: change with the recipe; 8 rather than the recipe's own 6, which the convergence
#: check trains to compare the two.
PROTOCOL = {"arch": ARCH, "epochs": 8, "lr_milestones": (4, 6), "rampup_epochs": 2}

#: Run name -> (method, flags besides PROTOCOL's). DualNet's iterative stage ends at
#: the first learning-rate drop, as Table VII's does (256 of 307 epochs): the
#: extractors alternate pass by pass. The vanilla network of case 1 is the 2-net's members: each is
#: trained alone with cross-entropy on the same batches, which is what vanilla
#: training is, so a separate vanilla run would repeat them.
RUNS = {
    "ffl": ("ffl", {}),
    "ensemble": ("ensemble", {}),
    "dualnet": ("dualnet", {"iterative_epochs": PROTOCOL["lr_milestones"][0]}),
    "ffl_average": ("ffl", {"fusion": "average"}),
    "ffl_no_ekd": ("ffl", {"ekd": False}),
    "ffl_no_kd": ("ffl", {"ekd": False, "fkd": False}),
    "ffl3": ("ffl", {"branches": 3}),
    "one3": ("one", {"branches": 3}),
    "vanilla_wrn": ("vanilla", {"arch": CASE2_ARCH[1]}),
    "ffl_case2": ("ffl", {"arch": CASE2_ARCH}),
    "dml_case2": ("dml", {"arch": CASE2_ARCH}),
}


def _rescheduled(method, options, schedule):
    """A run of RUNS under another schedule (DualNet's iterative stage still ending at
    the first drop)."""
    if "iterative_epochs" in options:
        options = {**options, "iterative_epochs": schedule["lr_milestones"][0]}
    return method, {**options, **schedule}


#: The convergence check, trained once every run of RUNS has finished, with the
#: first CONVERGENCE_SEEDS seeds: every run of RUNS again under the schedule scaled
#: to 6 passes (the small recipe's own), so that each head and each claim is read
#: after both schedules. Run "<name>_short" is RUNS' "<name>" with SHORT's flags.
SHORT = {"epochs": 6, "lr_milestones": (3, 5), "rampup_epochs": 2}
CONVERGENCE_SEEDS = 3
SHORT_SUFFIX = "_short"
CONVERGENCE_RUNS = {
    f"{name}{SHORT_SUFFIX}": _rescheduled(*RUNS[name], SHORT) for name in RUNS
}
ALL_RUNS = {**RUNS, **CONVERGENCE_RUNS}


def short_run(name):
    """The convergence check's run of RUNS' `name`, or None when it has none."""
    shorter_name = f"{name}{SHORT_SUFFIX}"
    return shorter_name if shorter_name in CONVERGENCE_RUNS else None


def shorter(run):
    """(its convergence-check run, head) of a (run, head) of RUNS, or None."""
    name, head = run
    return (short_run(name), head) if short_run(name) else None


def flag_args(options):
    """The training command's flags for `options`: ["--epochs=8", "--lr_milestones=4,6", ...]."""
    return [f"--{key}={_flag_value(value)}" for key, value in options.items()]


def _flag_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


#: The heads (and the sub_mean metric) the claims read, as history.csv names them.
#: ONE's and DualNet's own heads are named in their method modules, which start
#: TensorFlow when imported; reading finished runs does not need it.
SUB1, SUB2 = sub_name(1), sub_name(2)
GATED, AVG = "gated", "avg"

#: The vanilla network of case 1 and the head that reads it (see RUNS).
VANILLA = ("ensemble", SUB_MEAN)


class Claim(typing.NamedTuple):
    """One of the paper's claims: `better` (run, head) has a lower error than `worse`."""

    text: str
    table: str
    worse: tuple
    better: tuple
    #: The paper's gain in points of CIFAR-100 top-1 error with ResNet-32 (None where
    #: it gives no number), and where the paper gives it.
    paper_gain: float | None
    where: str


CLAIMS = [
    Claim("FFL's fused classifier beats DualNet's Z_avg", "I",
          ("dualnet", AVG), ("ffl", FUSED), 1.93, "Table I(a)"),
    Claim("FFL's sub-networks beat DualNet's", "I",
          ("dualnet", SUB_MEAN), ("ffl", SUB_MEAN), 7.85, "Table I(b)"),
    Claim("The fusion module beats averaging: fused (A vs B)", "II",
          ("ffl_average", FUSED), ("ffl", FUSED), 0.54, "Table II"),
    Claim("The fusion module beats averaging: sub-networks (A vs B)", "II",
          ("ffl_average", SUB_MEAN), ("ffl", SUB_MEAN), 0.40, "Table II"),
    Claim("EKD helps the fused classifier (A vs C)", "II",
          ("ffl_no_ekd", FUSED), ("ffl", FUSED), 1.47, "Table II"),
    Claim("EKD helps the sub-networks (A vs C)", "II",
          ("ffl_no_ekd", SUB_MEAN), ("ffl", SUB_MEAN), 1.30, "Table II"),
    Claim("FKD helps the sub-networks (C vs D)", "II",
          ("ffl_no_kd", SUB_MEAN), ("ffl_no_ekd", SUB_MEAN), 2.68, "Table II"),
    Claim("3 branches: FFL's fused classifier beats ONE's gated teacher (FFL vs ONE-E)", "III",
          ("one3", GATED), ("ffl3", FUSED), 0.37, "Table III, mean"),
    Claim("3 branches: FFL's sub-networks beat ONE's (FFL-S vs ONE)", "III",
          ("one3", SUB_MEAN), ("ffl3", SUB_MEAN), 0.28, "Table III, mean"),
    Claim("Case 2: FFL's net 1 (ResNet) beats DML's", "V",
          ("dml_case2", SUB1), ("ffl_case2", SUB1), 1.25, "Table V, Pair1"),
    Claim("Case 2: FFL's net 2 (WRN) beats DML's", "V",
          ("dml_case2", SUB2), ("ffl_case2", SUB2), 0.52, "Table V, Pair1"),
    Claim("Case 2: FFL's fused classifier beats DML's ensemble of peers", "V",
          ("dml_case2", ENSEMBLE), ("ffl_case2", FUSED), None, "§IV-B: \"a stronger teacher\""),
    Claim("FFL's fused classifier beats the 2-net ensemble, with fewer parameters", "VI",
          ("ensemble", ENSEMBLE), ("ffl", FUSED), 0.85, "Table VI"),
    Claim("FFL's sub-networks beat a vanilla network", "IV",
          VANILLA, ("ffl", SUB_MEAN), 1.11, "Table IV, ImageNet"),
    Claim("FFL's fused classifier beats its own sub-networks", "II",
          ("ffl", SUB_MEAN), ("ffl", FUSED), 1.50, "Table II, A"),
]


def compared_heads():
    """Every (run, head) of RUNS the claims compare, in the claims' order."""
    heads = []
    for claim in CLAIMS:
        heads += [run for run in (claim.worse, claim.better) if run not in heads]
    return heads


class Error(typing.NamedTuple):
    """A table cell: the top-1 error (%) of a run's head, mean ± standard deviation over seeds."""

    run: str
    head: str


class Params(typing.NamedTuple):
    """A table cell: the trainable parameters of these runs' networks, joined by " / "
    ("vanilla": the vanilla network's)."""

    runs: tuple


class Table(typing.NamedTuple):
    """One of the paper's tables as the report lays it out: rows of cells (text, Error or
    Params; "" is an empty cell), a sentence after it (text and cells), its plot."""

    title: str
    columns: tuple
    rows: tuple
    note: tuple
    plot: str


_VANILLA = Error(*VANILLA)
TABLES = (
    Table(
        "Table I: FFL vs DualNet",
        ("network", "params", "(a) fused: DualNet (Z_avg)", "(a) fused: FFL",
         "(b) sub-networks: DualNet", "(b) sub-networks: FFL"),
        ((f"{ARCH} ×2", Params(("dualnet", "ffl")), Error("dualnet", AVG), Error("ffl", FUSED),
          Error("dualnet", SUB_MEAN), Error("ffl", SUB_MEAN)),
         (f"vanilla {ARCH}", Params(("vanilla",)), "", "", _VANILLA, "")),
        ("DualNet's own fused classifier (without the auxiliary logits): ",
         Error("dualnet", FUSED), "."),
        "results_table1.png",
    ),
    Table(
        "Table II: ablations",
        ("case", "FM", "EKD", "FKD", "fused", "sub-network"),
        # The FM, EKD and FKD marks of a case are one cell of text spanning three columns.
        (("A", "✓ | ✓ | ✓", Error("ffl", FUSED), Error("ffl", SUB_MEAN)),
         ("B", " | ✓ | ✓", Error("ffl_average", FUSED), Error("ffl_average", SUB_MEAN)),
         ("C", "✓ | | ✓", Error("ffl_no_ekd", FUSED), Error("ffl_no_ekd", SUB_MEAN)),
         ("D", "✓ | |", Error("ffl_no_kd", FUSED), Error("ffl_no_kd", SUB_MEAN)),
         ("vanilla", "", "", "", "", _VANILLA)),
        (),
        "results_table2.png",
    ),
    Table(
        f"Table III: three branches, FFL vs ONE ({ARCH})",
        ("method", "params", "error"),
        (("ONE (mean of branches)", Params(("one3",)), Error("one3", SUB_MEAN)),
         ("FFL-S (mean of sub-networks)", Params(("ffl3",)), Error("ffl3", SUB_MEAN)),
         ("ONE-E (gated teacher)", "", Error("one3", GATED)),
         ("FFL (fused classifier)", "", Error("ffl3", FUSED)),
         ("vanilla", Params(("vanilla",)), _VANILLA)),
        (),
        "results_table3.png",
    ),
    Table(
        f"Table V: case 2, {CASE2_ARCH[0]} & {CASE2_ARCH[1]}, FFL vs DML",
        ("method", "params", "net 1", "net 2", "fused", "ensemble of nets"),
        (("DML", Params(("dml_case2",)), Error("dml_case2", SUB1), Error("dml_case2", SUB2), "",
          Error("dml_case2", ENSEMBLE)),
         ("FFL", Params(("ffl_case2",)), Error("ffl_case2", SUB1), Error("ffl_case2", SUB2),
          Error("ffl_case2", FUSED), Error("ffl_case2", ENSEMBLE)),
         ("vanilla", Params(("vanilla", "vanilla_wrn")), _VANILLA, Error("vanilla_wrn", SUB1),
          "", "")),
        (),
        "results_table5.png",
    ),
    Table(
        f"Table VI: FFL vs the 2-net ensemble ({ARCH})",
        ("method", "params", "error"),
        (("2-net (two independent networks, averaged logits)", Params(("ensemble",)),
          Error("ensemble", ENSEMBLE)),
         ("FFL (fused classifier)", Params(("ffl",)), Error("ffl", FUSED)),
         ("vanilla (the 2-net's members)", Params(("vanilla",)), _VANILLA)),
        ("The paper's case 2 rows of Table VI (a 2-net deepened to FFL's size) were not run.",),
        "results_table6.png",
    ),
)  # fmt: skip


#: What rules out a defect of ours behind a claim about a run's method: the tests
#: that pin its objective and training against the paper and its reference code.
METHOD_CHECKS = {
    "ffl": "FFL's loss terms (CE + w·T²·(EKD + FKD), teachers held constant) against NumPy "
           "(tests/test_losses.py), the fusion module against NumPy (tests/test_fusion.py), "
           "the official code's parameter counts (tests/test_models.py, "
           "tests/test_parameter_counts.py)",
    "ensemble": "the 2-net's loss is the sum of independent cross-entropies and its networks "
                "do not interact (tests/test_method_ensemble.py)",
    "dualnet": "DualNet's loss and Z_avg against NumPy, each stage updating only its own "
               "variables (tests/test_method_dualnet.py)",
    "one": "ONE's loss terms against NumPy, the gate trained only by the teacher's "
           "cross-entropy, the reference's parameter count (tests/test_method_one.py)",
    "dml": "DML's CE + KL per peer against NumPy, each sub-step updating only its own peer "
           "after a fresh forward pass (tests/test_method_dml.py)",
    "vanilla": "the cross-entropy alone (tests/test_method_vanilla.py)",
}

#: Methods whose loss has the ramp-up weight w(epoch).
DISTILLING_METHODS = ("ffl", "one", "dml")

#: How the report names runs and heads.
RUN_LABELS = {
    "ffl": "FFL", "ensemble": "2-net", "dualnet": "DualNet", "ffl_average": "FFL B (averaging)",
    "ffl_no_ekd": "FFL C (no EKD)", "ffl_no_kd": "FFL D (no KD)", "ffl3": "FFL, 3 branches",
    "one3": "ONE, 3 branches", "vanilla_wrn": f"vanilla {CASE2_ARCH[1]}",
    "ffl_case2": "FFL case 2", "dml_case2": "DML case 2",
}
RUN_LABELS.update({
    short_run(name): f"{RUN_LABELS[name]}, {SHORT['epochs']} passes"
    for name in RUNS if short_run(name)
})
HEAD_LABELS = {
    FUSED: "fused", SUB_MEAN: "sub-networks", ENSEMBLE: "ensemble", GATED: "ONE-E",
    AVG: "Z_avg", SUB1: "net 1", SUB2: "net 2",
}


def label(name, head):
    """A run's head as the report names it ("FFL fused", "vanilla" for VANILLA)."""
    if (name, head) == VANILLA:
        return f"vanilla {ARCH} (2-net members)"
    if (name, head) == shorter(VANILLA):
        return f"vanilla {ARCH} (2-net members), {SHORT['epochs']} passes"
    return f"{RUN_LABELS[name]} {HEAD_LABELS[head]}"


#: Plot file -> (title, [(run, head)]): one plot per table of the report, and the
#: convergence check's (each head after both schedules).
PLOTS = {
    "results_table1.png": ("Table I: FFL vs DualNet", [
        ("ffl", FUSED), ("ffl", SUB_MEAN), ("dualnet", AVG), ("dualnet", SUB_MEAN), VANILLA,
    ]),
    "results_table2.png": ("Table II: ablations", [
        ("ffl", FUSED), ("ffl", SUB_MEAN), ("ffl_average", FUSED), ("ffl_average", SUB_MEAN),
        ("ffl_no_ekd", FUSED), ("ffl_no_ekd", SUB_MEAN), ("ffl_no_kd", FUSED),
        ("ffl_no_kd", SUB_MEAN), VANILLA,
    ]),
    "results_table3.png": ("Table III: three branches", [
        ("ffl3", FUSED), ("ffl3", SUB_MEAN), ("one3", GATED), ("one3", SUB_MEAN), VANILLA,
    ]),
    "results_table5.png": ("Table V: case 2, FFL vs DML", [
        ("ffl_case2", FUSED), ("ffl_case2", SUB1), ("ffl_case2", SUB2), ("dml_case2", SUB1),
        ("dml_case2", SUB2), VANILLA, ("vanilla_wrn", SUB1),
    ]),
    "results_table6.png": ("Table VI: FFL vs the 2-net ensemble", [
        ("ffl", FUSED), ("ensemble", ENSEMBLE), VANILLA,
    ]),
    "results_convergence.png": (f"{SHORT['epochs']} and {PROTOCOL['epochs']} passes", [
        series for run in (("ffl", FUSED), ("ffl", SUB_MEAN), ("ffl_no_ekd", FUSED),
                           ("ensemble", ENSEMBLE), VANILLA)
        for series in (shorter(run), run)
    ]),
}


def count_parameters():
    """Trainable parameters of every run's network on Fashion-MNIST (28x28x1, 10 classes),
    and of the vanilla network ("vanilla")."""
    from keras_ffl import quiet

    quiet.start_up()  # TensorFlow starts here, its C++ start-up lines hidden.
    from keras_ffl.parameter_counts import trainable_parameters

    counts = {"vanilla": trainable_parameters("vanilla", ARCH, 1, 10, (28, 28, 1))}
    for name, (method, options) in RUNS.items():
        counts[name] = trainable_parameters(
            method, options.get("arch", ARCH), options.get("branches", 2),
            num_classes=10, input_shape=(28, 28, 1),
        )
    return counts
