"""Which spark_env_vars are secret, and their sealing in state records (issue #24, item 5)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from airflow_spark_triton.errors import BackendConfigError
from airflow_spark_triton.secret_env import (
    SEALED_PREFIX,
    plain_and_secret,
    refuse_plain_secrets,
    refuse_references,
    seal,
    secret_names,
    unseal,
)

ENV = {  # secret values with a '.', which no sealed (base64url) value contains
    "HF_TOKEN": "hf.abc",
    "DB_PASSWORD": "pw.1",
    "MODEL_API_KEY": "k.2",
    "WAREHOUSE_URL": "postgresql://etl:pw@db/x",  # the value gives it away
    "GATED_MODEL": "{{secrets/ml/hf}}",  # a Databricks reference: secret whatever its name
    "MODEL_DIR": "/models",
    "OMP_NUM_THREADS": "4",
}


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__SECRETS_KEY", value)
    return value


def test_names_values_and_references_mark_a_secret():
    assert secret_names(ENV) == ["DB_PASSWORD", "GATED_MODEL", "HF_TOKEN", "MODEL_API_KEY", "WAREHOUSE_URL"]
    plain, secret = plain_and_secret(ENV)
    assert plain == {"MODEL_DIR": "/models", "OMP_NUM_THREADS": "4"} and set(secret) == set(secret_names(ENV))


def test_databricks_takes_references_and_refuses_plain_secret_values():
    refuse_plain_secrets({"HF_TOKEN": "{{secrets/ml/hf}}", "MODEL_DIR": "/models", "X": "{{ secrets/a/b }}"})
    with pytest.raises(BackendConfigError, match=r"DB_PASSWORD, HF_TOKEN, MODEL_API_KEY, WAREHOUSE_URL look"):
        refuse_plain_secrets(ENV)


def test_local_backends_refuse_references_they_cannot_resolve(key):
    with pytest.raises(BackendConfigError, match=r"GATED_MODEL is a Databricks secret reference"):
        refuse_references(ENV, "local")
    with pytest.raises(BackendConfigError, match="GATED_MODEL"):
        seal(ENV, "local")


def test_secret_values_are_sealed_and_open_again_with_the_key(key, monkeypatch):
    env = {k: v for k, v in ENV.items() if k != "GATED_MODEL"}
    sealed = seal(env, "local")
    assert sealed["MODEL_DIR"] == "/models" and sealed["OMP_NUM_THREADS"] == "4"
    for name in ("HF_TOKEN", "DB_PASSWORD", "MODEL_API_KEY", "WAREHOUSE_URL"):
        assert sealed[name].startswith(SEALED_PREFIX) and env[name] not in sealed[name]
    assert unseal(sealed) == env
    # A rotated key is listed first, the old one after it: records sealed before still open.
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__SECRETS_KEY", f"{Fernet.generate_key().decode()},{key}")
    assert unseal(sealed) == env
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__SECRETS_KEY", Fernet.generate_key().decode())
    with pytest.raises(BackendConfigError, match="cannot be opened with this worker's"):
        unseal(sealed)


def test_without_a_key_a_secret_value_is_refused_naming_the_option(monkeypatch):
    monkeypatch.delenv("AIRFLOW__SPARK_TRITON__SECRETS_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "{FERNET_KEY}")  # an unexpanded template: no key
    assert seal({"MODEL_DIR": "/models"}, "local") == {"MODEL_DIR": "/models"}
    with pytest.raises(BackendConfigError, match=r"set \[spark_triton\] secrets_key \(or Airflow's \[core\]"):
        seal({"HF_TOKEN": "hf_abc"}, "local")
    fernet_key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", fernet_key)  # Airflow's own key will do
    assert unseal(seal({"HF_TOKEN": "hf_abc"}, "local")) == {"HF_TOKEN": "hf_abc"}
