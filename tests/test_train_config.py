"""Recipe configs (thermgen.train.config): loading, validation, overrides, shipped files."""

from pathlib import Path

import pytest

from thermgen.train.config import ConfigError, config_hash, defaults, describe_keys, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_override_sets_a_typed_value():
    cfg = load_config(None, ["train.max_train_steps=50", "train.snr_gamma=null", "unet.block_out_channels=[32, 64]"])
    assert cfg["train"]["max_train_steps"] == 50
    assert cfg["train"]["snr_gamma"] is None
    assert cfg["unet"]["block_out_channels"] == [32, 64]


def test_unknown_override_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"train\.lerning_rate.*did you mean 'learning_rate'"):
        load_config(None, ["train.lerning_rate=0.1"])


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="unknown config section 'trian'"):
        load_config(None, ["trian.max_train_steps=3"])


def test_wrong_type_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"'train\.max_train_steps': expected int, got str 'many'"):
        load_config(None, ["train.max_train_steps=many"])


def test_bool_is_not_accepted_as_a_number():
    with pytest.raises(ConfigError, match=r"'train\.learning_rate'"):
        load_config(None, ["train.learning_rate=true"])


def test_value_outside_choices_names_the_key():
    with pytest.raises(ConfigError, match=r"'unet\.conditioning': 'mixed' is not one of"):
        load_config(None, ["unet.conditioning=mixed"])


def test_value_below_minimum_names_the_key():
    with pytest.raises(ConfigError, match=r"'train\.train_batch_size': 0 is below the minimum"):
        load_config(None, ["train.train_batch_size=0"])


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("train.max_train_steps")


def test_inconsistent_unet_blocks_name_the_key():
    with pytest.raises(ConfigError, match=r"'unet\.down_block_types': 2 blocks but unet\.block_out_channels has 3"):
        load_config(None, ["unet.block_out_channels=[32, 64, 128]"])


def test_real_data_source_requires_a_root():
    with pytest.raises(ConfigError, match=r"'data\.root' is required"):
        load_config(None, ["data.source=hit-uav"])


def test_epsilon_prediction_under_the_cosine_schedule_is_rejected_naming_both_keys():
    with pytest.raises(ConfigError, match=r"'train\.prediction_type'.*scheduler\.beta_schedule='squaredcos_cap_v2'"):
        load_config(None, ["train.prediction_type=epsilon", "scheduler.beta_schedule=squaredcos_cap_v2"])
    cfg = load_config(None, ["train.prediction_type=epsilon", "scheduler.beta_schedule=scaled_linear"])
    assert cfg["train"]["prediction_type"] == "epsilon"


def test_overrides_apply_together_in_any_order():
    cfg = load_config(None, ["data.source=hit-uav", "data.root=/data/hit-uav"])
    assert (cfg["data"]["source"], cfg["data"]["root"]) == ("hit-uav", "/data/hit-uav")


def test_yaml_error_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_train_steps: 10\n  warmup: 3\n")
    with pytest.raises(ConfigError, match=rf"{bad}.*'train\.warmup'"):
        load_config(bad)


