"""Which operator settings came from the trigger, found by rendering them twice; refused unless allowed.

Airflow renders an operator's templated fields with the run's context, in which ``params`` holds the
DAG's param defaults updated by the run's conf (``dag_run.conf``, what whoever triggered the run
typed). Whether a rendered value came from that conf cannot be read off the value, so the guarded
fields are rendered a second time as the DAG author wrote them: the same templates, the same context,
but with the DAG's own param defaults and an empty conf. Where the two renderings differ, the trigger
set the value, and :class:`~airflow_spark_triton.trigger_policy.TriggerPolicy` decides; where they
agree, the value is the DAG author's (code, defaults, XCom, Variables) and is never restricted.

The DAG's param defaults are read when the operator is created, while the DAG file is parsed:
Airflow resolves the run's conf *into* the DAG's ``Param`` objects when it builds the task's
context, so by rendering time they hold the conf's values. An operator created outside its DAG's
``with`` block (and attached later) has no such record: with a conf, each of its guarded settings
must then be allowed, whoever set it.

The check runs at the end of rendering, the first thing Airflow does with a task, so a refusal
fails the task before any model module is imported, init script read, cluster created or request
sent; it raises ``AirflowFailException`` (a retry could not change the outcome). A run with an empty
conf renders once, as before.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk.exceptions import AirflowFailException

from airflow_spark_triton.settings import coerce_mapping
from airflow_spark_triton.trigger_policy import Refusal, TriggerPolicy, changed_keys

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

FieldKind = Literal["model", "conn_id", "model_options", "cluster_spec"]


class TriggerParamError(AirflowFailException):
    """A run's conf set an operator setting that the deployment's ``[spark_triton]`` allow-lists refuse."""


class _NotRendered:
    """The DAG author's rendering failed (e.g. ``dag_run.conf['x']`` without a default): the value
    is the trigger's."""

    def __repr__(self) -> str:
        return "<not renderable without the run's conf>"


NOT_RENDERED = _NotRendered()


class _DagRunWithoutConf:
    """The run as templates see it, but with an empty ``conf``."""

    conf: ClassVar[dict[str, Any]] = {}

    def __init__(self, dag_run: Any) -> None:
        self._dag_run = dag_run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dag_run, name)


class TriggerParamsGuard:
    """Mixin for operators: ``trigger_checked_fields`` maps each guarded field to its kind of check."""

    trigger_checked_fields: ClassVar[Mapping[str, FieldKind]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The params as the DAG file declares them (the DAG's defaults merged with the task's).
        self._authored_params = _snapshot(self.params) if self.has_dag() else None  # type: ignore[attr-defined]

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        templates = {name: _snapshot(getattr(self, name)) for name in self.trigger_checked_fields}
        super().render_template_fields(context, jinja_env)  # type: ignore[misc]
        rendered = {name: getattr(self, name) for name in self.trigger_checked_fields}
        self.check_trigger_params(context, templates, rendered, jinja_env)

    def check_trigger_params(
        self,
        context: Context,
        templates: Mapping[str, Any],
        rendered: Mapping[str, Any],
        jinja_env: jinja2.Environment | None = None,
    ) -> None:
        """Raise :class:`TriggerParamError` for each guarded field whose ``rendered`` value (this run's)
        differs from its ``templates`` rendered as the DAG author wrote them and is not allowed.

        Rendering calls it; so does whatever renders this task's fields in another task's context
        first (the create task's pre-flight of its inference tasks), before it acts on them.
        """
        conf = _run_conf(context)
        if not conf:
            return
        jinja_env = jinja_env or self.get_template_env()  # type: ignore[attr-defined]
        refusals: list[tuple[Refusal, list[str]]] = []
        policy = TriggerPolicy.from_airflow_config()
        for name, kind in self.trigger_checked_fields.items():
            authored = self._render_as(templates[name], context, {}, jinja_env)
            for refusal in _refusals(policy, kind, name, rendered[name], authored):
                # Which conf keys change this value on their own: what the message tells to drop.
                keys = [
                    key
                    for key in conf
                    if _at(
                        self._render_as(templates[name], context, {key: conf[key]}, jinja_env), refusal.path
                    )
                    != _at(authored, refusal.path)
                ]
                refusals.append((refusal, keys))
        if refusals:
            raise TriggerParamError(_message(getattr(self, "task_id", "?"), refusals))

    def _render_as(
        self, template: Any, context: Context, conf: Mapping[str, Any], jinja_env: jinja2.Environment
    ) -> Any:
        """``template`` rendered as for a run whose conf is ``conf`` ({}: as the DAG author wrote it)."""
        if self._authored_params is None:
            return NOT_RENDERED
        params = _snapshot(self._authored_params)
        dag_run = _DagRunWithoutConf(context.get("dag_run"))
        try:
            if conf:  # only to find which conf keys set a refused value
                params.update(dict(conf))
                dag_run.conf = dict(conf)  # type: ignore[misc]
            run_context = {**context, "params": params.validate(), "dag_run": dag_run}
            return self.render_template(_snapshot(template), run_context, jinja_env)  # type: ignore[attr-defined]
        except Exception:
            return NOT_RENDERED


def _refusals(policy: TriggerPolicy, kind: FieldKind, name: str, value: Any, authored: Any) -> list[Refusal]:
    """What the policy refuses of ``value``, where it differs from the DAG author's ``authored``."""
    if kind in ("model", "conn_id"):
        if value == authored or value in (None, ""):
            return []
        check = policy.check_model if kind == "model" else policy.check_conn_id
        return check(f"'{name}'", value)
    values = _as_mapping(name, value)
    authored_values = {} if authored is NOT_RENDERED else _as_mapping(name, authored)
    if kind == "model_options":
        return policy.check_model_options(f"'{name}'", changed_keys(values, authored_values), values)
    return policy.check_cluster_spec(f"'{name}'", values, authored_values)


def _as_mapping(name: str, value: Any) -> dict[str, Any]:
    """A dict setting as rendered (a dict, or its text without native rendering); what is no dict
    fails later with the operator's own message, and counts as wholly changed here."""
    try:
        return coerce_mapping(name, value)
    except ValueError:
        return {"<unparsed>": value}


def _message(task_id: str, refusals: list[tuple[Refusal, list[str]]]) -> str:
    lines = "\n".join(
        f"  - {refusal.describe()}; set by trigger param(s): {', '.join(keys) or 'unknown'}"
        for refusal, keys in refusals
    )
    params = sorted({key for _, keys in refusals for key in keys})
    return (
        f"Task {task_id!r} refused settings that this run's conf changed from what the DAG sets "
        f"(trigger params: {', '.join(params) or 'unknown'}), because a trigger param may not choose "
        f"code:\n{lines}\n"
        "Nothing was imported, read, created or sent. Trigger the run without those params (the DAG's "
        "defaults are always allowed), or have a deployment admin add them to the [spark_triton] "
        "options named above (docs/deploying.md, 'Trigger params')."
    )


def _at(value: Any, path: tuple[str, ...]) -> Any:
    """The part of a rendered field at ``path`` (dict keys); rendered text is parsed first."""
    for key in path:
        if value is NOT_RENDERED:
            return value
        mapping = _as_mapping("", value)
        value = mapping.get(key, NOT_RENDERED)
    return value


def _run_conf(context: Context) -> Mapping[str, Any]:
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None)
    return conf if isinstance(conf, Mapping) else {}


def _snapshot(value: Any) -> Any:
    """A copy of a field before rendering (rendering may replace nested values in place)."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return value
