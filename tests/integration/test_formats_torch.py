"""PyTorch models built and trained here (TorchScript and torch.export), served for real, checked against torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http

from mlport.formats.base import LoadOptions, MissingExtra
from mlport.formats.torch import TorchFormat
from tests.integration.test_formats_tabular import check_served, describe, index_row, mlport_describe

# TorchScript is deprecated in PyTorch 2.13, and still served: its warnings are expected here
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")]


# ------------------------------------------------------------------------- models (module level: scriptable)
class IrisMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=1)


class Pair(torch.nn.Module):
    """Two inputs, a tuple out."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Linear(3, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(a) + b, (a * b).sum(dim=1)


class Scores(torch.nn.Module):
    """A dict out, with an integer output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.linear(x)
        return {"logits": logits, "best": torch.argmax(logits, dim=1)}


class Tagged(torch.nn.Module):
    """For torch.export: a float and an integer input, a dict out."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        score = self.linear(a) + b.to(torch.float32).unsqueeze(1)
        return {"score": score, "top": torch.argmax(score, dim=1)}


def _trained_iris() -> tuple[IrisMLP, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    torch.manual_seed(0)
    model = IrisMLP()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(xt)), yt)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xt).argmax(dim=1) == yt).float().mean())
    assert accuracy > 0.9  # the model learned something: outputs are not all alike
    return model, x


def _run(module: Any, *arrays: np.ndarray) -> Any:
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in arrays))


def _signature_yaml(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]],
                    extra: str = "") -> str:
    def rows(tensors: list[tuple[str, str, list[int]]]) -> str:
        return "".join(f"    - {{name: {n}, datatype: {t}, shape: {s}}}\n" for n, t, s in tensors)

    return f"{extra}signature:\n  inputs:\n{rows(inputs)}  outputs:\n{rows(outputs)}"


def _export(model: torch.nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path) -> Any:
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model.eval(), example, dynamic_shapes={n: {0: batch} for n in names})
    torch.export.save(ep, path)
    return torch.export.load(path).module()


