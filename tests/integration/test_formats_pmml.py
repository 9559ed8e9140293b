"""PMML models exported by sklearn2pmml and nyoka, served for real, checked against scikit-learn (and pypmml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import builders_pmml as bp
from tests.conftest import Server, start_server
from tests.integration.test_formats_tabular import check_served, describe, index_row
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

BUILDERS = {
    "iris_logistic": bp.iris_logistic_sklearn2pmml,
    "iris_tree": bp.iris_tree_sklearn2pmml,
    "iris_boosting": bp.iris_boosting_sklearn2pmml,
    "diabetes_linear": bp.diabetes_linear_sklearn2pmml,
    "passengers": bp.passengers_sklearn2pmml,
    "iris_forest": bp.iris_forest_nyoka,
    "iris_mlp": bp.iris_mlp_nyoka,
    "diabetes_boosting": bp.diabetes_boosting_nyoka,
}
#: Rows checked per model: a batch, and the last row as one instance. The passengers rows include text
#: values that are missing (sent as ""), but no missing numbers (plain JSON has no NaN).
ROWS = {
    "iris": [0, 25, 52, 77, 101, 149],
    "diabetes": [0, 1, 7, 100, 441],
}


def _rows(case: bp.PmmlCase) -> list[int]:
    if case.name == "passengers":
        frame = case.frame
        text_missing = frame.index[frame["embarked"].isna() & frame["age"].notna()][:2].tolist()
        complete = frame.index[frame.notna().all(axis=1)][:4].tolist()
        return [*complete, *text_missing]
    return ROWS[case.name.split("_")[0]]


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bp.PmmlCase]:
    root = tmp_path_factory.mktemp("pmml") / "models"
    built = {name: build(root) for name, build in BUILDERS.items()}
    bp.typed_fields_pmml(root)
    return built


@pytest.fixture(scope="module")
def served(cases: dict[str, bp.PmmlCase], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = next(iter(cases.values())).path.parent
    server = start_server(root, log_dir=tmp_path_factory.mktemp("logs"))
    try:
        yield server
    finally:
        server.stop()


def java_children(pid: int) -> list[int]:
    """Java processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == "java" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def gone(pid: int, timeout: float = 15) -> bool:
    """True once ``pid`` no longer runs (no process, or an unreaped zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------- conformance matrix
@pytest.mark.parametrize("name", list(BUILDERS))
def test_served_answers_match_scikit_learn(name: str, cases: dict[str, bp.PmmlCase], served: Server) -> None:
    case = cases[name]
    with served.client() as c:
        d = describe(c, name)
        assert [(i["name"], i["type"]) for i in d["inputs"]] == case.inputs
        assert {tuple(i["shape"]) for i in d["inputs"]} == {(-1,)}
        assert [(o["name"], o["type"]) for o in d["outputs"]] == case.outputs
        assert {tuple(o["shape"]) for o in d["outputs"]} == {(-1,)}
        assert c.get(f"/v2/models/{name}").json()["platform"] == "pmml"
        rows = _rows(case)
        want = case.want(rows)
        assert set(want) == {o for o, _ in case.outputs}
        check_served(c, name, case.feed(rows), want)
        # one row: a batch of one for OIP and TF Serving, and one instance for eval
        check_served(c, name, case.feed(rows[-1:]), case.want(rows[-1:]))


def test_labels_are_exact_and_distinct(cases: dict[str, bp.PmmlCase], served: Server) -> None:
    """The label outputs are the classes themselves (text or integers), not indices, for rows of every class."""
    case = cases["passengers"]
    rows = list(range(40))
    with served.client() as c:
        feed = case.feed(rows)
        complete = [i for i, r in enumerate(rows) if not np.isnan(case.frame["age"].iloc[r])]
        r = c.post("/models/passengers/eval", json={k: v[complete].tolist() for k, v in feed.items()})
        assert r.status_code == 200, r.text
        got = r.json()["survived"]
        assert got == case.model.predict(case.rows([rows[i] for i in complete])).tolist()
        assert set(got) == {0, 1}


def test_boolean_and_integer_fields(served: Server) -> None:
    flag = np.array([True, False, False, True])
    count = np.array([1, 2, 0, -3], dtype=np.int64)
    want = bp.typed_fields_answers(flag, count)
    with served.client() as c:
        d = describe(c, "typed")
        assert [(i["name"], i["type"]) for i in d["inputs"]] == [("flag", "bool"), ("count", "int64")]
        assert [(o["name"], o["type"]) for o in d["outputs"]] == [("yhat", "float64"), ("big", "bool"),
                                                                  ("doubled", "int64")]
        r = c.post("/models/typed/eval", json={"flag": flag.tolist(), "count": count.tolist()})
        assert r.status_code == 200, r.text
        assert r.json() == {k: v.tolist() for k, v in want.items()}
        r = c.post("/models/typed/eval", json={"flag": True, "count": 4})
        assert r.json() == {"yhat": 19.5, "big": True, "doubled": 8}
        body = {"inputs": [{"name": "flag", "shape": [4], "datatype": "BOOL", "data": flag.tolist()},
                           {"name": "count", "shape": [4], "datatype": "INT64", "data": count.tolist()}]}
        r = c.post("/v2/models/typed/infer", json=body)
        assert r.status_code == 200, r.text
        outs = {o["name"]: o for o in r.json()["outputs"]}
        assert {k: (o["datatype"], o["data"]) for k, o in outs.items()} == {
            "yhat": ("FP64", want["yhat"].tolist()), "big": ("BOOL", want["big"].tolist()),
            "doubled": ("INT64", want["doubled"].tolist())}
        r = c.post("/v1/models/typed:predict", json={"instances": [{"flag": bool(f), "count": int(n)}
                                                                  for f, n in zip(flag, count, strict=True)]})
        assert r.status_code == 200, r.text
        assert [p["doubled"] for p in r.json()["predictions"]] == want["doubled"].tolist()
        r = c.post("/models/typed/eval", json={"flag": [True], "count": [1.5]})
        assert r.status_code == 400 and "count" in r.json()["error"]


# ------------------------------------------------------------------------- missing values
def test_missing_values_reach_the_evaluator_as_missing(cases: dict[str, bp.PmmlCase], served: Server) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    case = cases["passengers"]
    frame = case.frame
    rows = [
        *frame.index[frame["age"].isna() & frame["embarked"].notna()][:2].tolist(),
        *frame.index[frame["age"].isna() & frame["embarked"].isna()][:1].tolist(),
        *frame.index[frame["embarked"].isna() & frame["age"].notna()][:1].tolist(),
        *frame.index[frame.notna().all(axis=1)][:1].tolist(),
    ]
    assert len(rows) == 5
    want = case.want(rows)
    feed = case.feed(rows)
    assert np.isnan(feed["age"]).sum() == 3 and (feed["embarked"] == "").sum() == 2
    # the imputers' values differ from what a wrong treatment (zero, a made-up category) would give
    assert not np.allclose(want["probability(1)"], case.model.predict_proba(
        frame.iloc[rows].fillna({"age": 0.0, "embarked": "Q"}))[:, 1])

    # TF Serving JSON accepts NaN
    instances = [{k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in feed.items()}
                 for i in range(len(rows))]
    body = json.dumps({"instances": instances})
    assert "NaN" in body
    r = httpx.post(f"{served.url}/v1/models/passengers:predict", content=body, timeout=30)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    np.testing.assert_allclose([p["probability(1)"] for p in preds], want["probability(1)"], rtol=1e-5)
    assert [p["survived"] for p in preds] == want["survived"].tolist()

    # OIP binary tensors (REST and gRPC) carry NaN
    def inputs(module: Any) -> list[Any]:
        made = []
        for name, kind in case.inputs:
            arr = feed[name]
            if kind == "string":
                x = module.InferInput(name, [len(rows)], "BYTES")
                x.set_data_from_numpy(np.array([s.encode() for s in arr], dtype=object))
            else:
                x = module.InferInput(name, [len(rows)], "FP64")
                x.set_data_from_numpy(arr.astype(np.float64))
            made.append(x)
        return made

    client = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
    result = client.infer("passengers", inputs(httpclient))
    np.testing.assert_allclose(result.as_numpy("probability(0)"), want["probability(0)"], rtol=1e-5)
    assert result.as_numpy("survived").tolist() == want["survived"].tolist()
    gclient = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc_port}")
    gresult = gclient.infer("passengers", inputs(grpcclient))
    np.testing.assert_allclose(gresult.as_numpy("probability(1)"), want["probability(1)"], rtol=1e-5)
    gclient.close()

    # plain JSON has no NaN: null is the missing value, and reaches the evaluator as missing too
    as_json = {k: [None if isinstance(x, float) and np.isnan(x) else x for x in v.tolist()] for k, v in feed.items()}
    assert as_json["age"].count(None) == 3
    with served.client() as c:
        r = c.post("/models/passengers/eval", json=as_json)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probability(1)"], want["probability(1)"], rtol=1e-5)
        assert r.json()["survived"] == want["survived"].tolist()


def test_a_row_the_model_cannot_score_gives_nan(cases: dict[str, bp.PmmlCase], served: Server) -> None:
    """A model without missing-value treatment answers no value: NaN in float outputs (null in JSON)."""
    case = cases["iris_logistic"]
    feed = case.feed([0, 1])
    feed["petal_width"] = np.array([np.nan, 0.2])
    body = json.dumps({"inputs": {k: v.tolist() for k, v in feed.items()}})
    r = httpx.post(f"{served.url}/v1/models/iris_logistic:predict", content=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert out["probability(setosa)"][0] is None and out["species"][0] == ""
    want = case.want([1])
    assert out["species"][1] == want["species"][0]
    np.testing.assert_allclose(out["probability(setosa)"][1], want["probability(setosa)"][0], rtol=1e-5)


def test_wrong_inputs_are_refused_clearly(served: Server) -> None:
    with served.client() as c:
        r = c.post("/models/passengers/eval", json={"sex": ["male"], "embarked": ["S"], "age": ["old"],
                                                    "fare": [1.0], "pclass": [3.0]})
        assert r.status_code == 400 and "age" in r.json()["error"]
        r = c.post("/models/passengers/eval", json={"sex": ["male"], "embarked": ["S"], "age": [30.0]})
        assert r.status_code == 400 and "missing input" in r.json()["error"]
        # a category the model does not know is invalid: no label for that row, and a 400 that says so
        r = c.post("/models/passengers/eval", json={"sex": ["male", "robot"], "embarked": ["S", "S"],
                                                    "age": [30.0, 30.0], "fare": [1.0, 1.0], "pclass": [3.0, 3.0]})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == ("the model gives no value for output 'survived' (row 1): a missing or "
                                     "invalid input value it has no treatment for")
        assert "Traceback" not in served.log()


def test_concurrent_requests_on_two_models(cases: dict[str, bp.PmmlCase], served: Server) -> None:
    jobs = [("iris_mlp", [i, (i * 37) % 150]) for i in range(0, 150, 10)]
    jobs += [("diabetes_boosting", [i, (i * 13) % 442]) for i in range(0, 440, 30)]

    def run(job: tuple[str, list[int]]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        name, rows = job
        case = cases[name]
        r = httpx.post(f"{served.url}/models/{name}/eval",
                       json={k: v.tolist() for k, v in case.feed(rows).items()}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json(), case.want(rows)

    with ThreadPoolExecutor(8) as pool:
        for got, want in pool.map(run, jobs):
            for out, w in want.items():
                if w.dtype.kind == "f":
                    np.testing.assert_allclose(got[out], w, rtol=1e-5)
                else:
                    assert got[out] == w.tolist()


# ------------------------------------------------------------------------- where PMML differs
def test_nyoka_multinomial_logistic_matches_pypmml_in_process(serve, tmp_path: Path) -> None:
    """nyoka writes a multinomial logistic regression as one-vs-rest logits normalised by their sum.

    scikit-learn's multinomial model normalises with a softmax, so the probabilities legitimately differ
    (the labels agree): the server is compared with pypmml evaluating the same file in this process.
    """
    import pandas as pd
    from pypmml import Model
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame, labels = bp.iris_frame()
    pipe = Pipeline([("classifier", LogisticRegression(max_iter=1000))]).fit(frame, labels)
    path = bp.export_nyoka(pipe, list(frame.columns), "species", tmp_path / "iris_ovr.pmml")
    rows = [0, 25, 52, 77, 101, 149]
    part = frame.iloc[rows]
    model = Model.fromFile(str(path))
    try:
        local = model.predict(pd.DataFrame(part))
    finally:
        Model.close()
    server = serve(path)
    with server.client() as c:
        r = c.post("/models/iris_ovr/eval", json={k: part[k].tolist() for k in frame.columns})
        assert r.status_code == 200, r.text
        got = r.json()
    assert got["predicted_species"] == pipe.predict(part).tolist() == local["predicted_species"].tolist()
    for cls in pipe.classes_:
        np.testing.assert_allclose(got[f"probability_{cls}"], local[f"probability_{cls}"], rtol=1e-9)
    softmax = pipe.predict_proba(part)
    assert not np.allclose(np.array([got[f"probability_{cls}"] for cls in pipe.classes_]).T, softmax, atol=1e-3)


# ------------------------------------------------------------------------- the Java runtime
def test_java_runtime_stops_with_the_server(serve, cases: dict[str, bp.PmmlCase], tmp_path: Path) -> None:
    model = tmp_path / "one" / "iris.pmml"
    model.parent.mkdir()
    model.write_bytes(cases["iris_logistic"].path.read_bytes())
    server = serve(model)
    with server.client() as c:
        assert c.post("/models/iris/eval", json={k: 1.0 for k in ("sepal_length", "sepal_width", "petal_length",
                                                                   "petal_width")}).status_code == 200
    children = java_children(server.proc.pid)
    assert len(children) == 1, children
    assert "started a Java runtime for the PMML evaluator" in server.log()
    assert server.stop() == 0
    assert gone(children[0]), f"java {children[0]} still runs after the server stopped"
    assert f"stopped the Java runtime of the PMML evaluator (pid {children[0]})" in server.log()

    # unloading the last PMML model stops it too; loading again starts a new one
    server = serve(model)
    first = java_children(server.proc.pid)
    assert len(first) == 1
    with server.client() as c:
        assert c.post("/v2/repository/models/iris/unload").status_code == 200
        assert gone(first[0])
        assert c.post("/v2/repository/models/iris/load").status_code == 200
        assert c.get("/v2/models/iris/ready").status_code == 200
        second = java_children(server.proc.pid)
        assert len(second) == 1 and second != first

    # a runtime killed under the server is replaced by the next request, which is answered
    os.kill(second[0], signal.SIGKILL)
    assert gone(second[0])
    case = cases["iris_logistic"]
    with server.client() as c:
        check_served(c, "iris", case.feed([0, 77, 149]), case.want([0, 77, 149]))
    third = java_children(server.proc.pid)
    assert len(third) == 1 and third != second
    assert "exited; starting another" in server.log() and "loaded again on the new Java runtime" in server.log()
    assert "Traceback" not in server.log()

    # a server killed outright does not leave its Java runtime behind either
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    assert gone(third[0]), f"java {third[0]} outlived a killed server"


def test_the_server_owns_its_java_runtime(cases: dict[str, bp.PmmlCase], tmp_path: Path) -> None:
    """The runtime belongs to the server's PMML format: started by its first model, stopped by the server."""
    from starlette.testclient import TestClient

    from mlport.formats.pmml import PmmlFormat
    from mlport.formats.registry import FormatRegistry
    from mlport.protocols.http.app import build_app
    from mlport.protocols.http.server import build_state
    from mlport.settings import Settings

    model = tmp_path / "one" / "iris.pmml"
    model.parent.mkdir()
    model.write_bytes(cases["iris_logistic"].path.read_bytes())
    fmt = PmmlFormat()
    state = build_state(Settings(model_path=model.parent, poll_interval_s=0), formats=FormatRegistry([fmt]))
    with TestClient(build_app(state)) as client:
        wait_for(lambda: client.get("/v2/models/iris/ready").status_code == 200, 60, "the model to load")
        r = client.post("/models/iris/eval", json={k: 1.0 for k in ("sepal_length", "sepal_width",
                                                                   "petal_length", "petal_width")})
        assert r.status_code == 200, r.text
        pid = fmt.runtime.pid()
        assert pid is not None and pid in java_children(os.getpid())
    # leaving the client stops the app: its manager closes the models, then the formats
    assert gone(pid), f"java {pid} still runs after the server stopped"
    assert fmt.runtime.pid() is None

    # closing the formats (the server's last step) stops it even while a model still holds it
    from mlport.formats.base import LoadOptions

    evaluator = fmt.load(model, LoadOptions())
    pid = fmt.runtime.pid()
    assert pid is not None
    FormatRegistry([fmt]).close()
    assert gone(pid) and fmt.runtime.pid() is None
    evaluator.close()


