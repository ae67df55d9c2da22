"""keras_ffl against the official PyTorch FFL code, paired, in one process tree.

  python tools/benchmark.py --reference=../shared/reference/FFL-pytorch

`--reference` is a checkout of github.com/Jangho-Kim/FFL-pytorch (its
`our_network.py` is imported from there; nothing of it is copied here) and
PyTorch must be installed. The official training step is `train_FFL.py`'s,
rewritten here from that file: `ffl_resnet` + `Fusion_module(64, classes, 8)`,
cross-entropy on the three heads plus w * (KL(sub1 || fused) + KL(sub2 || fused)
+ KL(fused || ensemble)) with its `KLLoss` (T = 3, +1e-7 on the teacher), two
Nesterov SGD optimisers (weight decay 1e-4 on the network, 1e-5 on the fusion
module), `.item()` of the loss and the three heads' correct counts, as its
`train()` does. The vanilla step is the same with `resnet` and one head. The
official eval forward is `eval()`'s: both modules in eval mode, as written
(autograd on) and, for reference, under `torch.no_grad()`.

Each (framework, model) runs in a worker process of its own, so that peak RSS
is per framework and model; the parent sends every worker the same commands in
interleaved rounds (order reversed every other round), so load from other
processes lands on both frameworks alike. Every worker builds the same batch
(same seed; NCHW for PyTorch), uses the same number of threads, and reports
per-step wall and process-CPU times. Ratios are per round (official time /
keras_ffl time of chunks that ran back to back), with median and quartiles.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CIFAR100_MEAN = (129.3, 124.1, 112.4)
CIFAR100_STD = (68.2, 65.4, 70.4)
WORKERS = (("official", "ffl"), ("keras_ffl", "ffl"), ("official", "vanilla"), ("keras_ffl", "vanilla"))
#: (framework, eval mode) pairs timed on the FFL workers.
EVALS = (("official", "eval"), ("official", "no_grad"), ("keras_ffl", "savedmodel"))


def batch(batch_size, num_classes, seed):
    """The benchmark's batch: uint8 images, their normalised float32 values, int labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int64)
    normalised = (images.astype(np.float32) - np.float32(CIFAR100_MEAN)) / np.float32(CIFAR100_STD)
    return images, normalised, labels


def max_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Workers -----------------------------------------------------------------------------------