def test_yaml_base_chain_applies_parent_then_child(tmp_path):
    (tmp_path / "parent.yaml").write_text("train:\n  max_train_steps: 10\n  learning_rate: 0.5\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  max_train_steps: 20\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg["train"]["max_train_steps"] == 20 and cfg["train"]["learning_rate"] == 0.5


def test_string_key_keeps_a_numeric_looking_value_as_text():
    assert load_config(None, ["data.train_split=2020"])["data"]["train_split"] == "2020"


def test_shipped_cpu_default_restates_the_built_in_defaults():
    assert load_config(CONFIGS / "cpu-default.yaml") == defaults()


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_validates(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg["unet"]["conditioning"] in ("concat", "fused", "global")


def test_config_hash_changes_with_any_value():
    a = defaults()
    b = defaults()
    b["train"]["learning_rate"] = 0.5
    assert config_hash(a) == config_hash(defaults()) != config_hash(b)


@pytest.mark.parametrize("betas", [["train.beta_start=0.02", "train.beta_end=0.01"], ["train.beta_end=1.5"]])
def test_betas_out_of_order_or_range_name_the_keys(betas):
    with pytest.raises(ConfigError, match=r"'train\.beta_start'/'train\.beta_end'"):
        load_config(None, betas)


def test_list_keys_documents_the_betas():
    keys = describe_keys()
    assert "train.beta_start = 0.0001" in keys and "train.beta_end = 0.02" in keys


def test_epsilon_with_the_configs_cosine_schedule_is_left_to_a_pretrained_sd_folders_schedule():
    # The folder's schedule replaces scheduler.beta_schedule; thermgen.train.unet.resolve_noise_schedule checks it.
    cfg = load_config(None, ["train.prediction_type=epsilon", "unet.pretrained=/models/sd"])
    assert cfg["train"]["prediction_type"] == "epsilon"


def test_tclip_section_is_the_training_config_of_tclip_train_with_its_keys_checked(tmp_path):
    """tclip.config names tclip.train's config, tclip.train changes its keys; both are checked on load."""
    from thermgen.train.config import tclip_train_config

    cfg = load_config(None, ["tclip.config=tiny", "tclip.train={base_stage: {steps: 7}, lora: {r: 4}}"])
    resolved = tclip_train_config(cfg)
    assert resolved["base_stage"]["steps"] == 7 and resolved["lora"]["r"] == 4
    assert resolved["base_stage"]["batch_size"] == 32  # the rest of tiny.json's stage is kept
    assert tclip_train_config(load_config(None))["base_stage"]["steps"] == 400  # recipe-cpu, the CPU default
    with pytest.raises(ConfigError, match=r"tclip\.train.*adapter_stage.*stepz"):
        load_config(None, ["tclip.train={adapter_stage: {stepz: 3}}"])
    with pytest.raises(ConfigError, match=r"tclip\.config.*no-such-config"):
        load_config(None, ["tclip.config=no-such-config"])
    # a run folder's config.yaml from before: its tclip.args read as the same training config
    old = tmp_path / "old.yaml"
    old.write_text('tclip:\n  args: ["--config", "tiny", "--base-steps", "5", "--batch-size", "8"]\n')
    t = load_config(old)["tclip"]
    assert t["config"] == "tiny" and t["train"] == {"base_stage": {"steps": 5, "batch_size": 8},
                                                   "adapter_stage": {"batch_size": 8}}
    old.write_text('tclip:\n  args: ["--config", "tiny", "--frobnicate", "1"]\n')
    with pytest.raises(ConfigError, match=r"old\.yaml.*tclip\.args.*tclip\.config"):
        load_config(old)
    with pytest.raises(ConfigError, match=r"tclip\.args is gone"):
        load_config(None, ['tclip.args=["--config", "tiny"]'])
    # a T-CLIP folder given in tclip.dir is not trained, so its training config is not read
    assert load_config(None, ["tclip.dir=/some/folder", "tclip.config=no-such-config"])["tclip"]["dir"] == "/some/folder"
    # the fusion alpha that conditions the UNet: the folder's own (None) or one in [0, 1]
    assert load_config(None, ["unet.fusion_alpha=0.7"])["unet"]["fusion_alpha"] == 0.7
    for bad in ("1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"unet\.fusion_alpha"):
            load_config(None, [f"unet.fusion_alpha={bad}"])


def test_vae_settings_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"vae\.train\.stepz"):
        load_config(None, ["vae.train={stepz: 3}"])
    with pytest.raises(ConfigError, match=r"vae\.train\.batch_size must be a positive integer"):
        load_config(None, ["vae.train={batch_size: 0}"])


def test_documented_pretrained_sd_vae_setting_loads_and_batches_must_split_over_the_processes():
    """vae.train is checked with the vae section it belongs to (a 3-channel VAE keeps a pretrained SD VAE), after
    every layer; each global batch must split evenly over run.num_processes."""
    cfg = load_config(CONFIGS / "paper-vitb16-sd15.yaml", ["vae.pretrained=/models/sd15", "vae.train={channels: 3, steps: 0}"])
    assert cfg["vae"]["train"]["channels"] == 3
    with pytest.raises(ConfigError, match=r"vae\.train\.channels"):
        load_config(None, ["vae.train={channels: 3}"])
    with pytest.raises(ConfigError, match=r"tclip\.train.*base_stage\.batch_size 32.*num_processes 3"):
        load_config(None, ["run.num_processes=3"])
    nine = ["run.num_processes=3", "tclip.train={base_stage: {batch_size: 9}, adapter_stage: {batch_size: 9}}"]
    with pytest.raises(ConfigError, match=r"vae\.train.*batch_size 8.*num_processes 3"):
        load_config(None, nine)
    with pytest.raises(ConfigError, match=r"train\.train_batch_size.*num_processes 3"):
        load_config(None, nine + ["vae.train={batch_size: 9}"])
    assert load_config(None, ["run.num_processes=2"])["run"]["num_processes"] == 2


def test_one_setting_of_a_stage_is_overridden_in_place_and_listed_with_its_default():
    """vae.train.<setting>=V and tclip.train.<a>.<b>=V change one setting and keep the file's others (a whole
    vae.train={...} replaces the mapping); --list-keys lists those settings from the stages' own definitions."""
    cfg = load_config(CONFIGS / "hituav-64.yaml", ["vae.train.steps=7", "tclip.train.base_stage.steps=11",
                                                    "tclip.train.lora.r=4", "vae.train.learning_rate=0.01"])
    assert cfg["vae"]["train"] == {"kind": "patch", "patch_size": 4, "steps": 7, "learning_rate": 0.01}
    assert cfg["tclip"]["train"] == {"base_stage": {"steps": 11}, "lora": {"r": 4}}
    from thermgen.train.config import tclip_train_config

    t = tclip_train_config(cfg)
    assert t["base_stage"]["steps"] == 11 and t["lora"]["r"] == 4 and t["base"] == "tclip-cpu-rn"  # hituav-cpu's own
    assert load_config(CONFIGS / "hituav-64.yaml", ["vae.train={steps: 7}"])["vae"]["train"] == {"steps": 7}
    # text settings stay text where YAML would read a bool (no) or a number
    cfg = load_config(None, ["vae.train.mixed_precision=no", "tclip.train.mixed_precision=no"])
    assert cfg["vae"]["train"]["mixed_precision"] == "no" and cfg["tclip"]["train"]["mixed_precision"] == "no"
    with pytest.raises(ConfigError, match=r"vae\.train\.stepz"):
        load_config(None, ["vae.train.stepz=3"])
    with pytest.raises(ConfigError, match=r"tclip\.train.*lora\.r must be int, like its default 8; got 'x'"):
        load_config(None, ["tclip.train.lora.r=x"])
    with pytest.raises(ConfigError, match=r"tclip\.train.*base_stage: unknown key 'stepz'"):
        load_config(None, ["tclip.train.base_stage.stepz=3"])
    with pytest.raises(ConfigError, match=r"must be section\.key.*vae\.train\.<setting>"):
        load_config(None, ["unet.block_out_channels.x=3"])
    keys = describe_keys()
    assert "vae.train.steps = 300" in keys and "vae.train.resolution* = 64" in keys
    assert "tclip.train.base_stage.steps = 400" in keys and "tclip.train.lora.r = 8" in keys


def test_one_dataclass_per_section_defines_every_key_and_gives_a_typed_view(tmp_path):
    """SECTIONS: one dataclass per stage; SCHEMA, the defaults and --list-keys come from their fields, and
    RecipeConfig is the typed view of a loaded config (round trip to the dict that run folders store)."""
    import dataclasses

    from thermgen.train.config import SCHEMA, SECTIONS, RecipeConfig, describe_keys, load_recipe_config

    assert list(SCHEMA) == list(SECTIONS) == [f.name for f in dataclasses.fields(RecipeConfig)]
    for sec, cls in SECTIONS.items():
        fields = dataclasses.fields(cls)
        assert [f.name for f in fields] == list(SCHEMA[sec])
        for f in fields:
            assert f.metadata["schema"] is SCHEMA[sec][f.name]
            assert f"  {sec}.{f.name} = " in describe_keys()
    assert RecipeConfig().to_dict() == load_config(None)
    a, b = RecipeConfig(), RecipeConfig()
    a.unet.block_out_channels.append(256)  # list defaults are copied per instance
    assert b.unet.block_out_channels == [64, 128]
    cfg = load_recipe_config(None, ["train.max_train_steps=50", "vae.train.steps=3"])
    assert isinstance(cfg, RecipeConfig) and cfg.train.max_train_steps == 50 and cfg.vae.train == {"steps": 3}
    assert RecipeConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="train.max_train_steps"):
        load_recipe_config(None, ["train.max_train_steps=0"])


@pytest.mark.parametrize("bad", ["[1.0]", "[2.0, 1.0]", "[-1.0, 1.0]", "[0.0, .inf]"])
def test_guidance_interval_needs_low_below_high(bad):
    with pytest.raises(ConfigError, match=r"'eval\.guidance_interval': need \[low, high\]"):
        load_config(None, [f"eval.guidance_interval={bad}"])
    assert load_config(None, ["eval.guidance_interval=[0.28, 5.42]"])["eval"]["guidance_interval"] == [0.28, 5.42]
