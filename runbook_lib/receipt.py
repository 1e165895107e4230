"""The evidence of an erasure: a machine-readable and a human receipt in a private run folder.

Nothing in it is a column value of the erased user: tables hold counts, the deleted rows appear only
as SHA-256 hashes of their keys (one per row in ``deleted_keys.csv.gz``; ``receipt.json`` keeps, per
table, the count and one SHA-256 over the table's sorted key hashes), and the user's own key is
written as it is unless ``erase.hash_keys`` asks for a salted hash (HMAC-SHA-256). The salt is never written: it is ``RUNBOOK_ERASE_SALT`` when the
operator keeps one (then a later lookup of "was user 42 erased?" can recompute the hash), else a random
one that is discarded (the hashes then only tie the receipt's entries together).
"""
from __future__ import annotations

import csv
import getpass
import gzip
import hashlib
import hmac
import io
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import history
from .erase import Erasure, expected_counts
from .erase_plan import ErasePlan, OrphanRow
from .erase_proof import EraseProof
from .evidence import new_run_id, private_dir, write_manifest
from .markup import html_text, md_text
from .model import qualname
from .params import Parameters

SALT_ENV = "RUNBOOK_ERASE_SALT"
RECEIPT = "receipt.json"


class KeyHasher:
    """SHA-256 of a row's key (table + key values); salted (HMAC) when ``salted``."""

    def __init__(self, salted: bool) -> None:
        self.salted = salted
        given = os.environ.get(SALT_ENV, "")
        self.salt = given.encode() if given else secrets.token_bytes(32)
        self.salt_note = ("none: plain SHA-256" if not salted else
                          f"HMAC-SHA-256 with the salt in {SALT_ENV}, kept by the operator, not here" if given
                          else "HMAC-SHA-256 with a random salt that was discarded (not stored anywhere)")

    def __call__(self, table: str, identity: Sequence[str | None]) -> str:
        data = json.dumps([table, list(identity)], separators=(",", ":")).encode()
        if self.salted:
            return hmac.new(self.salt, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()


def _private_write(path: Path, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def new_folder(evidence_dir: str | os.PathLike[str]) -> Path:
    return private_dir(Path(evidence_dir).resolve() / new_run_id("-erase"), exist_ok=False)


def orphans_csv(rows: Iterable[OrphanRow], action: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["table", "key_columns", "key", "values", "referenced_by", "action"])
    for o in rows:
        writer.writerow([qualname(o.table), json.dumps(list(o.columns)), json.dumps(list(o.key)),
                         json.dumps(o.values, sort_keys=True), " ".join(o.referenced_by), action])
    return buf.getvalue()


DELETED_KEYS = "deleted_keys.csv.gz"


def _table_keys(plan: ErasePlan, hasher: KeyHasher) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for table, rows in sorted(plan.preview.deleted.items()):
        name = qualname(table)
        keys[name] = sorted(hasher(name, identity) for identity in rows)
    return keys


def keys_digest(hashes: Sequence[str]) -> str:
    """One SHA-256 over a table's sorted key hashes, one per line: what the receipt keeps per table."""
    return hashlib.sha256("".join(f"{h}\n" for h in sorted(hashes)).encode()).hexdigest()


def deleted_keys_gz(key_hashes: Mapping[str, Sequence[str]]) -> bytes:
    """``table,key_sha256`` per deleted row, gzipped (mtime 0: the same rows give the same bytes)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "key_sha256"])
    for table, hashes in sorted(key_hashes.items()):
        writer.writerows([table, h] for h in sorted(hashes))
    return gzip.compress(buf.getvalue().encode(), mtime=0)


def table_counts(plan: ErasePlan) -> list[dict[str, Any]]:
    """Rows removed and detached per table, as the preview counted them: the receipt's ``tables``."""
    want_del, want_upd = expected_counts(plan.preview)
    return [{"table": t, "deleted": want_del.get(t, 0), "detached": want_upd.get(t, 0)}
            for t in sorted(set(want_del) | set(want_upd))]


def key_digests(key_hashes: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """Per table, the rows deleted and one SHA-256 over their key hashes: the receipt's ``deleted_keys.tables``."""
    return {t: {"rows": len(h), "sha256": keys_digest(h)} for t, h in key_hashes.items()}


class KeyedPlan:
    """An erasure plan with its key hasher chosen before the erasure, so that the hashes the run
    history records in the erasure's own transaction are those the receipt then carries."""

    def __init__(self, plan: ErasePlan, params: Parameters) -> None:
        self.hasher = KeyHasher(bool(params.erase["hash_keys"]))
        self.key_hashes = _table_keys(plan, self.hasher)
        self.hashes = history.receipt_hashes({"tables": table_counts(plan),
                                      "deleted_keys": {"tables": key_digests(self.key_hashes)}})


def receipt_data(erasure: Erasure, proof: EraseProof, params: Parameters, server: Mapping[str, Any],
                 started: float, hasher: KeyHasher, key_hashes: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    preview = erasure.plan.preview
    parent = qualname(preview.parent)
    user_hash = hasher(parent, tuple(preview.user_key.values()))
    return {
        "kind": "erasure",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "operator": getpass.getuser(),
        "database": {k: server.get(k) for k in ("database", "system_identifier", "server_version")},
        "parent": parent,
        "user": {"key_columns": list(preview.user_key),
                 "key": None if params.erase["hash_keys"] else dict(preview.user_key),
                 "key_sha256": user_hash, "hashing": hasher.salt_note},
        "ok": proof.ok,
        "proof": proof.to_dict(),
        "batch_rows": erasure.plan.batch_rows,
        "tables": table_counts(erasure.plan),
        "transactions": [t.to_dict() for t in erasure.transactions],
        "longest_transaction_seconds": erasure.longest,
        "total_seconds": erasure.seconds,
        "orphans": {"mode": params.erase["orphans"], "rows": len(erasure.orphans),
                    "deleted": erasure.orphans_deleted},
        "deleted_keys": {"file": DELETED_KEYS, "hashing": hasher.salt_note,
                         "tables": key_digests(key_hashes)},
    }


def _markdown(data: Mapping[str, Any]) -> str:
    user = data["user"]
    who = (", ".join(f"{md_text(k)} = {md_text(v)}" for k, v in user["key"].items()) if user["key"]
           else f"key hash {md_text(user['key_sha256'])}")
    lines = [
        "# Erasure receipt", "",
        f"- **Result:** {'erased, proof passed' if data['ok'] else 'NOT COMPLETE, proof failed'}",
        f"- **Account:** {md_text(data['parent'])} ({who})",
        f"- **When:** {md_text(data['started'])} to {md_text(data['finished'])} (UTC)",
        f"- **By:** {md_text(data['operator'])}",
        f"- **Database:** {md_text(data['database'].get('database'))} (system identifier "
        f"{md_text(data['database'].get('system_identifier'))}, PostgreSQL "
        f"{md_text(data['database'].get('server_version'))})",
        f"- **Transactions:** {len(data['transactions'])}, the longest "
        f"{md_text(data['longest_transaction_seconds'])} s",
        f"- **Orphans:** {md_text(data['orphans']['rows'])} row(s), "
        f"{'deleted' if data['orphans']['deleted'] else 'listed in orphans.csv'}",
        f"- **Proof:** {md_text(data['proof']['message'])}", "",
        "| table | rows removed | rows detached |", "|---|---:|---:|",
    ]
    lines += [f"| {md_text(t['table'])} | {t['deleted']} | {t['detached']} |" for t in data["tables"]]
    lines += ["", f"Deleted rows appear only as SHA-256 hashes of their keys, in {DELETED_KEYS} "
              f"({md_text(user['hashing'])}).", ""]
    return "\n".join(lines)


def _html(data: Mapping[str, Any]) -> str:
    e = html_text
    rows = "".join(f"<tr><td>{e(str(t['table']))}</td><td>{t['deleted']}</td><td>{t['detached']}</td></tr>"
                   for t in data["tables"])
    user = data["user"]
    who = (", ".join(f"{e(str(k))} = {e(str(v))}" for k, v in user["key"].items()) if user["key"]
           else f"key hash {e(str(user['key_sha256']))}")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Erasure receipt</title></head><body>"
            f"<h1>Erasure receipt</h1><p><b>{'Erased, proof passed' if data['ok'] else 'NOT COMPLETE'}</b></p>"
            f"<p>Account {e(str(data['parent']))} ({who}); {e(str(data['started']))} to "
            f"{e(str(data['finished']))} UTC; by {e(str(data['operator']))}; database "
            f"{e(str(data['database'].get('database')))}.</p><p>{e(str(data['proof']['message']))}</p>"
            "<table><tr><th>table</th><th>rows removed</th><th>rows detached</th></tr>" + rows
            + "</table></body></html>\n")


def write(folder: Path, erasure: Erasure, proof: EraseProof, params: Parameters, server: Mapping[str, Any],
          started: float, keyed: KeyedPlan | None = None) -> dict[str, Any]:
    """receipt.json, receipt.md, receipt.html, orphans.csv and deleted_keys.csv.gz into ``folder`` (0600)."""
    keyed = keyed or KeyedPlan(erasure.plan, params)
    data = receipt_data(erasure, proof, params, server, started, keyed.hasher, keyed.key_hashes)
    action = "deleted" if erasure.orphans_deleted else "reported"
    _private_write(folder / RECEIPT, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    _private_write(folder / "receipt.md", _markdown(data))
    _private_write(folder / "receipt.html", _html(data))
    _private_write(folder / "orphans.csv", orphans_csv(erasure.orphans, action))
    _private_write(folder / DELETED_KEYS, deleted_keys_gz(keyed.key_hashes))
    return data


def write_sealed(folder: Path, erasure: Erasure, proof: EraseProof, params: Parameters,
                 server: Mapping[str, Any], started: float, keyed: KeyedPlan | None = None) -> dict[str, Any]:
    """The receipt's files and their manifest in ``folder`` (from ``new_folder``: an erasure run outside
    the notebook; ``runbook erase`` writes the receipt into the notebook's run folder instead)."""
    data = write(folder, erasure, proof, params, server, started, keyed)
    return write_manifest(folder, {"kind": "erasure", "run_id": folder.name, "ok": proof.ok,
                                   "started": data["started"], "finished": data["finished"], "server": dict(server)})