# ------------------------------------------------------------------------- serving
def test_torchscript_and_exported_models_match_torch(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    iris, x_iris = _trained_iris()
    torch.jit.save(torch.jit.script(iris), root / "iris.pt")
    (root / "iris.model.yaml").write_text(
        _signature_yaml([("x", "FP32", [-1, 4])], [("probabilities", "FP32", [-1, 3])]))

    torch.manual_seed(1)
    pair = torch.jit.trace(Pair().eval(), (torch.randn(2, 3), torch.randn(2, 3)))
    torch.jit.save(pair, root / "pair.ts")
    # names that are not forward's parameters: the inputs are passed by position, outputs taken in order
    (root / "pair.model.yaml").write_text(
        _signature_yaml([("left", "FP32", [-1, 3]), ("right", "FP32", [-1, 3])],
                        [("mixed", "FP32", [-1, 3]), ("dot", "FP32", [-1])]))

    torch.jit.save(torch.jit.script(Scores().eval()), root / "scores.pt")
    # a dict is matched by name (declared in another order than returned); the input is renamed by alias
    (root / "scores.model.yaml").write_text(
        "signature:\n  inputs:\n    - {name: x, alias: features, datatype: FP32, shape: [-1, 4]}\n"
        "  outputs:\n    - {name: best, datatype: INT64, shape: [-1]}\n"
        "    - {name: logits, datatype: FP32, shape: [-1, 3]}\n")

    exported_iris = _export(iris, (torch.from_numpy(x_iris[:5]),), ["x"], root / "iris_export.pt2")
    torch.manual_seed(2)
    exported_tagged = _export(Tagged(), (torch.randn(4, 3), torch.arange(4)), ["a", "b"], root / "tagged.pt2")

    server = serve(root, "--trusted", "--intra-op-threads", "1")
    rows = [0, 51, 77, 120, 149]
    x = x_iris[rows]
    scripted = torch.jit.load(root / "iris.pt")
    with server.client() as c:
        assert c.get("/v2/models/iris").json()["platform"] == "pytorch_libtorch"
        assert c.get("/v2/models/iris_export").json()["platform"] == "pytorch_export"

        assert describe(c, "iris") == {
            "inputs": [{"name": "x", "type": "float32", "shape": [-1, 4]}],
            "outputs": [{"name": "probabilities", "type": "float32", "shape": [-1, 3]}]}
        want = _run(scripted, x).numpy()
        assert len({int(i) for i in want.argmax(axis=1)}) == 3
        check_served(c, "iris", {"x": x}, {"probabilities": want})

        d = describe(c, "pair")
        assert [i["name"] for i in d["inputs"]] == ["left", "right"]
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
        mixed, dot = _run(torch.jit.load(root / "pair.ts"), a, b)
        check_served(c, "pair", {"left": a, "right": b}, {"mixed": mixed.numpy(), "dot": dot.numpy()})

        d = describe(c, "scores")
        assert d["inputs"] == [{"name": "features", "type": "float32", "shape": [-1, 4]}]
        assert d["outputs"] == [{"name": "best", "type": "int64", "shape": [-1]},
                                {"name": "logits", "type": "float32", "shape": [-1, 3]}]
        got = _run(torch.jit.load(root / "scores.pt"), x)
        check_served(c, "scores", {"features": x}, {"best": got["best"].numpy(), "logits": got["logits"].numpy()})

        # torch.export programs carry their signature, with the dynamic batch dimension as -1
        assert describe(c, "iris_export") == {
            "inputs": [{"name": "x", "type": "float32", "shape": [-1, 4]}],
            "outputs": [{"name": "output", "type": "float32", "shape": [-1, 3]}]}
        check_served(c, "iris_export", {"x": x}, {"output": _run(exported_iris, x).numpy()})
        assert describe(c, "tagged") == {
            "inputs": [{"name": "a", "type": "float32", "shape": [-1, 3]},
                       {"name": "b", "type": "int64", "shape": [-1]}],
            "outputs": [{"name": "score", "type": "float32", "shape": [-1, 2]},
                        {"name": "top", "type": "int64", "shape": [-1]}]}
        ta, tb = rng.normal(size=(3, 3)).astype(np.float32), np.array([0, 5, -2], dtype=np.int64)
        got = _run(exported_tagged, ta, tb)
        check_served(c, "tagged", {"a": ta, "b": tb}, {"score": got["score"].numpy(), "top": got["top"].numpy()})

        # wrong shapes are refused before the model runs
        r = c.post("/models/iris_export/eval", json={"x": [[1.0, 2.0, 3.0]]})
        assert r.status_code == 400 and "'x'" in r.json()["error"]

    # the binary protocol hands the model read-only buffers: they still reach torch
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    inp = triton_http.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = client.infer("iris", [inp], outputs=[triton_http.InferRequestedOutput("probabilities", binary_data=True)])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5, atol=1e-7)
    client.close()
    # the process-wide thread count is set once, by the first PyTorch model loaded
    assert server.log().count("torch.set_num_threads(1)") == 1