class OfficialWorker:
    """The official code's model, loss and optimisers (train_FFL.py) on one batch."""

    def __init__(self, reference, model, batch_size, num_classes, threads, seed):
        import torch

        sys.path.insert(0, os.path.abspath(reference))
        import our_network  # The official network definitions, from --reference.

        self.import_rss_mib = max_rss_mib()  # The framework alone, before any model.

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        _, normalised, labels = batch(batch_size, num_classes, seed)
        self.images = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())
        self.labels = torch.from_numpy(labels)
        sgd = torch.optim.SGD
        if model == "ffl":
            self.model = our_network.ffl_resnet(num_classes=num_classes, depth=32)
            self.module = our_network.Fusion_module(64, num_classes, 8)
            self.optimizers = [
                sgd(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
                sgd(self.module.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True),
            ]
        else:
            self.model = our_network.resnet(num_classes=num_classes, depth=32)
            self.module = None
            self.optimizers = [
                sgd(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
            ]
        self.ce = torch.nn.CrossEntropyLoss()
        self.consistency_weight = 1.0  # w(epoch); its value does not change the step's cost.

    def kl(self, pred, label, temperature=3.0):
        """train_FFL.py's utils.KLLoss: T^2 * KL(softmax(label/T) + 1e-7 || softmax(pred/T))."""
        F = self.torch.nn.functional
        predict = F.log_softmax(pred / temperature, dim=1)
        target = (F.softmax(label / temperature, dim=1) + 1e-7).detach()
        return temperature**2 * (target * (target.log() - predict)).sum(1).sum() / target.size()[0]

    def train_step(self):
        torch, x, y = self.torch, self.images, self.labels
        self.model.train()
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        if self.module is None:
            outputs = self.model(x)
            loss = self.ce(outputs, y)
            loss.backward()
            self.optimizers[0].step()
            loss.item()
            _, predicted = torch.max(outputs.data, 1)
            predicted.eq(y.data).cpu().sum().float().item()
            return
        self.module.train()
        outputs1, outputs2, fmap = self.model(x)
        ensemble_logit = (outputs1 + outputs2) / 2
        fused_logit = self.module(fmap[0], fmap[1])
        loss_cross = self.ce(outputs1, y) + self.ce(outputs2, y) + self.ce(fused_logit, y)
        loss_kl = self.consistency_weight * (
            self.kl(outputs1, fused_logit)
            + self.kl(outputs2, fused_logit)
            + self.kl(fused_logit, ensemble_logit)
        )
        loss = loss_cross + loss_kl
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        loss.item()
        for logits in (outputs1, outputs2, fused_logit):
            _, predicted = torch.max(logits.data, 1)
            predicted.eq(y.data).cpu().sum().float().item()

    def train(self, steps):
        return timed(self.train_step, steps)

    def eval(self, mode, batch_size, calls):
        self.model.eval()
        self.module.eval()
        x = self.images[:batch_size].contiguous()

        def forward():
            outputs1, outputs2, fmap = self.model(x)
            return self.module(fmap[0], fmap[1])

        def run():
            if mode == "no_grad":
                with self.torch.no_grad():
                    forward()
            else:
                forward()

        run()
        return timed(run, calls)


class KerasWorker:
    """keras_ffl's model, trained through `model.fit` as users run it, and its fused SavedModel."""

    def __init__(self, model, batch_size, num_classes, threads, seed):
        import keras_ffl  # noqa: F401  (first: it selects TensorFlow's CPU kernels)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import benchmark  # tools/benchmark.py: builds models as its training section does.

        self.import_rss_mib = max_rss_mib()  # The framework alone, before any model.

        benchmark.FLAGS(["benchmark", "--arch=resnet32"])
        self.tf, self.benchmark = tf, benchmark
        images, normalised, labels = batch(batch_size, num_classes, seed)
        self.uint8_images = images
        self.dataset = tf.data.Dataset.from_tensors((normalised, labels.astype(np.int32))).repeat()
        import keras

        keras.utils.set_random_seed(seed)
        self.model = benchmark.build(model, num_classes, False)
        self.serving = None

    def train(self, steps):
        timer = self.benchmark.StepTimer()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer])
        return {
            "wall": np.diff([w for w, _ in timer.starts]).tolist(),
            "cpu": np.diff([c for _, c in timer.starts]).tolist(),
        }

    def eval(self, mode, batch_size, calls):
        if self.serving is None:
            self.serving = self._export_fused()
        images = self.tf.constant(self.uint8_images[:batch_size])
        fn = self.serving.signatures["serving_default"]

        def run():
            fn(images=images)["probabilities"].numpy()

        run()
        return timed(run, calls)

    def _export_fused(self):
        from keras_ffl.export import export_savedmodels

        directory = tempfile.mkdtemp(prefix="ffl_reference_benchmark_")
        result = export_savedmodels(
            self.model, directory, "ffl", mean=CIFAR100_MEAN, std=CIFAR100_STD, version=1
        )
        (path,) = [m.path for m in result.models if m.name == "ffl_fused"]
        return self.tf.saved_model.load(path)


def timed(fn, calls):
    """Wall and process-CPU seconds of each of `calls` calls of `fn`."""
    wall, cpu = [], []
    for _ in range(calls):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall": wall, "cpu": cpu}


