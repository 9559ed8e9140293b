"""Flags made from the settings fields, and the parser's suggestions."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mlport.cli.main import build_parser
from mlport.cli.options import Parser, add_settings_options, given_settings, suggest
from mlport.settings import FLAG, Settings, load_settings, option


def _serve(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "model.onnx", *argv])


def test_every_option_field_is_a_serve_flag() -> None:
    flags = {s for a in build_parser()._subparsers._group_actions[0].choices["serve"]._actions  # type: ignore[union-attr]
             for s in a.option_strings}
    declared = [n for n, f in Settings.model_fields.items()
                if isinstance(f.json_schema_extra, dict) and FLAG in f.json_schema_extra]
    assert len(declared) >= 14
    for name in declared:
        extra = Settings.model_fields[name].json_schema_extra
        assert isinstance(extra, dict)
        given = extra[FLAG]  # a field names its flag, or "auto" for --field-name
        flag = "--" + name.replace("_", "-") if given == "auto" else str(given)
        assert flag in flags, name
    assert "--poll-interval" in flags and "--load-timeout" in flags
    assert "--no-trusted" in flags and "--no-strict-readiness" in flags


def test_flags_win_over_the_environment_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trusted: true\nworkers: 3\nlog-level: debug\nexit_on_error: true\n")
    monkeypatch.setenv("MLPORT_WORKERS", "2")
    args = _serve("--no-trusted", "--log-level", "WARNING")
    given = given_settings(args, Settings)
    assert given["workers"] is None and given["trusted"] is False and given["strict_readiness"] is None
    s = load_settings(given, cfg)
    assert (s.trusted, s.workers, s.log_level, s.exit_on_error, s.strict_readiness) == (False, 2, "warning", True,
                                                                                         None)
    assert load_settings(given_settings(_serve("--strict-readiness", "--poll-interval", "0.5"), Settings)
                         ).model_dump(include={"strict_readiness", "poll_interval_s"}) == {
        "strict_readiness": True, "poll_interval_s": 0.5}


def test_a_new_setting_is_one_field() -> None:
    class More(Settings):
        access_log_format: str = option("text", "text or json")
        tls_cert: Path | None = option(None, "certificate file", metavar="PEM")

    parser = Parser(prog="x")
    add_settings_options(parser, More)
    args = parser.parse_args(["--access-log-format", "json", "--tls-cert", "/c.pem"])
    assert given_settings(args, More)["tls_cert"] == Path("/c.pem")
    assert More(**{k: v for k, v in given_settings(args, More).items() if v is not None}).access_log_format == "json"
    assert "PEM" in parser.format_help() and "certificate file" in parser.format_help()


def test_suggestions() -> None:
    assert suggest("--htp-port", ["--http-port", "--host"]) == " (did you mean '--http-port'?)"
    assert suggest("zzz", ["serve", "describe"]) == ""


def test_hub_shadow_flags_reach_the_hub_settings() -> None:
    from mlport.cli.hub import _settings
    from mlport.deploy.shadowcopy import BUSY_CPU

    args = build_parser().parse_args(["hub", "--shadow-max-cpu", "0.8", "--shadow-max-pending", "8"])
    settings = _settings(args)
    assert (settings.shadow_max_cpu, settings.shadow_max_pending) == (0.8, 8)
    default = _settings(build_parser().parse_args(["hub"]))
    assert (default.shadow_max_cpu, default.shadow_max_pending) == (BUSY_CPU, 64)  # the gateway's own default
    assert _settings(build_parser().parse_args(["hub", "--shadow-max-cpu", "0"])).shadow_max_cpu == 0
    with pytest.raises(ValueError):
        _settings(build_parser().parse_args(["hub", "--shadow-max-pending", "-1"]))