def test_torch_files_need_trust_and_torchscript_a_signature(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    iris, x_iris = _trained_iris()
    iris_yaml = _signature_yaml([("x", "FP32", [-1, 4])], [("probabilities", "FP32", [-1, 3])])
    torch.jit.save(torch.jit.script(iris), root / "scripted.pt")
    (root / "scripted.model.yaml").write_text(iris_yaml)
    torch.jit.save(torch.jit.script(iris), root / "bare.pt")  # no signature declared
    _export(iris, (torch.from_numpy(x_iris[:5]),), ["x"], root / "program.pt2")
    torch.save(iris.state_dict(), root / "weights.pt")
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
    torch.save(seq, root / "seq.pth")  # a pickled module whose classes the server can import
    (root / "seq.model.yaml").write_text(iris_yaml)
    # a torch.save file that would leave a mark when unpickled
    marker = tmp_path / "unpickled"
    torch.save(_Mark(marker), root / "evil.pt")
    # a file declared with an output shape the model does not give
    torch.jit.save(torch.jit.script(iris), root / "liar.pt")
    (root / "liar.model.yaml").write_text(
        _signature_yaml([("x", "FP32", [-1, 4])], [("probabilities", "FP32", [-1, 2])]))

    server = serve(root, wait_ready=False)
    reasons = {name: index_row(server, name) for name in ("scripted", "bare", "program", "weights", "seq", "evil")}
    assert {r["state"] for r in reasons.values()} == {"UNAVAILABLE"}
    assert "scripted.pt is a TorchScript archive: PyTorch documents that torch.jit.load can execute code" \
        in reasons["scripted"]["reason"]
    assert "program.pt2 is a torch.export program: torch.export.load unpickles" in reasons["program"]["reason"]
    for name, file in (("weights", "weights.pt"), ("seq", "seq.pth"), ("evil", "evil.pt")):
        assert f"{file} is a torch.save pickle, not a TorchScript archive: unpickling it runs code" \
            in reasons[name]["reason"]
    assert all("--trusted" in r["reason"] for r in reasons.values())
    with server.client() as c:
        r = c.post("/models/scripted/eval", json={"x": x_iris[:2].tolist()})
        assert r.status_code == 503 and "TorchScript archive" in r.json()["error"]
    assert not marker.exists()
    done = mlport_describe(root / "evil.pt")
    assert done.returncode != 0 and "is a torch.save pickle" in done.stdout
    assert not marker.exists()
    server.stop()

    trusted = serve(root, "--trusted")
    bare = index_row(trusted, "bare")
    assert bare["state"] == "UNAVAILABLE"
    assert "bare.pt is a TorchScript archive, which does not record the datatypes and shapes" in bare["reason"]
    assert ("signature: {inputs: [{name: x, datatype: FP32, shape: [-1, 4]}], "
            "outputs: [{name: output, datatype: FP32, shape: [-1, 3]}]}") in bare["reason"]
    weights = index_row(trusted, "weights")
    assert weights["state"] == "UNAVAILABLE"
    assert "weights.pt holds a state dict or checkpoint (OrderedDict)" in weights["reason"]
    assert "cannot be served" in weights["reason"]
    evil = index_row(trusted, "evil")
    assert evil["state"] == "UNAVAILABLE" and "not an nn.Module" in evil["reason"]
    assert marker.exists()  # trusted, it was unpickled: the check above did prove something
    x = x_iris[[3, 66, 140]]
    with trusted.client() as c:
        check_served(c, "scripted", {"x": x}, {"probabilities": _run(iris, x).numpy()})
        check_served(c, "program", {"x": x}, {"output": _run(iris, x).numpy()})
        assert c.get("/v2/models/seq").json()["platform"] == "pytorch"
        check_served(c, "seq", {"x": x}, {"probabilities": _run(seq, x).numpy()})
        r = c.post("/models/liar/eval", json={"x": x.tolist()})
        assert r.status_code == 500
        assert r.json()["error"] == ("liar.pt: output 'probabilities' has shape [3, 3]; "
                                     "the signature declares [-1, 2]")
        assert c.get("/v2/health/live").status_code == 200


class _Mark:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


# ------------------------------------------------------------------------- missing extra
def test_missing_torch_gives_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(IrisMLP()), model)
    monkeypatch.setitem(sys.modules, "torch", None)
    assert not TorchFormat.available()
    for trusted in (True, False):
        with pytest.raises(MissingExtra, match=r"^the torch format needs torch: pip install 'mlport\[torch\]'"):
            TorchFormat().load(model, LoadOptions(trusted=trusted))


def test_missing_torch_through_the_cli(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(IrisMLP()), model)
    hide = "import sys; sys.modules['torch'] = None; from mlport.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", hide, "describe", str(model), "--trusted"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "the torch format needs torch: pip install 'mlport[torch]'" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-c", hide, "formats"], capture_output=True, text=True, timeout=120)
    line = next(x for x in done.stdout.splitlines() if x.startswith("torch "))
    assert "missing torch: pip install 'mlport[torch]'" in line and "trusted models only" in line
