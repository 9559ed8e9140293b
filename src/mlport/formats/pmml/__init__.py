"""PMML models (``*.pmml``, and ``*.xml`` files whose root element is ``PMML``), evaluated by pypmml.

pypmml runs the PMML4S evaluator in a Java runtime: regression, trees, mining models (forests, gradient
boosting, model chains), neural networks, with their transformations and missing-value treatments. It
needs ``pip install 'mlport[pmml]'`` and a Java runtime (``$JAVA_HOME/bin/java``, else ``java`` on
``PATH``; e.g. ``apt-get install default-jre-headless``). ``JAVA_OPTS`` is passed to that runtime.

Signature:

- inputs are the model's active fields (its MiningSchema), named by the field, each of shape ``[-1]``
  (one value per row), typed by the DataDictionary: ``string`` is BYTES, ``double`` FP64, ``float`` FP32,
  ``integer`` INT64, ``boolean`` BOOL; dates and times are BYTES (their PMML text form);
- outputs are the model's OutputFields (predicted values, probabilities...), named by the field, each of
  shape ``[-1]``, typed by the field's datatype as above. A target whose predicted value no OutputField
  gives (a model without an Output element, or one that only lists probabilities) is an output too,
  named by the target field. A model without targets and without an Output element serves the
  evaluator's default outputs.

Missing values, on the wire:

- a numeric (FP32/FP64) input value is missing when it is NaN or infinite: send ``NaN`` in TF Serving JSON
  (which accepts the token) or in binary tensors (the OIP binary extension, gRPC); the plain JSON of
  ``/eval`` and OIP has no NaN and refuses ``null``, so there a row without a value needs a binary tensor;
- a string (BYTES) input value is missing when it is the empty string ``""``;
- INT64 and BOOL inputs cannot carry a missing value.

Missing values reach the evaluator as missing, so the model's own treatment applies
(``missingValueReplacement``, ``missingValueStrategy``...). An output the model gives no value for is
NaN in a float output (``null`` in JSON answers) and ``""`` in a string output; an integer or boolean
output without a value (the evaluator writes the smallest INT64 for it) fails the request with a 400 that
names the output and the row.

Prediction is one call per batch: the rows travel to the Java runtime as one JSON document (the
``split`` orientation pypmml uses for DataFrames, encoded here with full float precision) and come back
as one; PMML4S evaluates the rows one after another inside the Java runtime, and the Python side
encodes and decodes the columns with numpy. Calls on one model are serialised (PMML4S models are not
documented as safe for concurrent scoring); different models score in parallel.

One Java runtime serves every PMML model of the server (:class:`~mlport.formats.pmml.jvm.JavaRuntime`,
held by the format, which the server closes when it stops). It starts with the first model loaded, in its
own process group (a Ctrl-C for the server does not kill it mid-request), listening on 127.0.0.1 only
with an authentication token, and it stops when the last PMML model is closed or the server stops; it also
exits by itself when the server process dies, as its standard input closes. Should it exit while the
server runs (killed for memory...), the request that finds it gone starts a new one and loads the model
on it again (each model keeps its checked document in memory for that).

PMML files hold no code, so they load without trust. The XML is checked before the evaluator sees it:
the file is read up to a size limit, must be well-formed with a ``PMML`` root, and may not declare a
DTD (no entities, so no external entity can be read and no entity expansion can blow up); the
evaluator then parses those same checked bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mlport.formats.base import Evaluator, LoadOptions, MissingExtra, ModelFormat
from mlport.formats.pmml.document import SNIFF_BYTES, check_pmml_xml, has_pmml_root, one_line, read_bounded
from mlport.formats.pmml.evaluator import PmmlEvaluator
from mlport.formats.pmml.jvm import JavaRuntime, java_runtime

__all__ = ["MAX_PMML_BYTES", "JavaRuntime", "PmmlEvaluator", "PmmlFormat", "check_pmml_xml", "has_pmml_root",
           "java_runtime"]

PMML_SUFFIXES = (".pmml",)
XML_SUFFIXES = (".xml",)
#: Largest PMML file loaded.
MAX_PMML_BYTES = 256 * 1024 * 1024
_JAVA_HINT = "install a Java runtime, e.g. apt-get install default-jre-headless"


class PmmlFormat(ModelFormat):
    name: ClassVar[str] = "pmml"
    extra: ClassVar[str | None] = "pmml"
    requires: ClassVar[tuple[str, ...]] = ("pypmml", "py4j")
    runs_code: ClassVar[bool] = False

    def __init__(self) -> None:
        #: The Java runtime of the models this format loaded; stopped by :meth:`close`.
        self.runtime = JavaRuntime()

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix in PMML_SUFFIXES:
            return True
        if suffix not in XML_SUFFIXES:
            return False
        with path.open("rb") as f:
            return has_pmml_root(f.read(SNIFF_BYTES))

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        try:
            import py4j.java_gateway  # noqa: F401
            import pypmml  # noqa: F401
        except ImportError as exc:
            raise MissingExtra(f"the {self.name} format could not import pypmml ({one_line(str(exc))}): "
                               f"pip install 'mlport[{self.extra}]'") from None
        java = java_runtime()
        if java is None:
            raise MissingExtra(f"the {self.name} format needs a Java runtime (none in $JAVA_HOME or on PATH): "
                               f"{_JAVA_HINT}")
        data = read_bounded(path, MAX_PMML_BYTES)
        check_pmml_xml(data, path.name)
        return PmmlEvaluator(data, path.name, java, self.runtime)

    def close(self) -> None:
        """Stop the Java runtime (the server stops: its models are closed)."""
        self.runtime.close()
