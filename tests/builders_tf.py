"""Small real TensorFlow and Keras models built in a test's tmp_path (iris from scikit-learn, or synthetic data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: A Keras layer from a module of its own, for the custom-object tests (the module writes a mark on import).
CUSTOM_LAYER_MODULE = '''
from pathlib import Path

import keras

Path(__file__).with_suffix(".imported").touch()


@keras.saving.register_keras_serializable(package="mlport_test")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''


def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def two_signature_module(path: Path) -> Path:
    """A tf.Module on iris (weights from a logistic regression) with signatures ``serving_default`` and ``scores``.

    ``serving_default``: ``x`` FP32 [-1, 4] -> ``probabilities`` FP32 [-1, 3], ``label`` INT64 [-1];
    ``scores``: ``features`` FP32 [-1, 4], ``temperature`` FP32 [-1] -> ``logits`` FP32 [-1, 3].
    """
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    fit = LogisticRegression(max_iter=500).fit(x, y)

    class Iris(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(fit.coef_.T.astype(np.float32))
            self.b = tf.Variable(fit.intercept_.astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            logits = tf.matmul(x, self.w) + self.b
            return {"probabilities": tf.nn.softmax(logits), "label": tf.argmax(logits, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features"),
                                      tf.TensorSpec([None], tf.float32, name="temperature")])
        def scores(self, features: Any, temperature: Any) -> dict[str, Any]:
            return {"logits": (tf.matmul(features, self.w) + self.b) / temperature[:, None]}

    module = Iris()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "scores": module.scores})
    return path


def text_module(path: Path) -> Path:
    """A SavedModel over strings: ``text`` BYTES [-1] -> ``length`` INT32, ``upper`` BYTES, ``bucket`` INT64."""
    import tensorflow as tf

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> dict[str, Any]:
            return {
                "length": tf.strings.length(text, unit="UTF8_CHAR"),
                "upper": tf.strings.upper(text),
                "bucket": tf.strings.to_hash_bucket_fast(text, 1000),
            }

    module = Text()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def keras_iris(epochs: int = 5) -> Any:
    """A small Keras classifier trained on iris for a few epochs: ``features`` [-1, 4] -> ``species`` [-1, 3]."""
    import keras

    keras.utils.set_random_seed(0)
    x, y = iris()
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="species")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def keras_multi() -> Any:
    """Two inputs (``measures`` FP32 [-1, 4], ``codes`` INT32 [-1, 3]) and two outputs (``score``, ``flag``)."""
    import keras

    keras.utils.set_random_seed(1)
    measures = keras.Input((4,), name="measures")
    codes = keras.Input((3,), name="codes", dtype="int32")
    embedded = keras.layers.Flatten(name="flat")(keras.layers.Embedding(10, 2, name="embed")(codes))
    joined = keras.layers.Concatenate(name="join")([measures, embedded])
    score = keras.layers.Dense(2, name="score")(joined)
    flag = keras.layers.Dense(1, activation="sigmoid", name="flag")(joined)
    return keras.Model([measures, codes], [score, flag])


def keras_lambda() -> Any:
    """A model with a Lambda layer (Python bytecode in the file): ``features`` [-1, 4] -> ``species``."""
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    doubled = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="double")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="species")(doubled))


def keras_custom(lib: Path) -> Any:
    """A model with a custom layer from ``custom_layers`` (written into ``lib``, which is put on sys.path)."""
    import importlib
    import sys

    import keras

    lib.mkdir(parents=True, exist_ok=True)
    (lib / "custom_layers.py").write_text(CUSTOM_LAYER_MODULE)
    sys.path.insert(0, str(lib))
    try:
        custom_layers = importlib.import_module("custom_layers")
    finally:
        sys.path.remove(str(lib))
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,), name="features")
    scaled = custom_layers.Scale(3.0, name="scale")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="species")(scaled))
