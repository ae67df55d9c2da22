"""A quiet TensorFlow start-up for the commands, and the one line they print about GPUs instead.

Importing TensorFlow and first listing its devices write C++ log lines to the
process's stderr: "All log messages before absl::InitializeLog() …", oneDNN and
CUDA notices, and on a machine without a GPU "E0000 … failed call to cuInit" — an
"error" a new user reads before anything else. TF_CPP_MIN_LOG_LEVEL hides only
some of them (the first ones are written before TensorFlow's log reads it), so
`start_up` also points file descriptor 2 at /dev/null for that moment. A user who
set TF_CPP_MIN_LOG_LEVEL, or asked for absl's --verbosity (-v), sees everything.
"""

import contextlib
import os
import sys

#: The log level set for TensorFlow's C++ code when the user chose none: errors only.
QUIET_LOG_LEVEL = "2"
#: Whether `start_up` chose quiet: then `native_chatter_hidden` hides C++ chatter too.
_quiet = False
_VERBOSITY_FLAGS = ("verbosity", "v")


def wants_messages(argv):
    """Whether the user wants TensorFlow's messages: TF_CPP_MIN_LOG_LEVEL set, or
    --verbosity/-v among the arguments `argv`."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return True
    return any(
        arg.startswith("-") and arg.lstrip("-").split("=")[0] in _VERBOSITY_FLAGS
        for arg in argv[1:]
    )


@contextlib.contextmanager
def _stderr_discarded():
    """Points file descriptor 2 at /dev/null while the block runs.

    What Python writes to sys.stderr in the block is lost too, but an exception
    raised in it propagates once stderr is back, and is shown.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_up(argv=None):
    """Imports TensorFlow and lists its GPUs, hiding the C++ start-up lines unless
    `wants_messages(argv)` (default: sys.argv); returns the GPUs.

    Call it before anything else imports TensorFlow (Keras does, as its backend).
    """
    global _quiet
    argv = sys.argv if argv is None else argv
    _quiet = not wants_messages(argv)
    if _quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_LOG_LEVEL
    with native_chatter_hidden():
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")


def native_chatter_hidden():
    """A context hiding what C++ code writes to stderr in it (the LiteRT converter's
    "fully_quantize: …" lines, the interpreter's XNNPACK notice), after a quiet
    `start_up`; otherwise (a library user, or --verbosity) it hides nothing. The
    converter's errors still reach its exceptions' messages."""
    return _stderr_discarded() if _quiet else contextlib.nullcontext()


def describe_gpus(gpus):
    """One line saying which GPUs training runs on, or that it runs on the CPU."""
    if not gpus:
        return "GPUs: none found, training on the CPU."
    names = ", ".join(gpu.name.removeprefix("/physical_device:") for gpu in gpus)
    return f"GPUs: {len(gpus)} ({names})."
