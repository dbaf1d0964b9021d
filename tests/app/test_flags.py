"""Every command's shared flags parse to the same settings, and the old spellings still work (with a warning).

The flags are defined once (facialattr/app/flags.py); these tables parse each command's
real parser, as ``facialattr`` builds it, and compare what the commands would run with.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facialattr import defaults
from facialattr.app import flags
from facialattr.app.cli import build_parser
from facialattr.client.settings import ScorerSettings

# Each command with the arguments it needs besides the shared flags.
SCORER_COMMANDS = {
    "score": ["score", "photos", "--out", "scores.csv"],
    "predict": ["predict", "photo.jpg"],
    "watch": ["watch", "video.mp4"],
}
SHARED_SCORER_FLAGS = ["--url", "a.example:9001", "--url", "b.example:9001", "--model-name", "facial_attributes_int8",
                       "--timeout", "7", "--connect-timeout", "3", "--give-up-after", "9", "--max-in-flight", "2"]
EXPECTED_SETTINGS = ScorerSettings(urls=("a.example:9001", "b.example:9001"), model_name="facial_attributes_int8",
                                   timeout_s=7.0, connect_timeout_s=3.0, give_up_after_s=9.0, max_in_flight=2)

SERVER_COMMANDS = {"serve": ["serve"], "demo": ["demo"]}
SHARED_SERVER_FLAGS = ["--model-repository", "repo", "--host", "0.0.0.0", "--grpc-port", "9101", "--metrics-port", "9102",
                       "--http", "--http-port", "9100", "--grpc-infer-allocation-pool-size", "2"]

REPOSITORY_COMMANDS = {
    "serve": ["serve"],
    "demo": ["demo"],
    "export": ["export", "runs/mnv2"],
    "bench": ["bench"],
}


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command", SCORER_COMMANDS)
def test_scorer_flags_give_every_command_the_same_settings(command):
    args = parse(SCORER_COMMANDS[command] + SHARED_SCORER_FLAGS)
    assert flags.scorer_settings(args) == EXPECTED_SETTINGS


@pytest.mark.parametrize("command", ["score", "predict"])
def test_server_decode_is_the_same_flag_where_a_command_sends_files(command):
    args = parse(SCORER_COMMANDS[command] + ["--server-decode"])
    assert flags.scorer_settings(args).server_decode


def test_watch_has_no_server_decode_since_it_sends_its_own_face_crops():
    with pytest.raises(SystemExit):
        parse(SCORER_COMMANDS["watch"] + ["--server-decode"])


@pytest.mark.parametrize("command", SCORER_COMMANDS)
def test_without_url_a_command_uses_the_environment_then_the_default(command, monkeypatch):
    monkeypatch.delenv(defaults.ENV_GRPC_URL, raising=False)
    assert flags.scorer_settings(parse(SCORER_COMMANDS[command])).urls == (defaults.GRPC_URL,)
    monkeypatch.setenv(defaults.ENV_GRPC_URL, "env.example:9001")
    assert flags.scorer_settings(parse(SCORER_COMMANDS[command])).urls == ("env.example:9001",)


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_server_flags_give_every_command_the_same_server_config(command):
    config = flags.server_config(parse(SERVER_COMMANDS[command] + SHARED_SERVER_FLAGS))
    assert (config.model_repository, config.host, config.grpc_port, config.metrics_port, config.http_port,
            config.allow_http, config.grpc_infer_allocation_pool_size) == (
        Path("repo"), "0.0.0.0", 9101, 9102, 9100, True, 2)


@pytest.mark.parametrize("command", REPOSITORY_COMMANDS)
def test_every_command_reads_the_model_repository_flag_then_the_environment_then_the_default(command, monkeypatch):
    argv = REPOSITORY_COMMANDS[command]
    monkeypatch.delenv(defaults.ENV_MODEL_REPOSITORY, raising=False)
    assert flags.model_repository(parse(argv)) == Path(defaults.MODEL_REPOSITORY)
    monkeypatch.setenv(defaults.ENV_MODEL_REPOSITORY, "from-env")
    assert flags.model_repository(parse(argv)) == Path("from-env")
    assert flags.model_repository(parse(argv + ["--model-repository", "given"])) == Path("given")


# old spelling -> the spelling that replaced it, on the command that had it
DEPRECATED = [
    (["export", "runs/mnv2", "--repository", "repo"], ["export", "runs/mnv2", "--model-repository", "repo"], "--repository"),
    (["watch", "v.mp4", "--server-give-up-s", "5"], ["watch", "v.mp4", "--give-up-after", "5"], "--server-give-up-s"),
    (["watch", "v.mp4", "--give-up-after-s", "60"], ["watch", "v.mp4", "--source-give-up-after", "60"], "--give-up-after-s"),
    (["watch", "v.mp4", "--metrics-port", "9300"], ["watch", "v.mp4", "--client-metrics-port", "9300"], "--metrics-port"),
    (["watch", "v.mp4", "--url", "a:1,b:2"], ["watch", "v.mp4", "--url", "a:1", "--url", "b:2"], "--url A,B"),
]


@pytest.mark.parametrize(("old", "new", "spelling"), DEPRECATED, ids=[d[2] for d in DEPRECATED])
def test_an_old_spelling_parses_as_the_new_one_and_says_so(old, new, spelling, capsys):
    parsed_new = vars(parse(new))
    assert capsys.readouterr().err == ""
    parsed_old = vars(parse(old))
    assert parsed_old == parsed_new
    assert flags.deprecation_message(spelling, "").rsplit(";", 1)[0] in capsys.readouterr().err


def test_an_old_spelling_is_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        parse(["export", "--help"])
    help_text = capsys.readouterr().out
    assert "--model-repository" in help_text and "--repository" not in help_text.replace("--model-repository", "")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
@pytest.mark.parametrize("flag", ["--timeout", "--connect-timeout", "--give-up-after"])
def test_a_seconds_flag_that_is_not_positive_is_a_usage_error(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(SCORER_COMMANDS["score"] + [flag, value])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err
