"""The ``digits`` preset: scikit-learn's 8x8 handwritten digits, an image -> the digit.

Input ``image`` FP32 [-1, 8, 8, 1] (NHWC, one gray channel, values 0..16), reshaped to 64 columns inside the
graph; model.yaml scales PNG pixels (0..255) by 16/255 onto the training range.  Outputs ``label`` INT64
(the digit) and ``probabilities`` FP32 [-1, 10].  ``digit.png`` beside the model is a held-out digit to send.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mlport.presets.common import Trained, save, score, split, to_onnx, write

__all__ = ["SAMPLE", "build", "train"]

#: The sample image written beside the model.
SAMPLE = "digit.png"

CONFIG = """\
# PNG pixels (0..255) times 16/255 match the training range of the 8x8 digits (0..16);
# digit.png (beside this file) is a held-out digit to try
image: {scale: 0.0627451}
"""


def _image_front(classifier: Any, side: int) -> Any:
    """Prepend a Reshape so the model takes [N, side, side, 1] images instead of [N, side*side] rows."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    flat = classifier.graph.input[0].name
    shape = numpy_helper.from_array(np.array([-1, side * side], dtype=np.int64), name="flat_shape")
    front_graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "flat_shape"], [flat], name="image_to_rows")],
        "image_front",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", side, side, 1])],
        [helper.make_tensor_value_info(flat, TensorProto.FLOAT, ["N", side * side])],
        [shape],
    )
    front = helper.make_model(front_graph, opset_imports=list(classifier.opset_import))
    front.ir_version = classifier.ir_version
    merged = compose.merge_models(front, classifier, io_map=[(flat, flat)], name=classifier.graph.name)
    merged.producer_name = classifier.producer_name
    merged.producer_version = classifier.producer_version
    onnx.checker.check_model(merged, full_check=True)
    return merged


def train() -> tuple[Trained, bytes]:
    """The model, and a held-out digit it classifies correctly as an 8-bit gray 8x8 PNG."""
    from PIL import Image
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = split(x.astype(np.float32), y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5)).fit(x_train, y_train)
    onx = _image_front(to_onnx(model, [("pixels", FloatTensorType([None, 64]))]), 8)
    right = np.flatnonzero(model.predict(x_test) == y_test)
    pixels = np.round(x_test[right[0]].reshape(8, 8) * 255 / 16).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels, "L").save(png, "PNG")
    trained = Trained(onx, score(model, x_test, y_test), len(y_train), len(y_test),
                      "scikit-learn load_digits (1797 images, 8x8 gray, values 0..16)", CONFIG,
                      f"`{SAMPLE}` is a held-out {y_test[right[0]]}.")
    return trained, png.getvalue()


def build(folder: Path) -> None:
    trained, png = train()
    save("digits", trained, folder)
    write(folder / SAMPLE, png)
