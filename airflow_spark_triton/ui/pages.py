"""The run pages as HTML: self-contained (inline CSS, one small script, an SVG chart), no CDN, no
external request. Every value from a run, a report or a log is escaped; the page's data reaches its
script as JSON in a ``<script type="application/json">`` element, never as code.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from airflow_spark_triton.ui import urls
from airflow_spark_triton.ui.run_data import RunView
from spark_jobs.progress import Code, Section, summary_sections

POLL_MS = 2000
NONE = "\u2013"  # an en dash: no value (yet)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a202c;background:#f7f8fa}
main{max-width:1080px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 8px;color:#2d3748}
.sub{color:#4a5568;margin-bottom:10px}.sub code{font-size:12px}
nav a{margin-right:14px}a{color:#2b6cb0}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;font-size:12px;background:#e2e8f0}
.badge.SUCCESS{background:#c6f6d5;color:#22543d}.badge.FAILED,.badge.CANCELED{background:#fed7d7;color:#742a2a}
.badge.RUNNING,.badge.PENDING{background:#bee3f8;color:#2a4365}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:14px 16px;margin:12px 0}
.bar{height:18px;background:#edf2f7;border-radius:9px;overflow:hidden}
.bar>div{height:100%;background:#3182ce;transition:width .6s}
.bar.done>div{background:#38a169}
.tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{flex:1;min-width:140px}
.tile .n{font-size:24px;font-weight:600}.tile .l{color:#4a5568;font-size:12px;text-transform:uppercase}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #edf2f7;vertical-align:top}
th{font-size:12px;color:#4a5568;text-transform:uppercase}
pre{background:#1a202c;color:#e2e8f0;padding:12px;border-radius:6px;overflow:auto;font-size:12px;max-height:70vh}
.note{background:#fffbea;border:1px solid #f6e05e;border-radius:8px;padding:10px 14px;margin:12px 0}
.error{background:#fff5f5;border-color:#feb2b2}
svg text{font-size:12px;fill:#4a5568}small{font-weight:400;color:#718096}
"""

# Updates the progress bar, the counts and the chart from progress.json while the run goes on;
# reloads once when it ends, so the page shows the final report.
SCRIPT = """
(function(){
  var data=JSON.parse(document.getElementById('run-data').textContent);
  function fmt(n){return n===null||n===undefined?'\\u2013':Number(n).toLocaleString('en-US');}
  function set(id,v){var e=document.getElementById(id);if(e)e.textContent=v;}
  function chart(history){
    var svg=document.getElementById('chart');if(!svg)return;
    var W=1000,H=180,L=56,B=22,K=3,pts=[];
    for(var i=1;i<history.length;i++){var j=Math.max(0,i-K),dt=history[i][0]-history[j][0];
      if(dt>0)pts.push([history[i][0],(history[i][1]-history[j][1])/dt]);}
    while(svg.firstChild)svg.removeChild(svg.firstChild);
    var ns='http://www.w3.org/2000/svg';
    function el(n,a,t){var e=document.createElementNS(ns,n);for(var k in a)e.setAttribute(k,a[k]);
      if(t!==undefined)e.textContent=t;svg.appendChild(e);return e;}
    el('line',{x1:L,y1:H-B,x2:W,y2:H-B,stroke:'#a0aec0'});el('line',{x1:L,y1:4,x2:L,y2:H-B,stroke:'#a0aec0'});
    if(!pts.length){el('text',{x:L+10,y:H/2},'no rows scored yet');return;}
    var t0=history[0][0],t1=pts[pts.length-1][0],top=0;
    pts.forEach(function(p){top=Math.max(top,p[1]);});top=top>0?top*1.1:1;
    function x(t){return L+(W-L-6)*(t1>t0?(t-t0)/(t1-t0):1);}function y(r){return H-B-(H-B-8)*r/top;}
    var d=[[x(t0),y(0)]].concat(pts.map(function(p){return [x(p[0]),y(p[1])];}));
    el('polyline',{points:d.map(function(p){return p[0].toFixed(1)+','+p[1].toFixed(1);}).join(' '),
      fill:'none',stroke:'#3182ce','stroke-width':2});
    el('text',{x:2,y:14},(top<10?top.toFixed(1):Math.round(top))+' rows/s');el('text',{x:2,y:H-B},'0');
    el('text',{x:L,y:H-4},Math.round(t0)+' s');el('text',{x:W-50,y:H-4},Math.round(t1)+' s');
  }
  function render(d){
    var total=d.rows_total,done=d.rows_scored||0,pct=total?Math.min(100,100*done/total):(d.finished?100:0);
    var bar=document.getElementById('bar');
    if(bar){bar.firstElementChild.style.width=pct.toFixed(1)+'%';bar.className='bar'+(d.finished?' done':'');}
    set('progress-value',pct.toFixed(0));
    set('progress-text',fmt(done)+' / '+fmt(total)+' rows scored');
    set('count-read',fmt(d.rows_read));set('count-scored',fmt(d.rows_scored));
    set('count-rejected',fmt(d.rows_rejected));set('rows-per-s',d.rows_per_s?d.rows_per_s+' rows/s':'\\u2013');
    set('phase',d.phase||'\\u2013');set('state',d.state||'not submitted');
    var badge=document.getElementById('state');if(badge)badge.className='badge '+(d.state||'');
    chart(d.history||[]);
  }
  render(data);
  if(!data.live)return;
  var url=document.getElementById('run-data').getAttribute('data-poll');
  function poll(){fetch(url,{credentials:'same-origin',cache:'no-store'}).then(function(r){
      if(!r.ok)throw new Error(r.status);return r.json();}).then(function(d){
      if(d.sections!==data.sections){location.reload();return;}
      render(d);setTimeout(poll,POLL);}).catch(function(){setTimeout(poll,POLL*2);});}
  setTimeout(poll,POLL);
})();
""".replace("POLL", str(POLL_MS))


