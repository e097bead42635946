"""How big a run report may get: it travels as a file, the task's XCom and the run page's data.

Everything in a report grows with something: reject reasons and their sample keys with the input's
problems, warnings and the error with what went wrong, the server lists with the cluster, a dry
run's samples with the model's outputs. :func:`bound_report` caps each (the constants below) and
then the whole JSON at :data:`MAX_REPORT_BYTES`; the job applies it before it writes the report and
the operator again before the XCom (a report written by another version of the job). What it cut
is said in one of the report's ``warnings``, so a bounded report never looks complete when it is
not. The rejects table keeps every row's reason and detail: only the report aggregates.

Plain Python, no Spark: the Airflow side imports it with the rest of the contract.
"""

from __future__ import annotations

import json
from typing import Any

from spark_jobs.contract.report import RunReport

#: The largest report (its JSON, UTF-8) the job writes and the operator pushes to XCom.
MAX_REPORT_BYTES = 64 * 1024
#: Reject reasons listed with their counts; the rest are summed under :data:`OTHER_REASONS`.
MAX_REJECT_REASONS = 50
OTHER_REASONS = "other reasons"
#: Sample keys per reject reason (the smallest keys, as text), and the characters kept of each.
REJECT_SAMPLE_KEYS = 5
MAX_KEY_CHARS = 64
MAX_REASON_CHARS = 200
MAX_WARNINGS = 10
MAX_WARNING_CHARS = 500
MAX_ERROR_CHARS = 4000
#: A dry run's sample rows in the report, and the characters of each value's JSON kept.
MAX_SAMPLE_ROWS = 10
MAX_SAMPLE_VALUE_CHARS = 200
#: Servers listed per list (``servers``, ``servers_stopped``) when the report is still too big.
MAX_SERVERS_LISTED = 20
#: How the warning that says what was left out starts.
BOUNDED = f"report bounded to {MAX_REPORT_BYTES} bytes: left out "


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def sample_value(value: Any) -> Any:
    """A value as a sample shows it: itself when its JSON is short, else that JSON shortened (a
    384-float embedding becomes its first numbers and an ellipsis); text is shortened as text."""
    if isinstance(value, str):
        return shorten(value, MAX_SAMPLE_VALUE_CHARS)
    text = json.dumps(value, default=str)
    return value if len(text) <= MAX_SAMPLE_VALUE_CHARS else shorten(text, MAX_SAMPLE_VALUE_CHARS)


def report_size(report: RunReport) -> int:
    return len(report.to_json().encode())


def bound_report(report: RunReport) -> RunReport:
    """Cap ``report`` in place (see the module's docstring) and return it; a warning says what was cut.

    Each part is capped first; while the whole is still over :data:`MAX_REPORT_BYTES`, the least
    needed parts go, in this order: servers beyond the first few, keys of a newer contract, the dry
    run's samples, the reject sample keys, reject reasons beyond the ten most frequent.
    """
    # What an earlier bounding (the job's, when the operator bounds again) left out, said once.
    cut = [w.removeprefix(BOUNDED) for w in report.warnings if w.startswith(BOUNDED)]
    report.warnings = [w for w in report.warnings if not w.startswith(BOUNDED)]
    if report.error and len(report.error) > MAX_ERROR_CHARS:
        report.error = shorten(report.error, MAX_ERROR_CHARS)
        cut.append("the end of the error")
    _bound_rejects(report, MAX_REJECT_REASONS, cut)
    if len(report.samples) > MAX_SAMPLE_ROWS:
        cut.append(f"{len(report.samples) - MAX_SAMPLE_ROWS} sample rows")
    report.samples = [
        {str(k): sample_value(v) for k, v in row.items()} for row in report.samples[:MAX_SAMPLE_ROWS]
    ]
    if len(report.warnings) > MAX_WARNINGS - 1:
        cut.append(f"{len(report.warnings) - (MAX_WARNINGS - 1)} warnings")
    report.warnings = [shorten(str(w), MAX_WARNING_CHARS) for w in report.warnings[: MAX_WARNINGS - 1]]
    for reduce in (_fewer_servers, _no_extra, _no_samples, _no_reject_samples, _fewer_reasons):
        if report_size(report) <= MAX_REPORT_BYTES:
            break
        reduce(report, cut)
    if cut:
        report.warnings.append(BOUNDED + ", ".join(cut))
    return report


def _fewer_servers(report: RunReport, cut: list[str]) -> None:
    for name in ("servers", "servers_stopped"):
        listed = getattr(report, name)
        if len(listed) > MAX_SERVERS_LISTED:
            cut.append(f"{len(listed) - MAX_SERVERS_LISTED} of {len(listed)} {name}")
            setattr(report, name, listed[:MAX_SERVERS_LISTED])


def _no_extra(report: RunReport, cut: list[str]) -> None:
    if report.extra:
        cut.append(f"keys of a newer contract ({', '.join(sorted(report.extra))})")
        report.extra = {}


def _no_samples(report: RunReport, cut: list[str]) -> None:
    if report.samples:
        cut.append("the samples")
        report.samples = []


def _no_reject_samples(report: RunReport, cut: list[str]) -> None:
    if report.reject_samples:
        cut.append("the reject sample keys")
        report.reject_samples = {}


def _fewer_reasons(report: RunReport, cut: list[str]) -> None:
    _bound_rejects(report, 10, cut)


def _bound_rejects(report: RunReport, most: int, cut: list[str]) -> None:
    """The ``most`` most frequent reasons with their counts and sample keys; the rest summed as one."""
    counts: dict[str, int] = {}
    samples: dict[str, list[str]] = {}
    for reason, count in report.reject_reasons.items():
        short = shorten(str(reason), MAX_REASON_CHARS)
        counts[short] = counts.get(short, 0) + int(count)
        keys = samples.setdefault(short, [])
        keys += [shorten(str(k), MAX_KEY_CHARS) for k in report.reject_samples.get(reason, ())]
    other = counts.pop(OTHER_REASONS, 0)  # summed by an earlier bounding (or the job) already
    ranked = sorted(counts, key=lambda r: (-counts[r], r))
    kept, rest = ranked[:most], ranked[most:]
    if rest:
        cut.append(f"{len(rest)} reject reasons (counted under {OTHER_REASONS!r})")
    report.reject_reasons = {reason: counts[reason] for reason in kept}
    if rest or other:
        report.reject_reasons[OTHER_REASONS] = other + sum(counts[r] for r in rest)
    report.reject_samples = {
        reason: sorted(set(samples[reason]))[:REJECT_SAMPLE_KEYS] for reason in kept if samples[reason]
    }