def serve(args):
    """A worker's loop: one JSON command per stdin line, one JSON reply per stdout line."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Anything the libraries print goes to stderr, not into the replies.
    if args.framework == "official":
        worker = OfficialWorker(
            args.reference, args.model, args.batch_size, args.num_classes, args.threads, args.seed
        )
    else:
        sys.path.insert(0, HERE)
        worker = KerasWorker(args.model, args.batch_size, args.num_classes, args.threads, args.seed)
    worker.train(args.warmup)
    ready = {"ready": True, "max_rss_mib": max_rss_mib(), "import_rss_mib": worker.import_rss_mib}
    replies.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "train":
            reply = worker.train(command["steps"])
        elif command["cmd"] == "eval":
            reply = worker.eval(command["mode"], command["batch_size"], command["calls"])
        else:
            break
        reply["max_rss_mib"] = max_rss_mib()
        replies.write(json.dumps(reply) + "\n")


# The parent --------------------------------------------------------------------------------


class Worker:
    """A worker process and its command channel."""

    def __init__(self, framework, model, reference, batch_size, num_classes, threads, seed, warmup):
        self.name = f"{framework}/{model}"
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.process = subprocess.Popen(
            [
                sys.executable, os.path.abspath(__file__), "--framework", framework,
                "--model", model, "--reference", reference, "--batch_size", str(batch_size),
                "--num_classes", str(num_classes), "--threads", str(threads),
                "--seed", str(seed), "--warmup", str(warmup),
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )  # fmt: skip
        self.ready = self._reply()

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"The {self.name} worker failed:\n{self.log.read()[-4000:]}")
        return json.loads(line)

    def send(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        self.log.close()


def summarize(values):
    values = np.asarray(values, np.float64)
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {"median": float(p50), "p25": float(p25), "p75": float(p75), "n": int(values.size)}


def run(reference, *, batch_size=128, num_classes=100, threads=2, rounds=10, chunk=3, warmup=3,
        eval_calls=5, seed=0, log=print):  # fmt: skip
    """Runs the paired comparison; returns its results (see `report`)."""
    if not os.path.isfile(os.path.join(reference, "our_network.py")):
        raise FileNotFoundError(
            f"{reference} has no our_network.py: --reference must be a checkout of the official "
            "FFL-pytorch repository."
        )
    load_start = os.getloadavg()
    workers = {}
    try:
        for framework, model in WORKERS:
            start = time.perf_counter()
            workers[(framework, model)] = Worker(
                framework, model, reference, batch_size, num_classes, threads, seed, warmup
            )
            log(f"  {framework}/{model} ready ({time.perf_counter() - start:.0f} s)")
        chunks = {key: [] for key in workers}
        for r in range(rounds):
            for key in WORKERS if r % 2 == 0 else WORKERS[::-1]:
                reply = workers[key].send(cmd="train", steps=chunk)
                chunks[key].append(reply)
            log(f"  round {r + 1}/{rounds}")
        training_rss = {key: chunks[key][-1]["max_rss_mib"] for key in workers}
        evals = {}
        for size in (batch_size, 1):
            calls = eval_calls if size > 1 else 5 * eval_calls
            for r in range(rounds):
                for framework, mode in EVALS if r % 2 == 0 else EVALS[::-1]:
                    reply = workers[(framework, "ffl")].send(
                        cmd="eval", mode=mode, batch_size=size, calls=max(1, calls // rounds)
                    )
                    evals.setdefault((framework, mode, size), []).append(reply)
            log(f"  eval at batch {size}")
    finally:
        for worker in workers.values():
            worker.close()
    return {
        "training": {f"{f}/{m}": chunks[(f, m)] for f, m in WORKERS},
        "training_max_rss_mib": {f"{f}/{m}": training_rss[(f, m)] for f, m in WORKERS},
        "import_rss_mib": {f"{f}/{m}": workers[(f, m)].ready["import_rss_mib"] for f, m in WORKERS},
        "eval": {f"{f}/{mode}/{size}": v for (f, mode, size), v in evals.items()},
        "settings": {
            "batch_size": batch_size, "num_classes": num_classes, "threads": threads,
            "rounds": rounds, "chunk": chunk, "warmup": warmup, "seed": seed,
            "load_average_start": load_start, "load_average_end": os.getloadavg(),
        },
    }  # fmt: skip


def _chunk_medians(chunks, clock):
    return [float(np.median(c[clock])) for c in chunks]


def paired_ratio(numerator_chunks, denominator_chunks, clock="wall"):
    """Per-round ratios of two configurations' chunk medians: median, p25, p75."""
    return summarize(
        [a / b for a, b in zip(_chunk_medians(numerator_chunks, clock), _chunk_medians(denominator_chunks, clock))]
    )


