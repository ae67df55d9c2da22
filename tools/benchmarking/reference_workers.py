"""The worker processes of the paired comparison with the official PyTorch FFL code.

`OfficialWorker` is the official training step, `train_FFL.py`'s, rewritten here
around the official `our_network.py` imported from a checkout of
github.com/Jangho-Kim/FFL-pytorch (nothing of it is copied here):
`ffl_resnet` + `Fusion_module(64, classes, 8)`, cross-entropy on the three heads
plus w * (KL(sub1 || fused) + KL(sub2 || fused) + KL(fused || ensemble)) with
its `KLLoss` (T = 3, +1e-7 on the teacher), two Nesterov SGD optimisers (weight
decay 1e-4 on the network, 1e-5 on the fusion module), `.item()` of the loss
and the three heads' correct counts, as its `train()` does. The vanilla step is
the same with `resnet` and one head. The official eval forward is `eval()`'s:
both modules in eval mode, as written (autograd on) and, for reference, under
`torch.no_grad()`. `KerasWorker` is keras_ffl's model trained through
`model.fit` and its fused classifier's SavedModel.

A worker imports only its own framework, so that its RSS is that framework's.
"""

import json
import os
import sys
import tempfile

import numpy as np

from benchmarking.memory import MIB, max_rss_bytes
from benchmarking.timing import intervals, timed

#: keras_ffl.data's CIFAR-100 normalisation, spelled here because the PyTorch worker
#: runs without TensorFlow (which importing keras_ffl.data starts).
CIFAR100_MEAN = (129.3, 124.1, 112.4)
CIFAR100_STD = (68.2, 65.4, 70.4)
#: The official code's ResNet depth, and keras_ffl's architecture of the same network.
DEPTH = 32
ARCH = f"resnet{DEPTH}"


def batch(batch_size, num_classes, seed):
    """The benchmark's batch: uint8 images, their normalised float32 values, int labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int64)
    normalised = (images.astype(np.float32) - np.float32(CIFAR100_MEAN)) / np.float32(CIFAR100_STD)
    return images, normalised, labels


def max_rss_mib():
    return max_rss_bytes() / MIB


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
            self.model = our_network.ffl_resnet(num_classes=num_classes, depth=DEPTH)
            self.module = our_network.Fusion_module(64, num_classes, 8)
            self.optimizers = [
                sgd(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
                sgd(self.module.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True),
            ]
        else:
            self.model = our_network.resnet(num_classes=num_classes, depth=DEPTH)
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
        from benchmarking import models  # Builds models as the training section does.

        self.import_rss_mib = max_rss_mib()  # The framework alone, before any model.

        self.tf, self.models = tf, models
        images, normalised, labels = batch(batch_size, num_classes, seed)
        self.uint8_images = images
        self.dataset = tf.data.Dataset.from_tensors((normalised, labels.astype(np.int32))).repeat()
        import keras

        keras.utils.set_random_seed(seed)
        self.model = models.build(models.parse_model(model, ARCH, None), num_classes, False)
        self.serving = None

    def train(self, steps):
        timer = self.models.StepTimer()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer])
        return {
            "wall": [float(t) for t in intervals([w for w, _ in timer.starts])],
            "cpu": [float(t) for t in intervals([c for _, c in timer.starts])],
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


def serve(framework, model, reference, batch_size, num_classes, threads, seed, warmup):
    """A worker's loop: one JSON command per stdin line, one JSON reply per stdout line."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Anything the libraries print goes to stderr, not into the replies.
    if framework == "official":
        worker = OfficialWorker(reference, model, batch_size, num_classes, threads, seed)
    else:
        worker = KerasWorker(model, batch_size, num_classes, threads, seed)
    worker.train(warmup)
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