def _number(value: Any) -> str:
    """``1,234``, as the page's script writes numbers (``toLocaleString('en-US')``); a dash for none."""
    return NONE if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _cell(cell: Any) -> str:
    parts = cell if isinstance(cell, tuple) else (cell,)
    return "".join(f"<code>{esc(p)}</code>" if isinstance(p, Code) else esc(p) for p in parts)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], testid: str = "") -> str:
    attr = f' data-testid="{esc(testid)}"' if testid else ""
    header = tuple(header)
    head = f"<thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{attr}>{head}<tbody>{body}</tbody></table>"


def _sections(sections: list[Section]) -> str:
    out = []
    for section in sections:
        if section.title:
            out.append(f"<h2>{esc(section.title)}</h2>")
        if section.text is not None:
            out.append(f"<pre>{esc(section.text)}</pre>")
        else:
            out.append(_table(section.header, section.rows))
    return "".join(out)


def _page(title: str, body: str, refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>"
    )


class PageLinks:
    """The URLs of one task instance's pages (relative to the plugin's mount) and of the task in the UI."""

    def __init__(self, view: RunView, root: str) -> None:
        ti = view.ti
        self.query = urls.ti_query(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        self.root = root.rstrip("/")
        task = (
            f"{self.root}/dags/{quote(ti.dag_id)}/runs/{quote(ti.run_id, safe='')}/tasks/{quote(ti.task_id)}"
        )
        self.task = task + (f"/mapped/{ti.map_index}" if ti.map_index >= 0 else "")

    def __call__(self, page: str) -> str:
        return f"{self.root}{urls.PLUGIN_PREFIX}/{page}?{self.query}"


def _header(view: RunView, links: PageLinks, current: str) -> str:
    ti = view.ti
    mapped = f" [{ti.map_index}]" if ti.map_index >= 0 else ""
    nav = [
        (urls.RUN_PAGE, "Run"),
        (urls.REPORT_PAGE, "Report"),
        (urls.REPORT_JSON, "Report JSON"),
    ]
    if view.driver_log is not None:
        nav += [(urls.DRIVER_LOG_PAGE, "Driver log"), (urls.DRIVER_LOG_DOWNLOAD, "Download driver log")]
    items = [
        f'<a href="{esc(links(page))}"{" aria-current=page" if page == current else ""}>{label}</a>'
        for page, label in nav
    ]
    if view.platform_url:
        items.append(
            f'<a href="{esc(view.platform_url)}" target="_blank" rel="noopener">Run page in {esc(view.backend)}</a>'
        )
        if view.driver_log is None:
            items.append(
                f'<a href="{esc(view.platform_url)}" target="_blank" rel="noopener">Driver logs (workspace)</a>'
            )
    items.append(f'<a href="{esc(links.task)}">Task in Airflow</a>')
    run = f" · run <code>{esc(view.run_id)}</code> ({esc(view.backend)})" if view.run_id else ""
    return (
        f"<h1>Inference run <span id=state class='badge {esc(view.state)}'>"
        f"{esc(view.state or 'not submitted')}</span></h1>"
        f"<div class=sub><code>{esc(ti.dag_id)}</code> / <code>{esc(ti.task_id)}{mapped}</code> · DAG run "
        f"<code>{esc(ti.run_id)}</code> · try {view.try_number} ({esc(view.ti_state)}){run}</div>"
        f"<nav>{''.join(items)}</nav>"
    )


def _notes(view: RunView) -> str:
    out = []
    if view.run_id is None:
        out.append(
            "No inference run has been submitted by this try of the task yet"
            + (" (the task is not running)." if not view.live else "; this page updates when it is.")
        )
    if view.note:
        out.append(view.note)
    if view.report is not None and view.report.dry_run:
        out.append(
            "A dry run: nothing written to the output or rejects table (the task ends skipped); "
            "the samples below are rows it scored."
        )
    if view.message and view.state in ("FAILED", "CANCELED"):
        out.append(f"{view.state}: {view.message}")
    return "".join(
        f"<div class='note{' error' if view.state in ('FAILED', 'CANCELED') else ''}'>{esc(n)}</div>"
        for n in out
    )


def _data_script(view: RunView, links: PageLinks) -> str:
    data = json.dumps(view.to_json()).replace("<", "\\u003c")
    return (
        f'<script id="run-data" type="application/json" data-poll="{esc(links(urls.PROGRESS_JSON))}">'
        f"{data}</script><script>{SCRIPT}</script>"
    )


def _servers(view: RunView) -> str:
    report = view.report_so_far()
    servers = report.servers if report is not None else []
    if not servers:
        return "<p>No Triton server started yet.</p>" if not view.finished else "<p>No Triton server ran.</p>"
    stopped = {(s.get("host"), s.get("pid")): s for s in report.servers_stopped}
    rows = []
    for server in servers:
        end = stopped.get((server.get("host"), server.get("pid")))
        if end is not None and end.get("running"):
            state = "still running after stop"
        elif end is not None or view.finished:
            state = "stopped"
        else:
            state = "serving"
        port = server.get("http_port") or server.get("grpc_port")
        rows.append((server.get("host"), server.get("pid"), port, state))
    return _table(("host", "pid", "port", "state"), rows, "servers")


def _rejects(view: RunView) -> str:
    report = view.report_so_far()
    if report is None or not view.validated():
        return "<p>Known once the date is read and validated.</p>"
    if not report.reject_reasons:
        return "<p>No row rejected.</p>"
    samples = report.reject_samples
    rows = [(r, n, ", ".join(map(str, samples.get(r, ())))) for r, n in sorted(report.reject_reasons.items())]
    return _table(("reason", "rows", "sample keys"), rows, "rejects")


def _tables(view: RunView) -> str:
    report = view.report_so_far()
    if report is None:
        return "<p>Not known yet.</p>"
    rows = [
        (label, Code(table), NONE if version is None else f"v{version}")
        for label, table, version in (
            ("input", report.input_table, report.input_version),
            ("output", report.output_table, report.output_version),
            ("rejects", report.rejects_table, report.rejects_version),
        )
        if table
    ]
    return _table(("table", "path", "Delta version"), rows, "tables")


def run_page(view: RunView, root: str) -> str:
    """Live progress (bar, counts, rows/s chart), servers, rejects, tables, and the report when done."""
    links = PageLinks(view, root)
    counts, percent = view.counts(), view.percent()
    rate = f"{counts['rows_per_s']} rows/s" if counts["rows_per_s"] else NONE
    scored = f"{_number(counts['rows_scored'] or 0)} / {_number(counts['rows_total'])} rows scored"
    body = [
        _header(view, links, urls.RUN_PAGE),
        _notes(view),
        # Rendered here with the values the script then keeps current: no moment shows a stale 0.
        "<div class=card><div style='display:flex;justify-content:space-between'>"
        f"<b id=progress-text>{esc(scored)}</b><span><span id=progress-value data-testid=progress-value>"
        f"{percent:.0f}</span>% · <span id=rows-per-s>{esc(rate)}</span> · phase "
        f"<span id=phase>{esc(counts['phase'] or NONE)}</span></span></div>"
        f"<div id=bar class='bar{' done' if view.finished else ''}'><div style='width:{percent:.1f}%'></div></div></div>",
        "<div class=tiles>"
        + "".join(
            f"<div class='card tile'><div class=n id=count-{key} data-testid=count-{key}>"
            f"{esc(_number(counts.get('rows_' + key)))}</div><div class=l>rows {key}</div></div>"
            for key in ("read", "scored", "rejected")
        )
        + "</div>",
        "<h2>Rows/s over time <small>(over the last 3 samples, since the date was read)</small></h2>"
        "<div class=card><svg id=chart viewBox='0 0 1000 180' width='100%' role=img "
        "aria-label='rows per second over time'></svg></div>",
        "<h2>Triton servers</h2>",
        _servers(view),
        "<h2>Reject reasons</h2>",
        _rejects(view),
        "<h2>Tables</h2>",
        _tables(view),
    ]
    if view.report is not None:  # what the sections above do not show: the error, the timings
        shown = (None, "Reject reasons")
        body.append(_sections([s for s in summary_sections(view.report) if s.title not in shown]))
    body.append(_data_script(view, links))
    return _page(f"Inference run · {view.ti.dag_id}.{view.ti.task_id}", "".join(body))


def report_page(view: RunView, root: str) -> str:
    """The run report, rendered from the same sections as ``report.md``; until it exists, says so."""
    links = PageLinks(view, root)
    body = [_header(view, links, urls.REPORT_PAGE), _notes(view)]
    if view.report is not None:
        body.append(f"<h2>Run report <code>{esc(view.report.run_id)}</code></h2>")
        body.append(_sections(summary_sections(view.report)))
    elif view.run_id:
        counts = view.counts()
        body.append(
            "<div class=note>The report is written when the run ends"
            f" (run {esc(view.state or 'PENDING')}; {esc(counts['rows_scored'] or 0)} of "
            f"{esc(counts['rows_total'] if counts['rows_total'] is not None else '?')} rows scored so far)."
            f" Live progress: <a href='{esc(links(urls.RUN_PAGE))}'>the run page</a>.</div>"
        )
    return _page(f"Run report · {view.ti.dag_id}.{view.ti.task_id}", "".join(body), 5 if view.live else None)


def driver_log_page(view: RunView, root: str, tail: str, lines: int) -> str:
    links = PageLinks(view, root)
    body = [_header(view, links, urls.DRIVER_LOG_PAGE), _notes(view)]
    if view.driver_log is None:
        where = "in the workspace (link above)" if view.platform_url else "not written yet"
        body.append(f"<div class=note>The driver log is {where}.</div>")
    else:
        body.append(
            f"<h2>Driver log: last {lines} lines</h2><pre data-testid=driver-log>{esc(tail)}</pre>"
            f"<p><a href='{esc(links(urls.DRIVER_LOG_DOWNLOAD))}'>Download the whole log</a></p>"
        )
    return _page(f"Driver log · {view.ti.dag_id}.{view.ti.task_id}", "".join(body), 5 if view.live else None)


def message_page(title: str, message: str) -> str:
    """A page for a refused or unknown request: what and why, never a stack."""
    return _page(title, f"<h1>{esc(title)}</h1><div class='note error'>{esc(message)}</div>")
