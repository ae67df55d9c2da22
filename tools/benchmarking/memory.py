"""Memory measurements: the process's RSS (sampled during steps, and its high-water
mark) and TensorFlow's allocator statistics."""

import contextlib
import resource
import sys
import threading

MIB = 1 << 20


class MemorySampler:
    """Samples this process's RSS every `interval` seconds in a thread; keeps the maximum per label.

    TensorFlow releases the GIL while it runs a step, so the samples land inside
    steps, where the activations are alive.
    """

    def __init__(self, interval=0.01):
        self.interval = interval
        self.label = None
        self.peaks = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        try:
            import psutil

            self._rss = psutil.Process().memory_info
            self.source = "psutil"
        except ImportError:  # /proc fallback (Linux).
            self._rss = None
            self.source = "/proc/self/statm"

    def rss(self):
        if self._rss is not None:
            return self._rss().rss
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * resource.getpagesize()

    def _run(self):
        while not self._stop.wait(self.interval):
            label = self.label
            if label is not None:
                value = self.rss()
                if value > self.peaks.get(label, 0):
                    self.peaks[label] = value

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def labelled(self, label):
        self.label = label
        try:
            yield
        finally:
            self.label = None


def max_rss_bytes():
    """The process's RSS high-water mark (getrusage: KiB on Linux, bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def allocator_memory(device):
    """TensorFlow's allocator statistics {"current", "peak"} (bytes) on `device`, or None.

    Available for CPU and GPU in recent TensorFlow versions; it counts what TF
    allocates (weights, activations, gradients), not Python's or the libraries' own memory.
    """
    import tensorflow as tf  # Here, not above: the PyTorch worker measures RSS without TF.

    try:
        return tf.config.experimental.get_memory_info(device.lstrip("/"))
    except (ValueError, tf.errors.OpError):
        return None


def reset_allocator_peak(device):
    """Starts a new peak of TensorFlow's allocator on `device` (where TF supports it)."""
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device.lstrip("/"))
    except (ValueError, tf.errors.OpError):
        pass
