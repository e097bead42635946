"""The provider's section of Airflow's config: ``[spark_triton]`` in airflow.cfg, ``AIRFLOW__SPARK_TRITON__*``
in the environment. One name, imported by every module that reads an option and by the provider
info that registers them (a leaf module: it imports nothing)."""

CONFIG_SECTION = "spark_triton"
#: The Fernet key(s) that seal secret ``spark_env_vars`` values in state records (``secret_env``).
SECRETS_KEY_OPTION = "secrets_key"
