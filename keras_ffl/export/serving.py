"""TF Serving signatures over a Keras classifier: raw uint8 images in, probabilities out.

Every SavedModel takes the images a client has, uint8 [batch, H, W, C] pixels,
under the input name "images", and applies the training pipeline's
normalisation (x - mean) / std itself, so clients need not know it.
"""

import keras
import tensorflow as tf

INPUT_NAME = "images"
SERVING_SIGNATURE = "serving_default"
FEATURES_SIGNATURE = "features"
TOP_K = 5


def image_spec(image_shape):
    """The signatures' input: uint8 [batch, H, W, C]; another dtype is refused on call."""
    return tf.TensorSpec((None, *image_shape), tf.uint8, name=INPUT_NAME)


def normalise(images, image_shape, mean, std):
    """(float(images) - mean) / std, after checking at run time that images are [batch, H, W, C].

    The TensorSpec's fixed H, W, C are not enforced when a server feeds a tensor,
    and a fully convolutional network would silently accept another size, so the
    shape is asserted in the graph. The check compares the run-time shape as a
    string: TensorFlow folds rank and size computations to the TensorSpec's static
    values, which a fed tensor of another rank does not have.
    """
    height, width, channels = image_shape
    shape = tf.shape(images)
    valid = tf.strings.regex_full_match(
        tf.strings.reduce_join(tf.strings.as_string(shape), separator=","),
        rf"\d+,{height},{width},{channels}",
    )
    check = tf.debugging.Assert(valid, [f"{_refusal(image_shape)}; got shape", shape])
    with tf.control_dependencies([check]):
        images = tf.identity(images)
    return scale(images, mean, std)


def scale(images, mean, std):
    """(float(images) - mean) / std: the training pipeline's normalisation, in the graph."""
    return (tf.cast(images, tf.float32) - tf.constant(mean, tf.float32)) / tf.constant(
        std, tf.float32
    )


def _refusal(image_shape):
    height, width, channels = image_shape
    return (
        f"'{INPUT_NAME}' must be uint8 pixels of shape [batch, {height}, {width}, {channels}] "
        "(images are not resized: resize or crop them before sending)"
    )


def check_images(images, image_shape):
    """Raises ValueError, with the signatures' own message first, unless `images` are
    uint8 [batch, *image_shape].

    A signature refuses them too, but TensorFlow words that for a Python caller:
    another dtype as "expected to be a uint8 tensor", another size under a first
    line "Graph execution error".
    """
    dtype = tf.as_dtype(images.dtype)
    shape = tuple(images.shape)
    if dtype != tf.uint8 or len(shape) != 4 or shape[1:] != tuple(image_shape):
        raise ValueError(
            f"{_refusal(image_shape)}; got {dtype.name} of shape {list(shape)}"
        )


def on_any_batch(fn, x):
    """`fn(x)` for any batch: for 0 images, `fn` of one zero image cut to 0 rows.

    Some kernels fail on an empty batch instead of returning an empty result,
    e.g. oneDNN's BatchNorm (TF_ENABLE_ONEDNN_OPTS=1, which TensorFlow turns
    on by default on some CPUs). A non-empty batch runs `fn` unchanged.
    """
    return tf.cond(
        tf.shape(x)[0] > 0,
        lambda: fn(x),
        lambda: tf.nest.map_structure(
            lambda t: t[:0], fn(tf.zeros((1, *x.shape[1:]), x.dtype))
        ),
    )


def classify(logits):
    """The serving_default outputs of float32 logits [batch, classes]."""
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    top_k = tf.math.top_k(probabilities, k=min(TOP_K, probabilities.shape[-1]))
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        "top_k_classes": tf.cast(top_k.indices, tf.int64),
        "top_k_probabilities": top_k.values,
    }


def build_archive(classifier, image_shape, mean, std, features=None):
    """A `keras.export.ExportArchive` with the signatures of `classifier`.

    Args:
      classifier: a functional model from normalised images to logits.
      image_shape: (H, W, C) of the images.
      mean, std: per-channel normalisation, in 0..255 pixel units.
      features: optional (layer name, output name): adds a "features" signature
        returning that layer's output of `classifier` under the output name.
    """
    spec = image_spec(tuple(image_shape))

    def serving_default(images):
        x = normalise(images, image_shape, mean, std)
        return on_any_batch(lambda x: classify(classifier(x, training=False)), x)

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(SERVING_SIGNATURE, serving_default, input_signature=[spec])
    if features is not None:
        layer_name, output_name = features
        extractor = keras.Model(classifier.input, classifier.get_layer(layer_name).output)

        def features_fn(images):
            x = normalise(images, image_shape, mean, std)
            return on_any_batch(lambda x: {output_name: extractor(x, training=False)}, x)

        archive.add_endpoint(FEATURES_SIGNATURE, features_fn, input_signature=[spec])
    return archive


def serve_probabilities(saved_model, images):
    """The serving_default probabilities of a loaded SavedModel for uint8 `images`
    (`check_images` refuses others)."""
    signature = saved_model.signatures[SERVING_SIGNATURE]
    check_images(images, signature.structured_input_signature[1][INPUT_NAME].shape[1:])
    outputs = signature(**{INPUT_NAME: tf.constant(images)})
    return outputs["probabilities"].numpy()


def describe_signatures(saved_model):
    """{signature: {"inputs": [(name, dtype, shape)], "outputs": [...]}} of a loaded SavedModel."""

    def tensors(specs):
        return [(name, spec.dtype.name, tuple(spec.shape)) for name, spec in sorted(specs.items())]

    return {
        key: {
            "inputs": tensors(fn.structured_input_signature[1]),
            "outputs": tensors(fn.structured_outputs),
        }
        for key, fn in sorted(saved_model.signatures.items())
    }

