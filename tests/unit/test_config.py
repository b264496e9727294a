"""Server config: flag > env > TOML > default, validated, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from twostage.server.config import ServerConfig, load_config
from twostage.server.errors import ConfigError


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    toml = tmp_path / "twostage.toml"
    toml.write_text('[server]\nlisten = "127.0.0.1:7000"\nmax_wait_ms = 5\ngrace_period = 3\n')
    env = {"TWOSTAGE_LISTEN": "127.0.0.1:7001", "TWOSTAGE_MAX_WAIT_MS": "7"}
    cfg = load_config({"listen": "127.0.0.1:7002", "max_wait_ms": None}, env=env, toml_file=toml)
    assert cfg.listen == "127.0.0.1:7002"  # flag wins
    assert cfg.max_wait_ms == 7.0  # env beats the file
    assert cfg.grace_period == 3.0  # file beats the default
    assert cfg.max_inflight_requests == ServerConfig().max_inflight_requests


def test_models_from_flags_and_env() -> None:
    cfg = load_config({"models": ["emb=/b/e", "rr=/b/r"]}, env={})
    assert cfg.models == (("emb", Path("/b/e")), ("rr", Path("/b/r")))
    cfg = load_config({}, env={"TWOSTAGE_MODELS": "emb=/b/e,rr=/b/r"})
    assert [n for n, _ in cfg.models] == ["emb", "rr"]


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"listen": "nope"}, "listen"),
        ({"device": "tpu"}, "device"),
        ({"models": ["no-equals-sign"]}, "model"),
        ({"models": ["a=/x", "a=/y"]}, "model"),
        ({"max_texts_per_request": 0}, "max_texts_per_request"),
    ],
)
def test_bad_values_name_the_field(flags: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(flags, env={})
    assert err.value.field == field or field in str(err.value)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[server]\nlisten_port = 1\n")
    with pytest.raises(ConfigError, match="listen_port"):
        load_config({}, env={}, toml_file=toml)


def test_secrets_are_redacted_and_gpu_defaults_differ() -> None:
    cfg = load_config({"auth_token": "s3cret"}, env={})
    assert "s3cret" not in str(cfg.redacted())
    cuda = load_config({"device": "cuda"}, env={})
    assert cuda.batch_tokens > cfg.batch_tokens and cuda.batch_size > cfg.batch_size


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret-from-file\n")
    cfg = load_config({"auth_token_file": token_file}, env={"TWOSTAGE_AUTH_TOKEN": "from-env"})
    assert cfg.auth_token == "s3cret-from-file"
    assert "s3cret" not in str(cfg.redacted())
    assert load_config({}, env={"TWOSTAGE_AUTH_TOKEN": "from-env"}).auth_token == "from-env"
    env = {"TWOSTAGE_AUTH_TOKEN_FILE": str(token_file)}
    assert load_config({}, env=env).auth_token == "s3cret-from-file"
    for bad in ("", "two words", None):
        path = tmp_path / "missing" if bad is None else tmp_path / "bad"
        if bad is not None:
            path.write_text(bad)
        with pytest.raises(ConfigError) as err:
            load_config({"auth_token_file": path}, env={})
        assert err.value.field == "auth_token_file"


def test_serve_refuses_a_token_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from twostage.cli import main

    assert main(["serve", "--auth-token", "s3cret", "--prepare-only"]) == 2
    err = capsys.readouterr().err
    assert "--auth-token-file" in err and "TWOSTAGE_AUTH_TOKEN" in err and "s3cret" not in err


def _sample(name: str, default: object) -> tuple[str, object]:
    """A non-default value for a setting: (as text for flag/env/TOML, as the config holds it)."""
    if name == "models":
        return "e=/b/e", (("e", Path("/b/e")),)
    if name in ("device", "precision"):
        return ("cuda", "cuda") if name == "device" else ("fp16", "fp16")
    if name in ("listen", "http_listen"):
        return "127.0.0.1:7", "127.0.0.1:7"
    if isinstance(default, bool):
        return "true", True
    if isinstance(default, float):
        return "3.5", 3.5
    if isinstance(default, int):
        return "7", 7
    if name in ("auth_token", "auth_token_file"):
        return "", None  # read from a file: checked in its own test
    if default is None or isinstance(default, Path):
        return "/x/y", Path("/x/y")
    return "v", "v"


NEEDED = {"TWOSTAGE_AUTH_TOKEN": "t", "TWOSTAGE_TLS_CERT": "/c", "TWOSTAGE_TLS_KEY": "/k"}


def test_every_setting_has_a_flag_an_env_var_and_a_toml_key(tmp_path: Path) -> None:
    """One declaration per setting: --help lists it, and flag, env and TOML all set it."""
    import argparse
    import dataclasses

    from twostage.serve import register, setting_flags

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    help_text = serve.format_help()
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(setting_flags()) == names - {"auth_token"}
    for f in dataclasses.fields(ServerConfig):
        text, value = _sample(f.name, getattr(ServerConfig(), f.name))
        if value is None:
            continue
        env_name = f"TWOSTAGE_{f.name.upper()}"
        # what some settings need beside them (auth_reads a token, TLS a cert and a key)
        base = {k: v for k, v in NEEDED.items() if k != env_name}
        if f.name != "auth_token":
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            assert flag in help_text and env_name in help_text, f.name
            argv = ["serve", flag] if isinstance(value, bool) else ["serve", flag, text]
            args = parser.parse_args(argv)
            flags = {f.name: getattr(args, f.name)}
            assert getattr(load_config(flags, env=base), f.name) == value
        assert getattr(load_config({}, env={**base, env_name: text}), f.name) == value, f.name
        toml = tmp_path / f"{f.name}.toml"
        quoted = text if isinstance(value, bool | int | float) else f'"{text}"'
        if f.name == "models":
            quoted = '["e=/b/e"]'
        toml.write_text(f"[server]\n{f.name} = {quoted}\n")
        assert getattr(load_config({}, env=base, toml_file=toml), f.name) == value, f.name