# ------------------------------------------------------------------------- bad files
BROKEN = b'<?xml version="1.0"?>\n<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">\n<Header>\n'
NOT_PMML = b'<?xml version="1.0"?>\n<model><weights/></model>\n'
NONSENSE = (b'<?xml version="1.0"?>\n<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">'
            b'<Header/><DataDictionary><DataField name="x" optype="continuous" dataType="double"/></DataDictionary>'
            b'<RegressionModel functionName="regression"><MiningSchema><MiningField name="nope"/></MiningSchema>'
            b'</RegressionModel></PMML>\n')


def _entity_pmml(secret: Path) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE PMML [<!ENTITY secret SYSTEM "file://{secret}">]>\n'
            f'<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4"><Header description="&secret;"/></PMML>\n'
            ).encode()


def test_bad_pmml_files_fail_clearly(serve, cases: dict[str, bp.PmmlCase], tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-value")
    (root / "broken.pmml").write_bytes(BROKEN)
    (root / "wrongroot.pmml").write_bytes(NOT_PMML)
    (root / "nonsense.pmml").write_bytes(NONSENSE)
    (root / "entity.pmml").write_bytes(_entity_pmml(secret))
    (root / "empty.pmml").write_bytes(b"")
    (root / "settings.xml").write_bytes(NOT_PMML)  # an XML file that is not PMML: not a model
    # a PMML document in an .xml file is recognised by its root element
    declaration, _, rest = cases["iris_mlp"].path.read_bytes().partition(b"\n")
    (root / "flowers.xml").write_bytes(b"\xef\xbb\xbf" + declaration + b"\n<!-- exported -->\n" + rest)

    server = serve(root, wait_ready=False)
    reasons = {
        "broken": "broken.pmml is not well-formed XML",
        "wrongroot": "wrongroot.pmml has the root element <model>, not <PMML>",
        "nonsense": "pypmml could not load nonsense.pmml",
        "entity": "entity.pmml declares a DTD",
        "empty": "empty.pmml is not well-formed XML",
    }
    for name, reason in reasons.items():
        row = index_row(server, name)
        assert row["state"] == "UNAVAILABLE", row
        assert reason in row["reason"], row
        assert "\n" not in row["reason"] and "Traceback" not in row["reason"]
        assert "the-secret-value" not in row["reason"]
    assert index_row(server, "flowers")["state"] == "READY"
    with server.client() as c:
        names = {r["name"] for r in c.post("/v2/repository/index").json()}
        assert "settings" not in names
        r = c.get("/v2/models/nonsense/ready")
        assert r.status_code == 503 and "pypmml could not load" in r.json()["error"]
        r = c.post("/models/broken/eval", json={"x": [1.0]})
        assert r.status_code == 503 and "not well-formed XML" in r.json()["error"]
        case = cases["iris_mlp"]
        check_served(c, "flowers", case.feed([3, 80]), case.want([3, 80]))
    log = server.log()
    assert "Traceback" not in log and "the-secret-value" not in log


# ------------------------------------------------------------------------- missing extra, missing Java
def _index_reason(server: Server, name: str) -> str:
    row = index_row(server, name)
    assert row["state"] == "UNAVAILABLE", row
    reason: str = row["reason"]
    assert "\n" not in reason and "Traceback" not in reason
    return reason


def test_without_pypmml_the_install_line_is_given(serve, cases: dict[str, bp.PmmlCase], tmp_path: Path) -> None:
    model = tmp_path / "models" / "iris.pmml"
    model.parent.mkdir()
    model.write_bytes(cases["iris_logistic"].path.read_bytes())
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"),) if p)

    # not installed: the import system finds no pypmml
    absent = tmp_path / "absent"
    absent.mkdir()
    (absent / "sitecustomize.py").write_text("import sys\nsys.modules['pypmml'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(absent), path) if p)}
    server = serve(model.parent, wait_ready=False, env=env)
    reason = _index_reason(server, "iris")
    assert reason == "the pmml format needs pypmml: pip install 'mlport[pmml]'"
    assert "Traceback" not in server.log()
    assert not java_children(server.proc.pid)
    formats = subprocess.run([sys.executable, "-m", "mlport.cli.main", "formats"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, **env})
    line = next(x for x in formats.stdout.splitlines() if x.startswith("pmml"))
    assert "missing pypmml: pip install 'mlport[pmml]'" in line

    # installed but broken: importing it fails
    broken = tmp_path / "broken"
    (broken / "pypmml").mkdir(parents=True)
    (broken / "pypmml" / "__init__.py").write_text("raise ImportError('a part of pypmml is missing')\n")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(broken), path) if p)}
    server = serve(model.parent, wait_ready=False, env=env)
    reason = _index_reason(server, "iris")
    assert reason.startswith("the pmml format could not import pypmml (a part of pypmml is missing)")
    assert reason.endswith("pip install 'mlport[pmml]'")
    assert "Traceback" not in server.log()


def test_without_java_the_runtime_to_install_is_named(serve, cases: dict[str, bp.PmmlCase], tmp_path: Path) -> None:
    model = tmp_path / "models" / "iris.pmml"
    model.parent.mkdir()
    model.write_bytes(cases["iris_logistic"].path.read_bytes())
    empty = tmp_path / "bin"
    empty.mkdir()
    server = serve(model.parent, wait_ready=False, env={"PATH": str(empty), "JAVA_HOME": ""})
    reason = _index_reason(server, "iris")
    assert reason == ("the pmml format needs a Java runtime (none in $JAVA_HOME or on PATH): install a Java "
                      "runtime, e.g. apt-get install default-jre-headless")
    with server.client() as c:
        r = c.post("/models/iris/eval", json={"sepal_length": 1.0})
        assert r.status_code == 503 and "default-jre-headless" in r.json()["error"]
    assert "Traceback" not in server.log()
