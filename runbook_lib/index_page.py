"""The run's ``index.html``: the run at a glance for an auditor, self-contained (no network needed)."""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:80rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85rem;display:block;max-width:100%;overflow-x:auto}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f3f3f3}
pre{background:#f7f7f7;padding:.75rem;overflow-x:auto;font-size:.8rem}
.passed,.ok{color:#176f2c;font-weight:600}.skipped{color:#8a5a00;font-weight:600}
.failed,.fail{color:#b00020;font-weight:600}
.verdict{font-size:1.1rem;padding:.5rem 1rem;border:2px solid;display:inline-block}
"""


def _table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(rows[0])
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"{escape(str(r.get(c, '')))}\">{escape(_fmt(r.get(c)))}</td>" for c in cols)
        + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _read(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8")) if name.endswith(".json") else path.read_text("utf-8")


_LABEL = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIPPED"}


def headline(statuses: list[str]) -> str:
    """The run in one line; a skipped step is never counted as passed."""
    if any(s not in ("passed", "skipped") for s in statuses):
        return "RUN FAILED"
    skipped = statuses.count("skipped")
    return "ALL STEPS PASSED" if not skipped else f"ALL RUN STEPS PASSED, {skipped} SKIPPED"


def _test_user_and_backup(verdict_rows: list[dict[str, Any]], backup: Mapping[str, Any] | None) -> list[str]:
    test_user = next((v for v in verdict_rows if v["step"] == "test_user"), None)
    return ["<h2>Test-user deletion</h2><p>" + (escape(_LABEL.get(str(test_user.get("status")), (
        "PASS" if test_user["ok"] else "FAIL")) + ": " + test_user["message"]) if test_user
                                                  else "not run in this run") + "</p>",
            "<h2>Backup</h2>" + (_table([{k: backup.get(k) for k in (
                "enabled", "mode", "path", "size", "sha256", "verified", "toc_entries", "pg_dump", "restore_point",
                "lsn", "timeline", "why", "reason")}]) if backup else "<p>no backup step in this run</p>")]


def _erasure(run_dir: Path) -> str:
    """The receipt at a glance, with links to its files (a preview has none: nothing was erased)."""
    data = _read(run_dir, "receipt.json")
    if not data:
        return "<h2>Erasure</h2><p>no receipt: nothing was erased in this run (a preview, or refused)</p>"
    links = ", ".join(f"<a href=\"{n}\">{n}</a>" for n in ("receipt.html", "receipt.md", "receipt.json"))
    orphans = data["orphans"]
    return (f"<h2>Erasure receipt ({links})</h2><p class=\"{'ok' if data['ok'] else 'fail'}\">"
            f"{escape(str(data['proof']['message']))}</p>" + _table(data["tables"], ["table", "deleted", "detached"])
            + f"<p>{escape(str(orphans['rows']))} orphan row(s), "
            f"{'deleted' if orphans['deleted'] else 'reported'}: <a href=\"orphans.csv\">orphans.csv</a>. "
            "The deleted rows' key hashes: <a href=\"deleted_keys.csv.gz\">deleted_keys.csv.gz</a>.</p>")


def build(run_dir: Path, fields: Mapping[str, Any]) -> Path:
    ok = bool(fields.get("ok"))
    server = fields.get("server") or {}
    steps = fields.get("steps") or []
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>cascade runbook run "
             f"{escape(str(fields.get('run_id')))}</title><style>{_STYLE}</style></head><body>",
             f"<h1>cascade runbook: {escape(str(fields.get('kind', 'run')))} {escape(str(fields.get('run_id')))}</h1>",
             f"<p class=\"verdict {'ok' if ok else 'fail'}\">"
             f"{headline([str(s.get('status')) for s in steps]) if ok else 'RUN FAILED'}</p>"]
    operator = fields.get("operator") or {}
    parts.append("<h2>Database and operator</h2>" + _table([{
        "database": server.get("database"), "server version": server.get("server_version"),
        "system identifier": server.get("system_identifier"), "role": server.get("user"),
        "connection": fields.get("connection"), "operator": f"{operator.get('user')}@{operator.get('host')}",
        "started (UTC)": fields.get("started"), "finished (UTC)": fields.get("finished")}]))
    if fields.get("source_run"):
        parts.append(f"<p>Rolls back the run in <code>{escape(str(fields['source_run']))}</code>.</p>")
    parts.append("<h2>Steps</h2>" + _table([{
        "step": s["step"], "status": s["status"], "seconds": s.get("seconds"),
        "notebook": s.get("notebook") or "", "error": s.get("error") or ""} for s in steps]))
    links = [f"<li><a href=\"{escape(s['html'])}\">{escape(s['step'])}: {escape(s['html'])}</a></li>"
             for s in steps if s.get("html")]
    parts.append("<h2>Notebook pages</h2><ul>" + "".join(links) + "</ul>")
    verdicts = sorted((run_dir / "verdicts").glob("*.json")) if (run_dir / "verdicts").exists() else []
    verdict_rows = [json.loads(p.read_text("utf-8")) for p in verdicts]
    parts.append("<h2>Verdicts</h2>" + _table(
        [{"step": v["step"], "status": v.get("status") or ("passed" if v["ok"] else "failed"),
          "message": v["message"]}
         for v in verdict_rows]))
    if str(fields.get("kind", "")).startswith("erase"):
        parts.append(_erasure(run_dir))
    else:
        parts += _test_user_and_backup(verdict_rows, fields.get("backup"))
    parts.append("<h2>Parameters (no secrets are ever parameters)</h2><pre>"
                 + escape(json.dumps(fields.get("parameters"), indent=2, sort_keys=True)) + "</pre>")
    verify = _read(run_dir, "verify.json")
    if verify:
        parts.append("<h2>Constraints before and after</h2>" + _table(verify["rows"]))
    else:
        rolled = _read(run_dir, "rollback_result.json")
        if rolled:
            parts.append("<h2>Restored constraints</h2>" + _table(rolled["rows"]))
    for name, title in (("plan.sql", "Plan SQL"), ("rollback.sql", "Rollback SQL")):
        text = _read(run_dir, name)
        if text:
            parts.append(f"<h2>{title} (<a href=\"{name}\">{name}</a>)</h2><pre>{escape(text)}</pre>")
    parts.append("<h2>Integrity</h2><p>Every file of this folder is listed with its sha256 in "
                 "<a href=\"manifest.json\">manifest.json</a>; <code>runbook verify-evidence "
                 "RUN_DIR</code> checks them.</p></body></html>")
    target = run_dir / "index.html"
    target.write_text("\n".join(parts), encoding="utf-8")
    return target
