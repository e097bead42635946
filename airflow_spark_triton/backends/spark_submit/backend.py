"""The spark-submit backend: the same job on a Spark cluster that already exists (standalone, YARN, Kubernetes).

For teams without Databricks. It composes apache-airflow-providers-apache-spark's
``SparkSubmitHook`` (through :class:`~airflow_spark_triton.hooks.spark_submit.SparkSubmitGpuHook`,
which reads the ``spark`` connection), which owns the spark-submit command line, standalone cluster
mode's driver polling and each engine's kill. That hook blocks until the application ends, so it runs
in a detached runner (:mod:`~airflow_spark_triton.backends.spark_submit.runner`) under the same
supervisor as local runs (:class:`~airflow_spark_triton.runs.supervised.SupervisedRuns`): the Airflow
task can defer, retry or die while the run goes on.

The cluster is not ours to create or delete. "Create" *attaches*: it records the connection, tags
and spec (a retried create finds the attachment by its tags) and checks the master answers.
"Delete" *detaches*: it cancels this attachment's runs and leaves the cluster running. The job's
own ``finally`` stops the Triton servers, and each server's watchdog stops it if the driver dies.

Attachment directory ``<home>/attachments/<attachment_id>/``: ``attachment.json`` (ATTACHED →
DETACHED, a guarded record) and ``runs/``.

The spec's ``spark_env_vars`` never go on spark-submit's command line (``ps``, SparkSubmitHook's
log). In client mode they reach the driver in the runner's environment (secret ones sealed in the
records: :mod:`airflow_spark_triton.secret_env`) and the job hands them to its executors
(:mod:`spark_jobs.executor_env`); in cluster mode, where only the command line reaches the driver,
non-secret ones go as ``spark.executorEnv`` settings and secret ones are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow_spark_triton import secret_env
from airflow_spark_triton.backends.spark_submit.runner import CONNECTION_FILE, SUBMIT_FILE
from airflow_spark_triton.backends.supervised import SupervisedRunsBackend
from airflow_spark_triton.backends.table_schema import delta_rs_columns
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.errors import BackendConfigError, ClusterError, RunError
from airflow_spark_triton.hooks.spark_submit import SparkSubmitGpuHook
from airflow_spark_triton.runs.env import run_environment
from airflow_spark_triton.runs.records import JsonRecord, now_iso
from spark_jobs.contract import JOB_SCRIPT, REPORT_FILE, InferenceJobConfig, RunReport
from spark_jobs.executor_env import EXECUTOR_ENV
from spark_jobs.json_files import read_json, write_json_atomic
from spark_jobs.models.huggingface import local_reader

log = logging.getLogger(__name__)

MASTER_CONNECT_TIMEOUT_S = 5.0
ATTACHMENT_ID_PATTERN = r"submit-[0-9a-f]{12}"
_ATTACHMENT_ID = re.compile(rf"^{ATTACHMENT_ID_PATTERN}$")
ATTACHMENT_FILE = "attachment.json"
RUNNER_MODULE = "airflow_spark_triton.backends.spark_submit.runner"
SPARK_DEFAULT_REDACTION = "(?i)secret|password|token|access[.]key"  # Spark's own spark.redaction.regex


class AttachmentState(StrEnum):
    ATTACHED = "ATTACHED"
    DETACHED = "DETACHED"


TRANSITIONS = {None: {AttachmentState.ATTACHED}, AttachmentState.ATTACHED: {AttachmentState.DETACHED}}


class SparkSubmitBackend(SupervisedRunsBackend):
    """:class:`~airflow_spark_triton.backends.base.GpuSparkBackend` on an existing cluster via spark-submit.

    :param spark_conn_id: a connection of type ``spark``; see
        :class:`~airflow_spark_triton.hooks.spark_submit.SparkSubmitGpuHook` for the extras it reads.
    :param home: state directory; overrides the connection's ``home`` and ``$AIRFLOW_SPARK_TRITON_HOME``.
    """

    conn_name_attr = SparkSubmitGpuHook.conn_name_attr  # where the connection id is, as on Airflow hooks
    owners_subdir = "attachments"
    owner_pattern = ATTACHMENT_ID_PATTERN
    finished_state = AttachmentState.DETACHED

    def __init__(
        self, spark_conn_id: str = SparkSubmitGpuHook.default_conn_name, home: str | None = None
    ) -> None:
        self.spark_conn_id = spark_conn_id
        super().__init__(SparkSubmitGpuHook(spark_conn_id), home)

    attachments_dir = SupervisedRunsBackend.owners_dir

    def attachment_dir(self, attachment_id: str) -> Path:
        if not _ATTACHMENT_ID.match(attachment_id):
            raise ClusterError(f"{attachment_id!r} is not a spark-submit attachment id (submit-<12 hex>)")
        return self.attachments_dir / attachment_id

    def report_path(self, run_id: str) -> Path:
        report_dir = self._attachment_report_dir(self.runs.owner_of(run_id))
        return (Path(report_dir) / run_id if report_dir else self.runs.run_dir(run_id)) / REPORT_FILE

    def _attachment_report_dir(self, attachment_id: str) -> str | None:
        return (self.get_attachment(attachment_id) or {}).get("report_dir")

    def master_url(self) -> str:
        """The master exactly as SparkSubmitHook will resolve it from the connection."""
        return self.hook.master_url()

    # -- attachments (the backend's "clusters") -----------------------------------------------

    def _record(self, attachment_id: str) -> JsonRecord:
        adir = self.attachment_dir(attachment_id)
        return JsonRecord(adir / ATTACHMENT_FILE, adir / ".lock", TRANSITIONS)

    def get_attachment(self, attachment_id: str) -> dict[str, Any] | None:
        return self._record(attachment_id).read()

    def _require_attachment(self, attachment_id: str) -> dict[str, Any]:
        attachment = self.get_attachment(attachment_id)
        if attachment is None:
            raise ClusterError(f"unknown spark-submit attachment {attachment_id} (home {self.home})")
        return attachment

    def _iter_attachments(self) -> Iterator[dict[str, Any]]:
        records = [read_json(p) for p in self.attachments_dir.glob(f"submit-*/{ATTACHMENT_FILE}")]
        yield from sorted((r for r in records if r), key=lambda r: r.get("created_at", ""), reverse=True)

    def find_cluster(self, tags: dict[str, str]) -> str | None:
        wanted = {str(k): str(v) for k, v in tags.items()}
        for attachment in self._iter_attachments():
            if (
                attachment.get("state") != AttachmentState.ATTACHED
                or attachment.get("conn_id") != self.spark_conn_id
            ):
                continue
            if all(attachment.get("tags", {}).get(k) == v for k, v in wanted.items()):
                return attachment["attachment_id"]
        return None

    def create_cluster(self, spec: GpuClusterSpec, tags: dict[str, str]) -> str:
        """Attach to the connection's cluster; nothing is started, so nothing can be left half-made.

        ``spec.model``'s requirements are not checked: the cluster is not this package's (whoever runs it
        provisions its nodes' environments), and nothing here runs on them before a job;
        a missing requirement fails the inference run, on the executor that imports it.
        """
        if self.hook.deploy_mode() == "cluster" and secret_env.secret_names(spec.spark_env_vars):
            raise BackendConfigError(
                f"cluster setting 'spark_env_vars': {', '.join(secret_env.secret_names(spec.spark_env_vars))} "
                f"look(s) secret, and connection {self.spark_conn_id!r} submits in deploy-mode cluster, "
                "where only spark-submit's command line (shown by ps and logged) reaches the driver: use "
                "deploy-mode client, or the cluster's own secrets (e.g. spark.kubernetes.*.secretKeyRef)"
            )
        recorded_spec = {
            **spec.to_dict(),
            "spark_env_vars": secret_env.seal(spec.spark_env_vars, "spark-submit"),
        }
        attachment_id = f"submit-{secrets.token_hex(6)}"
        master = self.master_url()
        (self.attachment_dir(attachment_id) / "runs").mkdir(parents=True)
        self._record(attachment_id).update(
            attachment_id=attachment_id,
            state=AttachmentState.ATTACHED.value,
            conn_id=self.spark_conn_id,
            master=master,
            tags={str(k): str(v) for k, v in tags.items()},
            spec=recorded_spec,
            deploy_mode=self.hook.deploy_mode(),
            report_dir=self.hook.report_dir,
            created_at=now_iso(),
        )
        log.info("Attached %s to the Spark cluster at %s", attachment_id, master)
        return attachment_id

    def wait_for_cluster(self, cluster_id: str, timeout_s: float) -> None:
        """Fail early and by name: spark-submit missing here, or a standalone master not answering."""
        attachment = self._require_attachment(cluster_id)
        binary = self.hook.spark_binary()
        if shutil.which(binary) is None:
            raise ClusterError(
                f"{binary!r} (connection {self.spark_conn_id!r}, extra 'spark-binary') is not on the PATH "
                "of the Airflow worker; install Spark or pyspark there"
            )
        master = urlsplit(attachment["master"])
        if master.scheme != "spark":
            return  # YARN and Kubernetes answer through spark-submit itself
        deadline = time.monotonic() + timeout_s
        hosts = [h.split(":") for h in master.netloc.split(",")]
        while True:
            for host, port in hosts:
                with (
                    contextlib.suppress(OSError),  # not answering (yet): try the next, then again
                    socket.create_connection((host, int(port)), MASTER_CONNECT_TIMEOUT_S),
                ):
                    return
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"the Spark master {attachment['master']} (connection {self.spark_conn_id!r}) does not "
                    f"accept connections after {timeout_s:.0f}s"
                )
            time.sleep(1.0)

    def delete_cluster(self, cluster_id: str) -> None:
        """Detach: cancel this attachment's runs. The cluster itself is not ours and keeps running."""
        attachment = self.get_attachment(cluster_id)
        if attachment is None or attachment.get("state") == AttachmentState.DETACHED:
            log.info("Attachment %s is unknown or already detached: nothing to do", cluster_id)
            return
        for run_id in self.runs.active(cluster_id):
            log.info("Canceling run %s before detaching %s", run_id, cluster_id)
            self.runs.cancel(run_id)
        left = self.runs.stop_leftover_drivers(cluster_id)  # e.g. its supervisor was killed
        if left:
            raise ClusterError(f"could not stop every driver of {cluster_id}: {', '.join(left)}")
        self._record(cluster_id).transition(AttachmentState.DETACHED, detached_at=now_iso())
        log.info("Detached %s; the Spark cluster at %s keeps running", cluster_id, attachment["master"])

    # -- runs ---------------------------------------------------------------------------------

    def submit_job(
        self,
        cluster_id: str,
        job: InferenceJobConfig,
        idempotency_token: str,
        *,
        time_limit_s: float | None = None,  # no platform-side limit here: see the contract
    ) -> str:
        attachment = self._require_attachment(cluster_id)
        spec = GpuClusterSpec.from_dict(attachment["spec"])
        spark_env = secret_env.unseal(spec.spark_env_vars)
        in_environment = attachment.get("deploy_mode", "client") != "cluster"
        plain, secret = secret_env.plain_and_secret(spark_env)

        def check_usable() -> None:
            if self._require_attachment(cluster_id).get("state") != AttachmentState.ATTACHED:
                raise ClusterError(f"cannot submit through {cluster_id}: it is detached")

        def build(run_id: str, run_dir: Path) -> tuple[list[str], dict[str, str], str]:
            config = job.for_run(
                run_id=run_id, report_path=str(self.report_path(run_id)), workers=spec.num_workers
            )
            application = str(JOB_SCRIPT)
            submit = {
                "application": application,
                "hook": {
                    "conn_id": self.spark_conn_id,
                    "name": run_id,
                    "conf": self._spark_conf(spec, {} if in_environment else plain),
                    "py_files": str(self._spark_jobs_archive()),
                    "application_args": config.to_args(),
                    "status_poll_interval": 2,
                },
            }
            write_json_atomic(run_dir / SUBMIT_FILE, submit)
            self._hand_over_connection(run_dir)
            argv = [sys.executable, "-m", RUNNER_MODULE, "--run-dir", str(run_dir)]
            # The runner imports Airflow (non-secret AIRFLOW__ options pass); the connection reaches
            # it only through the 0600 file above, never through this environment or command.json.
            # spark-submit and a client-mode driver inherit the runner's environment: the spec's
            # spark_env_vars (the secret ones leave command.json out: runs.start) and their names,
            # for the job to hand on to its executors.
            additions = (
                {**spark_env, EXECUTOR_ENV: ",".join(sorted(spark_env))}
                if in_environment and spark_env
                else {}
            )
            return argv, run_environment(additions, airflow_config=True), application

        return self.runs.start(
            cluster_id, idempotency_token, build, check_usable, secret_names=secret if in_environment else ()
        )

    def _spark_conf(self, spec: GpuClusterSpec, executor_env: dict[str, str] | None = None) -> dict[str, str]:
        """Executor memory is the cluster's business (its default, or the spec's ``spark_conf``):
        ``worker_memory`` sizes nodes this backend does not create. ``executor_env``: the
        non-secret ``spark_env_vars`` of a cluster-mode submit (the only way they reach executors
        there); ``spark.redaction.regex`` is extended to every ``spark_env_vars`` setting the job
        may make, unless the spec sets its own."""
        conf = {
            **spec.stage_level_scheduling_conf(with_gpus=self.hook.gpus),
            # One executor per node, all registered before the first task: one Triton server per node.
            "spark.executor.instances": str(spec.num_workers),  # YARN, Kubernetes
            "spark.cores.max": str(spec.num_workers * spec.executor_cores),  # standalone
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "300s",
        }
        if self.hook.python:
            conf["spark.pyspark.python"] = conf["spark.pyspark.driver.python"] = self.hook.python
        for key, value in (executor_env or {}).items():
            conf[f"spark.executorEnv.{key}"] = value
        if spec.spark_env_vars and "spark.redaction.regex" not in spec.spark_conf:
            names = "|".join(re.escape(name) for name in sorted(spec.spark_env_vars))
            conf["spark.redaction.regex"] = rf"{SPARK_DEFAULT_REDACTION}|spark\.executorEnv\.(?:{names})"
        return conf

    def _spark_jobs_archive(self) -> Path:
        """spark_jobs as a zip for ``--py-files``: the cluster runs this version of the job code."""
        import spark_jobs

        source = Path(spark_jobs.__file__).resolve().parent
        files = sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)
        content = hashlib.sha256()
        for path in files:
            content.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
        digest = content.hexdigest()[:12]
        archive = self.home / "artifacts" / f"spark_jobs-{digest}.zip"
        if not archive.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            partial = archive.with_suffix(f".{os.getpid()}.tmp")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in files:
                    zf.write(path, Path("spark_jobs") / path.relative_to(source))
            partial.replace(archive)
        return archive

    def _hand_over_connection(self, run_dir: Path) -> None:
        """The detached runner resolves the connection from this file (mode 0600), not the API server."""
        path = run_dir / CONNECTION_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.hook.connection_fields(), handle)

    def get_run_report(self, run_id: str) -> RunReport:
        try:
            return super().get_run_report(run_id)
        except RunError as exc:
            if self._attachment_report_dir(self.runs.owner_of(run_id)):
                raise RunError(f"{exc} (is the connection's report_dir shared with the driver?)") from exc
            raise

    # -- pre-flight ---------------------------------------------------------------------------

    def describe_table(self, table: str) -> dict[str, Any] | None:
        """delta-rs reads the schema of a table this machine reaches (a shared path or a URI); a path
        that is not here may still be the cluster's, so that is left to the job."""
        return delta_rs_columns(table, must_exist=False)

    def node_file_reader(self, directory: str) -> Callable[[str], bytes | None] | None:
        """A model directory this machine sees too (a shared file system); else the nodes check it."""
        return local_reader(directory) if Path(directory).expanduser().is_dir() else None
