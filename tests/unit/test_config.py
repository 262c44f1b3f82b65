import pytest

from remix_engine.config import (
    ConfigError,
    RemixConfig,
    build_config,
    config_fields,
    load_saved_config,
    save_config,
)


def test_toy_preset_defaults_follow_the_paper_for_remix_switches():
    cfg = build_config("toy", "remix-grpo")
    assert (cfg.remix.replay_share, cfg.remix.window, cfg.remix.utd, cfg.remix.kl_convex) == (0.4, 2, 2, True)
    assert cfg.family == "grpo" and cfg.is_remix


def test_plain_algorithm_switches_every_remix_component_off():
    cfg = build_config("toy", "grpo")
    off = RemixConfig.off()
    assert cfg.remix.replay_share == off.replay_share == 0.0
    assert cfg.remix.utd == 1 and cfg.remix.kl_convex is False and cfg.remix.reincarnate_at is None


def test_paper_presets_carry_paper_hyperparameters():
    cfg = build_config("r1-distill-1.5b", "remix-ppo")
    assert cfg.actor.lr == 1e-6 and cfg.critic.lr == 1e-5 and cfg.actor.kl_coef == 0.001
    assert cfg.remix.reincarnate_at == 100 and cfg.rollout.max_new_tokens == 8192
    assert cfg.actor.advantage == "gae" and cfg.rollout.group_size == 1


def test_dotted_overrides_are_parsed_as_yaml_scalars():
    cfg = build_config("toy", "remix-grpo", overrides=["remix.utd=3", "remix.reincarnate_at=null", "actor.lr=1e-4"])
    assert cfg.remix.utd == 3 and cfg.remix.reincarnate_at is None and cfg.actor.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("kwargs, field", [
    ({"overrides": ["remix.utd=0"]}, "remix.utd"),
    ({"overrides": ["rollout.nope=1"]}, "rollout.nope"),
    ({"overrides": ["remix.replay_share=1.5"]}, "remix.replay_share"),
    ({"algorithm": "grpo", "overrides": ["remix.utd=2"]}, "remix.utd"),
    ({"algorithm": "nope"}, "algorithm"),
    ({"overrides": ["actor.advantage=gae"]}, "actor.advantage"),
    ({"overrides": ["novalue"]}, "novalue"),
    ({"overrides": ["actor.kl_coef=0"]}, "remix.kl_convex"),
    ({"algorithm": "grpo", "overrides": ["critic.lr=0.1"]}, "critic.lr"),
    ({"overrides": ["remix.replay_share=0.99", "rollout.prompts_per_step=4"]}, "remix.replay_share"),
    ({"overrides": ["rollout.backend=vllm", "rollout.temperature=2.5"]}, "rollout.temperature"),
])
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        build_config("toy", **kwargs)
    assert field in str(err.value)


def test_unknown_preset_is_rejected():
    with pytest.raises(ConfigError, match="preset"):
        build_config("gpt-5")


def test_yaml_file_and_round_trip(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("remix:\n  window: 3\ntrainer:\n  steps: 7\n")
    cfg = build_config("toy", "remix-grpo", file=f, seed=5)
    assert cfg.remix.window == 3 and cfg.trainer.steps == 7 and cfg.trainer.seed == 5
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_saved_config(tmp_path / "saved.yaml") == cfg


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        build_config("toy", file="/nonexistent.yaml")


# ------------------------------------------------------------------- the config documents itself
def test_every_setting_has_help_text():
    from remix_engine.config import config_fields

    fields = config_fields()
    assert len(fields) > 60
    missing = [f["key"] for f in fields if len(f["description"]) < 10]
    assert not missing, f"settings without a description: {missing}"


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_presets_list_only_their_differences_from_the_defaults():
    from remix_engine.config import _FAMILY_DEFAULTS, PRESETS, config_fields

    defaults = {f["key"]: f["default"] for f in config_fields()}
    restated = [(name, key) for name, preset in PRESETS.items() for key, value in _leaves(preset)
                if defaults[key] == value]
    restated += [(f"{name}/{family}", key) for name, families in _FAMILY_DEFAULTS.items()
                 for family, tree in families.items() for key, value in _leaves(tree) if defaults[key] == value]
    assert not restated, f"preset values equal to the field default: {restated}"


def test_the_help_text_reaches_the_openapi_schema_and_remix_config(tmp_path, capsys):
    from backend.app import create_app
    from remix_engine.cli import main
    from remix_engine.config import config_fields
    from studio.settings import Settings

    schemas = create_app(Settings(data_dir=tmp_path)).openapi()["components"]["schemas"]
    assert main(["config"]) == 0
    listing = capsys.readouterr().out
    for field in config_fields():
        *sections, name = field["key"].split(".")
        schema = schemas["RunConfig"]
        for section in sections:
            ref = schema["properties"][section].get("$ref") or schema["properties"][section]["allOf"][0]["$ref"]
            schema = schemas[ref.rsplit("/", 1)[-1]]
        assert schema["properties"][name]["description"] == field["description"], field["key"]
        assert f"{field['key']} = " in listing and field["description"] in listing


def test_a_config_saved_before_lag_sampling_was_removed_still_loads():
    from remix_engine.config import RunConfig, build_config, config_to_dict

    saved = config_to_dict(build_config("toy", "remix-grpo"))
    saved["remix"]["lag_sampling"] = "uniform"
    assert RunConfig.model_validate(saved) == build_config("toy", "remix-grpo")


@pytest.mark.parametrize(("override", "field"), [
    ({"trainer.seed": 2**32}, "trainer.seed"), ({"trainer.seed": -1}, "trainer.seed"),
    ({"trainer.steps": 10**12}, "trainer.steps"), ({"rollout.max_new_tokens": 10**9}, "rollout.max_new_tokens"),
    ({"rollout.prompts_per_step": 10**9}, "rollout.prompts_per_step"),
    ({"actor.lr": float("inf")}, "actor.lr"), ({"critic.lr": float("nan")}, "critic.lr"),
])
def test_every_number_has_bounds_and_is_finite(override, field):
    with pytest.raises(ConfigError, match=field):
        build_config("toy", "remix-ppo", overrides=override)


def test_field_listing_carries_the_bounds():
    fields = {f["key"]: f for f in config_fields()}
    assert fields["trainer.seed"]["minimum"] == 0 and fields["trainer.seed"]["maximum"] == 2**32 - 1
    assert fields["rollout.top_p"]["exclusive_minimum"] == 0 and fields["rollout.top_p"]["maximum"] == 1
    unbounded = [k for k, f in fields.items() if f["type"] in ("int", "int | None") and "maximum" not in f]
    assert unbounded == [], unbounded