def report(results):
    """The paired table: rows of (what, official, keras_ffl, ratio stats, target, met)."""
    train, evals = results["training"], results["eval"]
    batch_size = results["settings"]["batch_size"]

    def step(key, clock="wall"):
        return float(np.median(_chunk_medians(train[key], clock)))

    rows = []
    for model, target in (("ffl", 1.5), ("vanilla", 1.3)):
        official, ours = train[f"official/{model}"], train[f"keras_ffl/{model}"]
        rows.append({
            "what": f"{model} ResNet-32 training step (throughput ratio)",
            "official_ms": 1000 * step(f"official/{model}"),
            "keras_ffl_ms": 1000 * step(f"keras_ffl/{model}"),
            "ratio": paired_ratio(official, ours),
            "cpu_ratio": paired_ratio(official, ours, "cpu"),
            "target": f">= {target}",
            "met": paired_ratio(official, ours)["median"] >= target,
        })  # fmt: skip
    for framework in ("official", "keras_ffl"):
        ratio = paired_ratio(train[f"{framework}/ffl"], train[f"{framework}/vanilla"])
        rows.append({
            "what": f"{framework}: FFL step / vanilla step",
            "official_ms": None, "keras_ffl_ms": None, "ratio": ratio,
            "cpu_ratio": paired_ratio(train[f"{framework}/ffl"], train[f"{framework}/vanilla"], "cpu"),
            "target": "<= 1.15" if framework == "keras_ffl" else "",
            "met": ratio["median"] <= 1.15 if framework == "keras_ffl" else None,
        })  # fmt: skip
    for size in (batch_size, 1):
        ours = evals[f"keras_ffl/savedmodel/{size}"]
        for mode in ("eval", "no_grad"):
            official = evals[f"official/{mode}/{size}"]
            ratio = paired_ratio(official, ours)
            judged = size == batch_size and mode == "eval"
            rows.append({
                "what": f"FFL inference, batch {size}: official {mode} forward vs fused SavedModel",
                "official_ms": 1000 * float(np.median(_chunk_medians(official, "wall"))),
                "keras_ffl_ms": 1000 * float(np.median(_chunk_medians(ours, "wall"))),
                "ratio": ratio, "cpu_ratio": paired_ratio(official, ours, "cpu"),
                "target": ">= 2" if judged else "", "met": ratio["median"] >= 2 if judged else None,
            })  # fmt: skip
    rss, imported = results["training_max_rss_mib"], results["import_rss_mib"]
    for model in ("ffl", "vanilla"):
        for what, official, ours in (
            (f"peak RSS while training {model} (MiB; keras_ffl / official)",
             rss[f"official/{model}"], rss[f"keras_ffl/{model}"]),
            (f"  of which above the framework's import ({model})",
             rss[f"official/{model}"] - imported[f"official/{model}"],
             rss[f"keras_ffl/{model}"] - imported[f"keras_ffl/{model}"]),
        ):  # fmt: skip
            judged = model == "ffl" and what.startswith("peak")
            ratio = ours / official
            rows.append({
                "what": what, "official_ms": official, "keras_ffl_ms": ours,
                "ratio": {"median": ratio, "p25": ratio, "p75": ratio}, "cpu_ratio": None,
                "target": "<= 1.2" if judged else "", "met": ratio <= 1.2 if judged else None,
            })  # fmt: skip
    return rows


def print_report(results, rows):
    s = results["settings"]
    print(
        f"\nPaired with the official PyTorch code: batch {s['batch_size']}, CIFAR-100 shapes, "
        f"{s['threads']} threads each, {s['rounds']} interleaved rounds of {s['chunk']} steps; "
        f"load average {s['load_average_start'][0]:.1f} at start, {s['load_average_end'][0]:.1f} at end"
    )
    header = (
        f"{'':<66} {'official':>9} {'keras_ffl':>9} {'ratio':>6} {'[p25, p75]':>13} "
        f"{'CPU ratio':>9}  target"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio, cpu = row["ratio"], row["cpu_ratio"]
        official = "" if row["official_ms"] is None else f"{row['official_ms']:9.1f}"
        ours = "" if row["keras_ffl_ms"] is None else f"{row['keras_ffl_ms']:9.1f}"
        verdict = "" if row["met"] is None else ("met" if row["met"] else "NOT MET")
        print(
            f"{row['what']:<66} {official:>9} {ours:>9} {ratio['median']:6.2f} "
            f"[{ratio['p25']:5.2f}, {ratio['p75']:5.2f}] "
            f"{'' if cpu is None else format(cpu['median'], '9.2f'):>9}  {row['target']} {verdict}"
        )
    print(
        "  (ms: median step or call, wall time; ratio: per round, official time / keras_ffl "
        "time, so > 1 means keras_ffl is faster,\n   except FFL/vanilla rows (step-time "
        "ratios) and RSS rows (keras_ffl / official); CPU ratio: the same of process CPU time)"
    )


def main():
    parser = argparse.ArgumentParser(description="A worker of tools/benchmark.py --reference.")
    parser.add_argument("--framework", choices=("official", "keras_ffl"), required=True)
    parser.add_argument("--model", choices=("ffl", "vanilla"), required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=3)
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
