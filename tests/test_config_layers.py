"""The config layer stack: sources, precedence, deep merge, versions and the typed view."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_trio.config.effective import (
    DEFAULT_OPENAI_BASE_URL,
    ConfigValidationError,
    load_config,
    resolved_view,
    validate_config,
)
from codex_trio.config.layers import (
    EMPTY_VERSION,
    LayerPaths,
    StaticThreadConfigLoader,
    deep_merge,
    load_layer_stack,
    nest,
    parse_override_value,
    session_flags_table,
    split_key_path,
    version_of_table,
)
from codex_trio.config.models import DEFAULT_MODEL
from codex_trio.config.sources import LegacyManagedSource, SessionFlagsSource, SystemSource, UserSource
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen

MOCK_CONFIG = """# the conformance suite's config
model = "gpt-5.5"
model_provider = "mock"

[features]
plugins = false
apps = false

[model_providers.mock]
name = "Conformance mock"
base_url = "http://127.0.0.1:9/v1"
wire_api = "responses"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
"""


def settings(tmp_path: Path, user: str | None = None, **kw: object) -> ServerSettings:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    if user is not None:
        (home / "config.toml").write_text(user)
    return ServerSettings(codex_home=home, listen=NoListen(), cwd=tmp_path, **kw)  # type: ignore[arg-type]


def no_system_files() -> LayerPaths:
    return LayerPaths(system=None, managed=None)


def test_deep_merge_merges_tables_and_replaces_everything_else() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    overlay = {"a": {"y": [3], "z": True}, "b": {"now": "a table"}}
    assert deep_merge(base, overlay) == {"a": {"x": 1, "y": [3], "z": True}, "b": {"now": "a table"}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}, "inputs are not modified"


def test_override_values_parse_as_toml_and_fall_back_to_the_raw_string() -> None:
    assert parse_override_value("5") == 5
    assert parse_override_value("true") is True
    assert parse_override_value('"quoted"') == "quoted"
    assert parse_override_value("[1, 2]") == [1, 2]
    assert parse_override_value("{ a = 1 }") == {"a": 1}
    assert parse_override_value("gpt-5.5") == "gpt-5.5"
    assert parse_override_value("not[toml") == "not[toml"


def test_dotted_keys_nest_and_quoted_parts_keep_their_dots() -> None:
    assert split_key_path('model_providers."my.provider".base_url') == [
        "model_providers",
        "my.provider",
        "base_url",
    ]
    assert nest("a.b.c", 1) == {"a": {"b": {"c": 1}}}


def test_session_flags_combine_overrides_and_feature_switches_in_order(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        config_overrides=(
            ("model", "first"),
            ("model_providers.m.base_url", "http://x"),
            ("model", "second"),
        ),
        enable_features=("memories",),
        disable_features=("apps",),
    )
    assert session_flags_table(s) == {
        "model": "second",
        "model_providers": {"m": {"base_url": "http://x"}},
        "features": {"memories": True, "apps": False},
    }


def test_layers_apply_in_precedence_order_and_managed_config_wins(tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text(
        'model = "from-system"\nsandbox_mode = "workspace-write"\n[features]\nmemories = true\n'
    )
    managed = tmp_path / "managed.toml"
    managed.write_text('approval_policy = "never"\n')
    s = settings(
        tmp_path,
        'model = "from-user"\napproval_policy = "untrusted"\n[features]\napps = false\n',
        config_overrides=(("model", "from-flags"),),
    )
    stack = load_layer_stack(s, LayerPaths(system=system, managed=managed))
    kinds = [type(layer.source) for layer in stack.layers]
    assert kinds == [SystemSource, UserSource, SessionFlagsSource, LegacyManagedSource]
    assert stack.merged["model"] == "from-flags"
    assert stack.merged["sandbox_mode"] == "workspace-write"
    assert stack.merged["approval_policy"] == "never"
    assert stack.merged["features"] == {"memories": True, "apps": False}
    origins = stack.origins()
    assert isinstance(origins["model"].source, SessionFlagsSource)
    assert isinstance(origins["features.memories"].source, SystemSource)
    assert isinstance(origins["features.apps"].source, UserSource)
    assert isinstance(origins["approval_policy"].source, LegacyManagedSource)


def test_thread_loader_values_win_over_the_request_but_not_over_managed_config(tmp_path: Path) -> None:
    managed = tmp_path / "managed.toml"
    managed.write_text('sandbox_mode = "read-only"\n')
    s = settings(tmp_path, MOCK_CONFIG)
    loader = StaticThreadConfigLoader(
        {"model_provider": "corp", "model_providers": {"corp": {"name": "Corp"}}}
    )
    config = load_config(
        s,
        request_overrides={
            "model_provider": "mock",
            "model": "asked-for",
            "sandbox_mode": "danger-full-access",
        },
        thread_loader=loader,
        paths=LayerPaths(system=None, managed=managed),
        environ={},
    )
    assert config.model == "asked-for", "the request may choose what the session does not own"
    assert config.model_provider_id == "corp"
    assert config.provider.name == "Corp"
    assert config.sandbox_mode == "read-only"


def test_request_overrides_accept_dotted_keys(tmp_path: Path) -> None:
    config = load_config(
        settings(tmp_path, MOCK_CONFIG),
        request_overrides={"features.apps": True, "model_providers.mock.request_max_retries": 2},
        paths=no_system_files(),
        environ={},
    )
    assert config.feature("apps") is True
    assert config.provider.request_max_retries == 2
    assert config.provider.base_url == "http://127.0.0.1:9/v1", "sibling keys survive a dotted override"


def test_defaults_match_the_reference_when_nothing_is_configured(tmp_path: Path) -> None:
    config = load_config(settings(tmp_path), paths=no_system_files(), environ={})
    assert config.model == DEFAULT_MODEL
    assert config.model_provider_id == "openai"
    assert config.provider.base_url == DEFAULT_OPENAI_BASE_URL
    assert config.provider.requires_openai_auth is True
    assert (config.provider.request_max_retries, config.provider.stream_max_retries) == (4, 5)
    assert config.approval_policy == "on-request"
    assert config.sandbox_mode == "read-only"
    assert config.chatgpt_base_url == "https://chatgpt.com/backend-api/"
    assert config.thread_unload_delay_secs is None
    assert config.mcp_servers == {}
    assert config.feature("apps") is True and config.feature("memories") is False


def test_openai_base_url_comes_from_config_then_the_environment(tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "http://env.example/v1"}
    assert load_config(settings(tmp_path), paths=no_system_files(), environ=env).provider.base_url == (
        "http://env.example/v1"
    )
    configured = settings(tmp_path, 'openai_base_url = "http://cfg.example/v1"\n')
    assert load_config(configured, paths=no_system_files(), environ=env).provider.base_url == (
        "http://cfg.example/v1"
    )


def test_custom_provider_entries_get_defaults_and_capped_retries(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        'model_provider = "p"\n[model_providers.p]\nname = "P"\nbase_url = "http://p/v1"\n'
        'env_key = "P_KEY"\nrequest_max_retries = 1000\n[model_providers.p.http_headers]\nX-A = "1"\n'
        '[model_providers.p.env_http_headers]\nX-B = "P_HEADER"\n',
    )
    config = load_config(s, paths=no_system_files(), environ={})
    provider = config.provider
    assert (provider.id, provider.name, provider.base_url, provider.wire_api) == (
        "p",
        "P",
        "http://p/v1",
        "responses",
    )
    assert provider.request_max_retries == 100
    assert provider.stream_max_retries == 5
    assert provider.requires_openai_auth is False
    assert provider.api_key({"P_KEY": " k "}) == "k"
    assert provider.headers({"P_HEADER": "from-env"}) == {"X-A": "1", "X-B": "from-env"}
    assert provider.headers({}) == {"X-A": "1"}


def test_builtin_provider_ids_cannot_be_replaced_by_user_entries(tmp_path: Path) -> None:
    s = settings(tmp_path, '[model_providers.openai]\nname = "Impostor"\nbase_url = "http://evil/v1"\n')
    config = load_config(s, paths=no_system_files(), environ={})
    assert config.provider.name == "OpenAI"
    assert config.provider.base_url == DEFAULT_OPENAI_BASE_URL


def test_the_selected_profile_is_laid_over_the_top_level(tmp_path: Path) -> None:
    s = settings(tmp_path, 'model = "base"\nprofile = "fast"\n[profiles.fast]\nmodel = "quick"\n')
    assert load_config(s, paths=no_system_files(), environ={}).model == "quick"


def test_versions_hash_the_values_so_comments_do_not_change_them(tmp_path: Path) -> None:
    # sha256 of "{}", as the reference reports an empty or missing layer.
    assert EMPTY_VERSION == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    plain = load_layer_stack(
        settings(tmp_path, MOCK_CONFIG.replace("# the conformance suite's config\n", "")), no_system_files()
    ).user
    commented = load_layer_stack(settings(tmp_path, MOCK_CONFIG), no_system_files()).user
    assert plain.version == commented.version == version_of_table(commented.config)
    # The value the reference reports for this exact config.
    assert plain.version == "sha256:6d657c0c2a942c89ec5075912ce9dabaf1f4dd773d3657b8ee70534b10f51d58"


def test_a_broken_user_file_is_an_empty_layer_with_its_error(tmp_path: Path) -> None:
    stack = load_layer_stack(settings(tmp_path, "model = \n"), no_system_files())
    assert stack.user.config == {} and stack.user.error is not None


def test_the_read_view_has_every_known_key_and_drops_unknown_ones(tmp_path: Path) -> None:
    s = settings(tmp_path, MOCK_CONFIG + "not_a_config_key = 1\n", config_overrides=(("x", "5"),))
    view = resolved_view(load_layer_stack(s, no_system_files()))
    assert view["model"] == "gpt-5.5" and view["model_provider"] == "mock"
    assert "not_a_config_key" not in view and "x" not in view
    assert view["approval_policy"] is None and view["history"] == {
        "persistence": "save-all",
        "max_bytes": None,
    }
    assert view["features"]["apps"] is False and view["features"]["mentions_v2"] is True
    mock = view["model_providers"]["mock"]
    assert (
        mock["request_max_retries"] == 0 and mock["env_key"] is None and mock["requires_openai_auth"] is False
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"model": 5}, "invalid type: integer `5`, expected a string\nin `model`\n"),
        (
            {"sandbox_mode": "bogus"},
            "unknown variant `bogus`, expected one of `read-only`, `workspace-write`, `danger-full-access`\n"
            "in `sandbox_mode`\n",
        ),
        ({"approval_policy": 5}, "invalid type: unit variant, expected string only\nin `approval_policy`\n"),
        ({"features": {"apps": "x"}}, 'invalid type: string "x", expected a boolean\nin `features`\n'),
        (
            {"model_providers": {"m": {"request_max_retries": "x"}}},
            'invalid type: string "x", expected u64\nin `model_providers.m.request_max_retries`\n',
        ),
        ({"mcp_servers": {"y": {"foo": 1}}}, "invalid transport\nin `mcp_servers.y`\n"),
    ],
)
def test_validation_reports_the_reference_wording(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigValidationError) as raised:
        validate_config(table)
    assert str(raised.value) == message


def test_validation_accepts_unknown_keys_and_granular_approvals() -> None:
    validate_config(
        {
            "whatever": [1, 2],
            "approval_policy": {"granular": {"rules": True}},
            "mcp_servers": {"x": {"command": "ls"}},
        }
    )
