"""A worker of the paired comparison with the official PyTorch code: one framework's model,
driven by tools/benchmark.py --reference through stdin and stdout (benchmarking.reference).

  python tools/reference_benchmark.py --framework=official --model=ffl --reference=FFL-pytorch

reads one JSON command per line and answers each with one JSON line; see
`benchmarking.reference_workers`.
"""

from absl import app, flags

from benchmarking import reference_workers

FLAGS = flags.FLAGS
flags.DEFINE_enum("framework", None, ["official", "keras_ffl"], "Whose model this worker trains.")
flags.DEFINE_enum("model", None, ["ffl", "vanilla"], "The model: FFL ResNet-32 x2 or one ResNet-32.")
flags.DEFINE_string("reference", None, "A checkout of the official FFL-pytorch code.")
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_integer("num_classes", 100, "Classes.", lower_bound=2)
flags.DEFINE_integer("threads", 2, "Threads of the framework.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed (the same batch in every worker).")
flags.DEFINE_integer("warmup", 3, "Untimed training steps before the first command.", lower_bound=1)
flags.mark_flags_as_required(["framework", "model", "reference"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    reference_workers.serve(
        FLAGS.framework, FLAGS.model, FLAGS.reference, FLAGS.batch_size, FLAGS.num_classes,
        FLAGS.threads, FLAGS.seed, FLAGS.warmup,
    )  # fmt: skip


if __name__ == "__main__":
    app.run(main)
