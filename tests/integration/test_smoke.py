from pathlib import Path

import numpy as np

from tests.builders import iris_onnx, ort_run


def test_iris_eval_matches_onnxruntime(serve, tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    server = serve(model)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    want = ort_run(model, {"input": x})
    with server.client() as c:
        r = c.post("/models/iris/eval", json={"input": x.tolist()})
        assert r.status_code == 200, r.text
        got = r.json()
    assert got["label"] == want["label"].tolist()
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
