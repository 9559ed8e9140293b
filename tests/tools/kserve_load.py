"""Load manifests with the KServe SDK's model classes, failing on any field the classes do not have.

Run with a Python that has ``kserve`` installed: ``python kserve_load.py FILE.yaml``.  Prints one line per object.
The SDK's own deserializer skips unknown keys, so this walks ``openapi_types``/``attribute_map`` itself and builds
each object through its constructor (which checks required fields and enumerations).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import kserve
import kubernetes.client
import yaml

SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def build(type_name: str, value: Any, where: str) -> Any:
    if value is None:
        return None
    if type_name in SCALARS:
        if not isinstance(value, SCALARS[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise ValueError(f"{where}: expected {type_name}, got {value!r}")
        return value
    if type_name.lower().startswith("list["):
        return [build(type_name[5:-1], v, f"{where}[{i}]") for i, v in enumerate(value)]
    match = re.fullmatch(r"dict\((\w+), (.+)\)", type_name) or re.fullmatch(r"Dict\[(\w+), (.+)\]", type_name)
    if match:
        return {k: build(match.group(2), v, f"{where}.{k}") for k, v in value.items()}
    klass = getattr(kserve, type_name, None) or getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object for {type_name}, got {value!r}")
    by_key = {key: attr for attr, key in klass.attribute_map.items()}
    unknown = sorted(set(value) - set(by_key))
    if unknown:
        raise ValueError(f"{where}: {type_name} has no field(s) {unknown}")
    kwargs = {by_key[k]: build(klass.openapi_types[by_key[k]], v, f"{where}.{k}") for k, v in value.items()}
    return klass(**kwargs)


KINDS = {"InferenceService": "V1beta1InferenceService", "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
         "ServingRuntime": "V1alpha1ServingRuntime", "InferenceGraph": "V1alpha1InferenceGraph"}

with open(sys.argv[1]) as stream:
    for doc in yaml.safe_load_all(stream):
        obj = build(KINDS[doc["kind"]], doc, doc["kind"])
        print(doc["kind"], obj.metadata.name)
