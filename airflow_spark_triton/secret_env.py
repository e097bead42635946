"""The secret values of a cluster spec's ``spark_env_vars``: which they are, and how each backend keeps
them off disk, command lines and logs.

**What is secret.** A variable whose name looks like a credential's (the package's one rule,
:func:`airflow_spark_triton.runs.env.looks_secret`: ``HF_TOKEN``, ``DB_PASSWORD``, ``MY_API_KEY``,
``AWS_SECRET_ACCESS_KEY``...) or whose value does (``scheme://user:password@host``), and any value
that is a Databricks secret reference, ``{{secrets/<scope>/<key>}}``. A user marks a value as
secret by giving it such a name, or on Databricks by storing it in a secret scope and writing its
reference.

**Databricks**: a reference passes through as written (the nodes resolve it from the scope; the
cluster definition stored on the volume and ``clusters/create`` hold only the reference). A plain
value under a secret name is refused before anything is uploaded or created, naming the variable:
it would be stored in the jobs compute definition and shown in the cluster's configuration.

**Local and spark-submit**: values reach Spark through process environments only, never a command
line. A reference is refused (nothing here resolves it). A secret value is *sealed* in the state
records (Fernet, with the deployment's ``[spark_triton] secrets_key``, else Airflow's ``[core]
fernet_key``: the way Airflow keeps connection passwords in its database), unsealed only in the
task that starts a process, and handed to that process in its environment; a run's
``command.json`` names the secret variables, and the run supervisor takes their values from its
own environment. Without a key, a secret value is refused, naming the option.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_spark_triton.config_section import CONFIG_SECTION, SECRETS_KEY_OPTION
from airflow_spark_triton.errors import BackendConfigError
from airflow_spark_triton.runs.env import looks_secret

SECRET_REFERENCE = re.compile(r"^\{\{\s*secrets/[^/{}\s]+/[^/{}\s]+\s*\}\}$")
SEALED_PREFIX = "sealed:fernet:"


def is_reference(value: object) -> bool:
    """A Databricks secret reference, ``{{secrets/<scope>/<key>}}``."""
    return isinstance(value, str) and bool(SECRET_REFERENCE.match(value))


def secret_names(env: Mapping[str, Any] | None) -> list[str]:
    """The variables of ``env`` whose values are secret (see the module docstring), sorted."""
    return sorted(
        str(name)
        for name, value in (env or {}).items()
        if is_reference(value) or looks_secret(str(name), str(value))
    )


def refuse_plain_secrets(env: Mapping[str, Any] | None) -> None:
    """Databricks: every secret value must be a secret reference."""
    plain = [name for name in secret_names(env) if not is_reference((env or {})[name])]
    if plain:
        raise BackendConfigError(
            f"cluster setting 'spark_env_vars': {', '.join(plain)} look(s) secret but the value is not a "
            "Databricks secret reference. Store it in a secret scope (databricks secrets put-secret "
            "<scope> <key>) and set the variable to '{{secrets/<scope>/<key>}}' (in a templated "
            "field: \"{{ '{{secrets/<scope>/<key>}}' }}\"): a plain value would be stored in the "
            "cluster definition and shown in the cluster's configuration"
        )


def refuse_references(env: Mapping[str, Any] | None, backend: str) -> None:
    """Local and spark-submit: a Databricks secret reference has nothing to resolve it."""
    references = [name for name, value in (env or {}).items() if is_reference(value)]
    if references:
        raise BackendConfigError(
            f"cluster setting 'spark_env_vars': {', '.join(sorted(references))} is a Databricks secret "
            f"reference, which only Databricks resolves; the {backend} backend takes the value itself "
            '(e.g. "{{ var.value.<name> }}" or "{{ conn.<id>.password }}"), which it keeps sealed'
        )


def _fernet() -> Any:
    """``[spark_triton] secrets_key``, else ``[core] fernet_key``; None when neither is a key."""
    from airflow.sdk.configuration import conf
    from cryptography.fernet import Fernet, MultiFernet

    for section, option in ((CONFIG_SECTION, SECRETS_KEY_OPTION), ("core", "fernet_key")):
        value = conf.get(section, option, fallback="") or ""
        try:
            keys = [Fernet(part.strip().encode()) for part in value.split(",") if part.strip()]
        except ValueError:  # an unexpanded template, a wrong key: not a key
            continue
        if keys:
            return MultiFernet(keys)
    return None


def seal(env: Mapping[str, Any] | None, backend: str) -> dict[str, str]:
    """``env`` for a state record: secret values sealed, the others as text. References refused."""
    refuse_references(env, backend)
    env = {str(k): str(v) for k, v in (env or {}).items()}
    names = secret_names(env)
    if not names:
        return env
    fernet = _fernet()
    if fernet is None:
        raise BackendConfigError(
            f"cluster setting 'spark_env_vars': {', '.join(names)} look(s) secret, and the {backend} "
            f"backend keeps secret values sealed in its state records: set [{CONFIG_SECTION}] "
            f"{SECRETS_KEY_OPTION} (or Airflow's [core] fernet_key) to a Fernet key on the workers"
        )
    return {
        k: SEALED_PREFIX + fernet.encrypt(v.encode()).decode() if k in names else v for k, v in env.items()
    }


def unseal(env: Mapping[str, Any] | None) -> dict[str, str]:
    """A record's ``spark_env_vars`` as the processes get them: sealed values opened."""
    env = {str(k): str(v) for k, v in (env or {}).items()}
    sealed = [k for k, v in env.items() if v.startswith(SEALED_PREFIX)]
    if not sealed:
        return env
    from cryptography.fernet import InvalidToken

    fernet = _fernet()
    try:
        if fernet is None:
            raise InvalidToken
        return {
            k: fernet.decrypt(v.removeprefix(SEALED_PREFIX).encode()).decode() if k in sealed else v
            for k, v in env.items()
        }
    except InvalidToken:
        raise BackendConfigError(
            f"the sealed spark_env_vars {', '.join(sealed)} cannot be opened with this worker's "
            f"[{CONFIG_SECTION}] {SECRETS_KEY_OPTION} / [core] fernet_key: every worker needs the key "
            "that sealed them (a rotated key stays in the list: 'new,old')"
        ) from None


def plain_and_secret(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split an opened ``spark_env_vars`` into what may be recorded and what only an environment holds."""
    names = set(secret_names(env))
    return (
        {k: v for k, v in env.items() if k not in names},
        {k: v for k, v in env.items() if k in names},
    )
