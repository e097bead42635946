"""The allow-lists of what a DAG run's conf may set: defaults, globs, code-bearing keys, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_spark_triton.trigger_policy import DEFAULTS, PACKAGE_INIT_SCRIPTS, TriggerPolicy

DEFAULT = TriggerPolicy.from_options({})


def settings(refusals) -> list[str]:
    return [refusal.setting for refusal in refusals]


def test_default_models_are_the_packages_own() -> None:
    assert DEFAULT.check_model("'model'", "spark_jobs.models.minilm:MODEL") == []
    (refusal,) = DEFAULT.check_model("'model'", "os:system")
    assert refusal.option == "allowed_models"
    text = refusal.describe()
    assert "AIRFLOW__SPARK_TRITON__ALLOWED_MODELS" in text and "'os:system'" in text


def test_connections_need_an_entry_and_globs_work() -> None:
    assert settings(DEFAULT.check_conn_id("'conn_id'", "prod_workspace")) == ["'conn_id'"]
    policy = TriggerPolicy.from_options({"allowed_conn_ids": "team_a_*, shared"})
    assert policy.check_conn_id("'conn_id'", "team_a_dev") == []
    assert policy.check_conn_id("'conn_id'", "shared") == []
    assert settings(policy.check_conn_id("'conn_id'", "team_b_dev")) == ["'conn_id'"]


def test_code_bearing_spark_conf_needs_an_exact_entry_even_under_a_wildcard() -> None:
    authored = {"spark_conf": {"spark.sql.shuffle.partitions": "8"}}
    run = {
        "spark_conf": {
            "spark.sql.shuffle.partitions": "64",
            "spark.sql.adaptive.enabled": "false",
            "spark.driver.extraJavaOptions": "-javaagent:/tmp/a.jar",
            "spark.jars": "/tmp/x.jar",
            "spark.sql.adaptive.customCostEvaluatorClass": "evil.Cost",
        }
    }
    refused = DEFAULT.check_cluster_spec("'cluster_spec'", run, authored)
    assert settings(refused) == [
        "'cluster_spec'['spark_conf']['spark.driver.extraJavaOptions']",
        "'cluster_spec'['spark_conf']['spark.jars']",
        "'cluster_spec'['spark_conf']['spark.sql.adaptive.customCostEvaluatorClass']",
    ]
    assert all(refusal.carries_code for refusal in refused)
    everything = TriggerPolicy.from_options({"allowed_spark_conf": "*"})
    assert len(everything.check_cluster_spec("'cluster_spec'", run, authored)) == 3
    exact = TriggerPolicy.from_options({"allowed_spark_conf": "*, spark.jars"})
    assert len(exact.check_cluster_spec("'cluster_spec'", run, authored)) == 2


def test_settings_the_dag_author_wrote_are_not_checked() -> None:
    spec = {
        "num_workers": 4,
        "spark_conf": {"spark.driver.extraJavaOptions": "-Dauthor=yes"},
        "spark_env_vars": {"PYTHONPATH": "/opt/team"},
        "init_script": "/opt/team/init.sh",
        "policy_id": "P1",
        "model": "team.models:MODEL",
    }
    assert DEFAULT.check_cluster_spec("'cluster_spec'", spec, dict(spec)) == []
    changed = {**spec, "num_workers": 8}
    assert DEFAULT.check_cluster_spec("'cluster_spec'", changed, spec) == []


def test_env_vars_governance_fields_and_spec_model() -> None:
    run = {
        "spark_env_vars": {"LD_PRELOAD": "/tmp/evil.so", "TEAM_LABEL": "x"},
        "policy_id": "other-policy",
        "extra_cluster_fields": {"docker_image": {"url": "evil"}},
        "model": "evil.module:MODEL",
        "compute": "all_purpose",
    }
    refused = DEFAULT.check_cluster_spec("'cluster_spec'", run, {})
    assert settings(refused) == [
        "'cluster_spec'['extra_cluster_fields']",
        "'cluster_spec'['model']",
        "'cluster_spec'['policy_id']",
        "'cluster_spec'['spark_env_vars']['LD_PRELOAD']",
        "'cluster_spec'['spark_env_vars']['TEAM_LABEL']",
    ]
    # An option replaces its default: a deployment that adds policy_id lists the defaults too.
    wider = DEFAULTS["allowed_cluster_settings"] + ",policy_id"
    policy = TriggerPolicy.from_options({"allowed_spark_env_vars": "*", "allowed_cluster_settings": wider})
    assert settings(policy.check_cluster_spec("'cluster_spec'", run, {})) == [
        "'cluster_spec'['extra_cluster_fields']",
        "'cluster_spec'['model']",
        "'cluster_spec'['spark_env_vars']['LD_PRELOAD']",
    ]


def test_init_scripts_only_from_the_package_or_an_allowed_directory(tmp_path: Path) -> None:
    allowed = tmp_path / "scripts"
    allowed.mkdir()
    (allowed / "ok.sh").write_text("true\n")
    (tmp_path / "link.sh").symlink_to("/proc/self/environ")
    (allowed / "escape.sh").symlink_to("/etc/passwd")
    packaged = str(PACKAGE_INIT_SCRIPTS / "local_init.sh")
    assert DEFAULT.check_init_script("x", packaged) == []
    for path in ("/proc/self/environ", str(allowed / "ok.sh"), str(tmp_path / "link.sh")):
        assert settings(DEFAULT.check_init_script("x", path)) == ["x"], path
    policy = TriggerPolicy.from_options({"allowed_init_script_dirs": f"{allowed}, /Volumes/main/ops/scripts"})
    assert policy.check_init_script("x", str(allowed / "ok.sh")) == []
    assert policy.check_init_script("x", "/Volumes/main/ops/scripts/gpu.sh") == []
    for path in (
        str(allowed / "../link.sh"),
        str(allowed / "escape.sh"),
        str(allowed),
        "/Volumes/main/ops/scripts/../../other/x.sh",
        "/Volumes/main/ops/scriptsX/x.sh",
    ):
        assert settings(policy.check_init_script("x", path)) == ["x"], path


def test_model_options_refuse_keys_that_reach_code_or_files() -> None:
    keys = ["encode_batch_size", "trust_remote_code", "cache_dir", "weights_path", "hf_token", "device"]
    keys += ["token", "use_auth_token", "max_new_tokens", "min_new_tokens", "clean_up_tokenization_spaces"]
    values = dict.fromkeys(keys, "v")
    assert settings(DEFAULT.check_model_options("'model_options'", keys, values)) == [
        "'model_options'['trust_remote_code']",
        "'model_options'['cache_dir']",
        "'model_options'['weights_path']",
        "'model_options'['hf_token']",
        "'model_options'['token']",
        "'model_options'['use_auth_token']",
    ]  # generation options that merely mention tokens are data
    narrow = TriggerPolicy.from_options({"allowed_model_options": "encode_batch_size"})
    assert len(narrow.check_model_options("'model_options'", keys, values)) == len(keys) - 1


def test_provider_registers_the_same_defaults() -> None:
    from airflow_spark_triton import get_provider_info

    options = get_provider_info()["config"]["spark_triton"]["options"]
    assert {name: option["default"] for name, option in options.items() if name in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("option", sorted(DEFAULTS))
def test_airflow_config_overrides_each_option(monkeypatch: pytest.MonkeyPatch, option: str) -> None:
    monkeypatch.setenv(f"AIRFLOW__SPARK_TRITON__{option.upper()}", "a*, b")
    assert getattr(TriggerPolicy.from_airflow_config(), option) == ("a*", "b")
