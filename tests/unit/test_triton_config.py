"""Triton's config.pbtxt: the text format (protobuf's parser), the mapping to ModelConfig, and the repository scan."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlport.errors import InvalidInput
from mlport.formats.config import BatchingConfig, ModelConfig, TensorConfig, VersionPolicy
from mlport.formats.registry import default_registry
from mlport.runtime.repository import Repository
from mlport.runtime.triton import (
    MAX_CONFIG_BYTES,
    parse_model_config,
    parse_triton_config,
    read_triton_config,
)
from tests.builders import scale_onnx

FULL = """
# A config as Triton's documentation writes them.
name: "resnet"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest: { num_versions: 2 } }
input [
  {
    name: "images"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "scores"
    data_type: TYPE_FP32
    dims: [ 1000 ]
  },
  {
    name: "names"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2500
}
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
default_model_filename: "net.onnx"
"""


def test_full_config_maps_onto_model_config() -> None:
    model = parse_triton_config(FULL, "resnet")
    cfg = model.config
    assert cfg.format == "onnx" and model.platform == "onnxruntime_onnx"
    assert cfg.version_policy == VersionPolicy(latest=2)
    assert cfg.signature is not None
    # max_batch_size > 0: the dims leave out the batch axis, which the served shape puts back as -1
    assert cfg.signature.inputs == (TensorConfig(name="images", datatype="FP32", shape=(-1, 3, 224, 224)),)
    assert cfg.signature.outputs == (
        TensorConfig(name="scores", datatype="FP32", shape=(-1, 1000)),
        TensorConfig(name="names", datatype="BYTES", shape=(-1, -1)),
    )
    assert cfg.batching == BatchingConfig(max_batch_size=8, max_delay_ms=2.5, preferred_batch_sizes=(4, 8))
    assert cfg.options == {"intra_op_threads": 2}
    assert model.model_filename == "net.onnx"
    assert model.warnings == ("fields mlport does not use are ignored: input.format, instance_group",)
    complete = cfg.signature.complete()
    assert complete is not None and [s.shape for s in complete.inputs] == [(-1, 3, 224, 224)]


def test_no_batching_keeps_dims_and_batching_off() -> None:
    model = parse_triton_config("""
        name: "m" backend: "onnxruntime" max_batch_size: 0
        input { name: "x" data_type: TYPE_INT64 dims: [ -1, 3 ] }
        output { name: "y" data_type: TYPE_BOOL dims: [ -1 ] }
    """, "m")
    sig = model.config.signature
    assert sig is not None
    assert sig.inputs[0].shape == (-1, 3) and sig.inputs[0].datatype == "INT64"
    assert sig.outputs[0].shape == (-1,) and sig.outputs[0].datatype == "BOOL"
    assert model.config.batching == BatchingConfig() and not model.config.batching.enabled
    assert model.model_filename is None and model.warnings == ()


def test_max_batch_size_without_dynamic_batching_shapes_only() -> None:
    model = parse_triton_config('max_batch_size: 4 input { name: "x" data_type: TYPE_FP32 dims: [2] }')
    sig = model.config.signature
    assert sig is not None and sig.inputs[0].shape == (-1, 2) and sig.outputs == ()
    assert model.config.batching.max_batch_size == 0
    assert model.config.format is None  # no platform: the file's format is detected


@pytest.mark.parametrize(("text", "policy"), [
    ("", VersionPolicy()),
    ("version_policy { latest { num_versions: 3 } }", VersionPolicy(latest=3)),
    ("version_policy { all { } }", VersionPolicy(all=True)),
    ("version_policy: { all: {} }", VersionPolicy(all=True)),
    ("version_policy { specific { versions: [1, 3] } }", VersionPolicy(specific=(1, 3))),
    ("version_policy { specific { versions: 2 versions: 5 } }", VersionPolicy(specific=(2, 5))),
    ("version_policy < latest < num_versions: 1 > >", VersionPolicy(latest=1)),
])
def test_version_policies(text: str, policy: VersionPolicy) -> None:
    got = parse_triton_config(text).config.version_policy
    assert got == policy
    assert got.select([1, 2, 3, 5]) == policy.select([1, 2, 3, 5])


def test_every_triton_datatype() -> None:
    names = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]
    text = "\n".join(f'input {{ name: "x{n}" data_type: TYPE_{n} dims: [1] }}' for n in names)
    text += '\ninput { name: "s" data_type: TYPE_STRING dims: [1] }'
    sig = parse_triton_config(text).config.signature
    assert sig is not None
    assert [t.datatype for t in sig.inputs] == [*names, "BYTES"]


def test_text_format_syntax() -> None:
    config = parse_model_config(r"""
        # comments anywhere
        name: "x" 'y'  "\101\x42\u00e9\n"   # adjacent strings join; escapes
        max_batch_size: 0x1F; default_model_filename: "m"
        version_policy < specific < versions: [1, 2, 3] versions: 4 > >
        input [ { name: "a" }, { name: "b" } ]
        output: [ ]
    """)
    assert config.name == "xyABé\n" and config.max_batch_size == 31
    assert list(config.version_policy.specific.versions) == [1, 2, 3, 4]
    assert [t.name for t in config.input] == ["a", "b"] and len(config.output) == 0
    model = parse_triton_config("max_batch_size: 0x10 input { name: 'x' data_type: TYPE_FP32 dims: 010 }")
    sig = model.config.signature
    assert sig is not None and sig.inputs[0].shape == (-1, 8)  # 0x10 = 16, 010 = octal 8


def test_unknown_and_unused_fields_are_warnings() -> None:
    model = parse_triton_config("""
        name: "m"
        platform: "onnxruntime_onnx"
        model_warmup { name: "w" batch_size: 1 }
        input { name: "x" data_type: TYPE_FP32 dims: [1] optional: true allow_ragged_batch: true }
        output { name: "y" data_type: TYPE_FP32 dims: [1] reshape { shape: [] } label_filename: "l.txt" }
        dynamic_batching { preserve_ordering: true }
        max_batch_size: 2
        parameters { key: "enable_mem_arena" value { string_value: "1" } }
    """, "m")
    (ignored,) = model.warnings
    assert ignored == (
        "fields mlport does not use are ignored: dynamic_batching.preserve_ordering, input.allow_ragged_batch, "
        "input.optional, model_warmup, output.label_filename, parameters['enable_mem_arena']"
    )
    sig = model.config.signature
    assert sig is not None and sig.outputs[0].shape == (-1, 1) and sig.outputs[0].reshape == (-1,)


@pytest.mark.parametrize(("text", "message"), [
    ("some_future_field: 3",
     'line 1, column 1: Message type "inference.ModelConfig" has no field named "some_future_field".'),
    ('input { name: "x" unknown: 2 }', 'Message type "inference.ModelInput" has no field named "unknown".'),
    ("[ext.name] { m: 1 }", 'Message type "inference.ModelConfig" does not have extensions.'),
])
def test_unknown_fields_are_refused_by_protobuf(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_triton_config(text, "m")
    assert str(err.value).startswith("config.pbtxt, line 1") and message in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    # the text format's errors are protobuf's own messages
    ('name: "abc', "line 1, column 7: 'name: \"abc': String missing ending quote"),
    ("name: 'x' \n  version_policy {\n latest { num_versions: 1 }", 'line 3, column 27: Expected "}".'),
    ("max_batch_size 3", "line 1, column 16: 'max_batch_size 3': Expected \":\"."),
    ("max_batch_size: 1.5", "line 1, column 17: 'max_batch_size: 1.5': Couldn't parse integer: 1.5"),
    ("max_batch_size: 99999999999", "Value out of range: 99999999999"),
    ("max_batch_size: -2", "max_batch_size must be 0 or more"),
    ('name: "a"\nname: "b"', 'line 2, column 7: Message type "inference.ModelConfig" should not have multiple "name"'),
    ("name: abc", "line 1, column 7: 'name: abc': Expected string but found: 'abc'"),
    ("input: 3", 'Expected "{".'),
    ("version_policy: all", 'Expected "{".'),
    ('input { name: "x" data_type: TYPE_BF16 }', "input 'x': mlport has no datatype for TYPE_BF16"),
    ('input { name: "x" data_type: FP32 }', 'Enum type "inference.DataType" has no value named FP32.'),
    ('input { data_type: TYPE_FP32 }', "an input has no name"),
    ('output { name: "y" dims: [1] }', "output 'y' has no data_type"),
    ('input { name: "x" data_type: TYPE_FP32 dims: [-3] }', "dims are sizes or -1"),
    ('input { name: "x" data_type: TYPE_FP32 } input { name: "x" data_type: TYPE_FP32 }', "named more than once"),
    ("version_policy { latest { num_versions: 0 } }", "num_versions must be 1 or more"),
    ("version_policy { latest { num_versions: 1 } all { } }",
     'Field "all" is specified along with field "latest", another member of oneof "policy_choice"'),
    ("version_policy { specific { } }", "must list version numbers"),
    ('platform: "tensorrt_plan"', "platform 'tensorrt_plan' is not served by mlport"),
    ('backend: "python"', "backend 'python' is not served by mlport"),
    ('platform: "onnxruntime_onnx" backend: "pytorch"', "name different frameworks"),
    ('name: "other"', "the config names the model 'other', but its folder is 'm'"),
    ("dynamic_batching { }", "dynamic_batching needs max_batch_size of 1 or more"),
    ("max_batch_size: 4 dynamic_batching { preferred_batch_size: [8] }", "preferred_batch_size 8 is not between 1"),
    ("max_batch_size: 4 dynamic_batching { max_queue_delay_microseconds: 99999999 }", "must be 0 to 10000000"),
    ("sequence_batching { } dynamic_batching { }", 'another member of oneof "scheduling_choice"'),
    ('default_model_filename: "../model.onnx"', "default_model_filename must name a file in the version folder"),
    ('platform: "onnxruntime_onnx" parameters { key: "intra_op_thread_count" value { string_value: "x" } }',
     "parameter 'intra_op_thread_count' must be a whole number"),
    ("max_batch_size: [1, 2", "Couldn't parse integer: ["),
    ("input [1]", 'Expected "{".'),
    ("input { dims: [1 2] }", 'Expected ",".'),
    ("input: {", 'Expected "}".'),
    ("}", "Expected identifier or number, got }."),
    ("max_batch_size: 12abc", "Couldn't parse integer: 12abc"),
    (r'name: "\xff"', "Couldn't parse string: 'utf-8' codec can't decode byte 0xff"),
    ("name: @", "Expected string but found: '@'"),
])
def test_malformed_configs_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_triton_config(text, "m")
    assert str(err.value).startswith("config.pbtxt")
    assert message in str(err.value)


def test_limits() -> None:
    with pytest.raises(InvalidInput, match="larger than"):
        parse_model_config("max_batch_size: 1\n" * (MAX_CONFIG_BYTES // 18 + 1))
    # an error quoting a long line is shortened
    with pytest.raises(InvalidInput) as err:
        parse_model_config("input { dims: [" + "1, " * 10_000 + "x] }")
    assert len(str(err.value)) < 500 and "Couldn't parse integer: x" in str(err.value)


def test_read_from_file(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(FULL)
    assert read_triton_config(path, "resnet").config.format == "onnx"
    path.write_bytes(b'name: "\xff"')
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read_triton_config(path)
    path.write_bytes(b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(InvalidInput, match="larger than"):
        read_triton_config(path)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_triton_config(tmp_path / "missing.pbtxt")


# ------------------------------------------------------------------------------- repository

CONFIG = """
name: "scale"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy { specific { versions: [1, 3] } }
input { name: "x" data_type: TYPE_FP32 dims: [3] }
output { name: "y" data_type: TYPE_FP32 dims: [3] }
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group { kind: KIND_CPU }
"""


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for v in (1, 2, 3):
        scale_onnx(root / "scale" / str(v) / "model.onnx", float(v))
    (root / "scale" / "config.pbtxt").write_text(CONFIG)
    return root


def test_repository_reads_config_pbtxt_once_per_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _repo(tmp_path)
    repo = Repository(root, default_registry())
    with caplog.at_level(logging.WARNING, logger="mlport.runtime.repository"):
        src = repo.scan()["scale"]
        repo.scan()
    assert src.error is None and sorted(src.versions) == [1, 2, 3]
    assert src.config.version_policy.select(list(src.versions)) == [3, 1]
    assert src.config.batching == BatchingConfig(max_batch_size=8, max_delay_ms=0.5)
    assert src.versions[3].format == "onnx"
    warned = [r.getMessage() for r in caplog.records if "instance_group" in r.getMessage()]
    assert warned == ["model scale: config.pbtxt: fields mlport does not use are ignored: instance_group"]
    # a changed file is read again
    cfg = root / "scale" / "config.pbtxt"
    cfg.write_text(CONFIG.replace("specific { versions: [1, 3] }", "all { }"))
    os.utime(cfg, ns=(cfg.stat().st_atime_ns, cfg.stat().st_mtime_ns + 10**9))
    assert repo.scan()["scale"].config.version_policy == VersionPolicy(all=True)


def test_repository_model_yaml_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _repo(tmp_path)
    (root / "scale" / "model.yaml").write_text("version_policy: {latest: 1}\n")
    with caplog.at_level(logging.INFO, logger="mlport.runtime.repository"):
        src = Repository(root, default_registry()).scan()["scale"]
    assert src.config.version_policy == VersionPolicy(latest=1) and src.config.signature is None
    assert any("model.yaml is used" in r.getMessage() for r in caplog.records)


def test_repository_shows_a_malformed_config(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "scale" / "config.pbtxt").write_text('name: "scale"\ninput { name: "x" data_type: TYPE_FP32 \n')
    scale_onnx(root / "other" / "1" / "model.onnx", 2.0)
    found = Repository(root, default_registry()).scan()
    assert found["other"].error is None and found["scale"].versions == {}
    assert found["scale"].error is not None
    assert found["scale"].error.startswith('config.pbtxt, line 2, column 30: Expected "}".')


def test_repository_default_model_filename(tmp_path: Path) -> None:
    root = tmp_path / "models"
    scale_onnx(root / "m" / "1" / "net.onnx", 2.0)
    scale_onnx(root / "m" / "1" / "other.onnx", 3.0)
    scale_onnx(root / "m" / "2" / "other.onnx", 3.0)
    (root / "m" / "config.pbtxt").write_text('default_model_filename: "net.onnx"\n'
                                             "version_policy { all {} }")
    src = Repository(root, default_registry()).scan()["m"]
    assert src.versions[1].path.name == "net.onnx"
    assert 2 not in src.versions and "'net.onnx' is not there" in src.errors[2]


def test_repository_config_without_versions(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "empty").mkdir(parents=True)
    (root / "empty" / "config.pbtxt").write_text('name: "empty"')
    src = Repository(root, default_registry()).scan()["empty"]
    assert src.error is not None and "no version folder" in src.error


def test_config_written_back_from_a_served_signature() -> None:
    from mlport.core.types import DataType, Signature, TensorSpec
    from mlport.protocols.extensions import message_json
    from mlport.runtime.triton import triton_config

    model = parse_triton_config(FULL, "resnet")
    served = Signature(inputs=(TensorSpec("images", DataType.FP32, (-1, 3, 224, 224)),),
                       outputs=(TensorSpec("scores", DataType.FP32, (-1, 1000)),
                                TensorSpec("names", DataType.BYTES, (-1, -1))))
    out = triton_config("resnet", "onnxruntime_onnx", served, model.config)
    # what config.pbtxt said of the signature and batching comes back, as Triton writes it
    again = parse_triton_config(str(out), "resnet").config
    assert again.signature == model.config.signature and again.batching == model.config.batching
    assert again.version_policy == model.config.version_policy
    doc = message_json(out)
    assert doc["max_batch_size"] == 8 and doc["input"][0]["dims"] == [3, 224, 224]
    assert doc["output"][1]["data_type"] == "TYPE_STRING" and doc["version_policy"] == {"latest": {"num_versions": 2}}
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    # without batching: the whole shape, max_batch_size 0
    plain = triton_config("m", "onnx", served, model.config.model_copy(update={"batching": BatchingConfig()}))
    assert plain.max_batch_size == 0 and list(plain.input[0].dims) == [-1, 3, 224, 224]
    assert not plain.HasField("dynamic_batching")


QUEUED = """
name: "q"
platform: "onnxruntime_onnx"
max_batch_size: 4
dynamic_batching {
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy { max_queue_size: 16 default_timeout_microseconds: 250000 timeout_action: DELAY
                         allow_timeout_override: true }
  priority_queue_policy { key: 1 value: { max_queue_size: 4 } }
  priority_queue_policy { key: 3 value: { default_timeout_microseconds: 50000 timeout_action: DELAY } }
}
"""


def test_queue_policy_maps_onto_the_admission_settings() -> None:
    model = parse_triton_config(QUEUED)
    cfg = model.config
    assert (cfg.max_queue, cfg.queue_timeout_s, cfg.queue_timeout_action) == (16, 0.25, "delay")
    # a level's policy is whole, as in Triton: level 1 has no timeout and rejects, level 3 no bound of its own
    assert cfg.queue_order() == (3, 2, True, ((1, 4, 0.0, False), (3, None, 0.05, True)))
    assert model.warnings == ()
    # 0 means no bound, as in Triton; REJECT is the default action; no levels: the two default ones
    plain = parse_triton_config(QUEUED.replace("16", "0").replace("250000", "0").replace("DELAY", "REJECT")
                                .replace("priority_levels: 3\n  default_priority_level: 2\n", "")
                                .split("  priority_queue_policy")[0] + "}").config
    assert (plain.max_queue, plain.queue_timeout_s, plain.queue_timeout_action) == (None, None, "reject")
    assert plain.queue_order() == (2, 2, False, ())


def test_a_level_policy_for_a_level_the_queue_does_not_have_is_refused() -> None:
    with pytest.raises(InvalidInput, match="priority_queue_policy names level 3, not one of the 2 priority_levels"):
        parse_triton_config(QUEUED.replace("priority_levels: 3\n  default_priority_level: 2\n", ""))
    with pytest.raises(ValidationError, match="priority_queue_policy names level 5"):
        ModelConfig.model_validate({"priority_levels": 4, "priority_queue_policy": {5: {"max_queue": 1}}})


def test_queue_policies_are_written_back() -> None:
    from mlport.core.types import DataType, Signature, TensorSpec
    from mlport.runtime.triton import triton_config

    model = parse_triton_config(QUEUED + 'input { name: "x" data_type: TYPE_FP32 dims: [3] }')
    served = Signature(inputs=(TensorSpec("x", DataType.FP32, (-1, 3)),), outputs=())
    again = parse_triton_config(str(triton_config("q", "onnxruntime_onnx", served, model.config)), "q").config
    assert again.queue_order() == model.config.queue_order()
    assert (again.max_queue, again.queue_timeout_s, again.queue_timeout_action) == (16, 0.25, "delay")


@pytest.mark.parametrize(("change", "message"), [
    (("priority_levels: 3", "priority_levels: 17"), "at most 16 levels"),
    (("default_priority_level: 2", "default_priority_level: 4"), "default_priority_level must be 1 to"),
    (("250000", "86400000001"), "default_timeout_microseconds must be"),
    ((" 50000", " 86400000001"), "priority_queue_policy\\[3\\].default_timeout_microseconds must be"),
    (("max_queue_size: 4", "max_queue_size: 1000001"), "priority_queue_policy\\[1\\].max_queue_size must be"),
])
def test_queue_policy_limits(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_triton_config(QUEUED.replace(*change))
