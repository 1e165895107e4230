"""Write the step notebooks' sources (cells without outputs) into notebooks/.

The notebooks are narrative plus library calls; keeping their text here keeps the shared parameter
and set-up cells identical in every step. Stored outputs come from ``scripts/regenerate_outputs.sh``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook_lib import paramdocs  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "notebooks"
DEFAULTS_YAML = OUT.parent / "parameters" / "defaults.yaml"

PARAMETERS = paramdocs.parameters_cell()

SETUP = '''import pandas as pd
from IPython.display import Markdown, display

from runbook_lib import collateral, deletion, graph, report, steps
from runbook_lib.markup import md_bold, md_text
from runbook_lib.context import RunContext

pd.set_option("display.max_colwidth", None)
pd.set_option("display.max_rows", None)
pd.set_option("display.max_columns", None)
pd.set_option("display.expand_frame_repr", False)
''' + paramdocs.context_call() + '''
display(Markdown(f"Parent table {md_bold(parent_schema + '.' + parent_table)}, dry run: **{ctx.params.dry_run}**"))
print(f"run folder: {ctx.run_dir.name}")'''


def notebook(title: str, intro: str, cells: list[tuple[str, str]], extra_parameters: str = "") -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = new_code_cell(PARAMETERS + extra_parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {title}\n\n{intro}"), params, new_code_cell(SETUP)]
    for kind, text in cells:
        nb.cells.append(new_markdown_cell(text) if kind == "md" else new_code_cell(text))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {
    "00_preflight": notebook(
        "Preflight",
        "Before anything is changed: which server and database this is, whether the connected role may alter "
        "every table the plan touches, whether long transactions or locks are in the way (each change waits "
        "at most `lock_timeout`), the database's size and what a full dump would cost, which backup mode "
        "fits (a restore point only with healthy WAL archiving), whether `pg_dump` can dump this server and "
        "the disk has room for it, and "
        "whether another run of this runbook is already changing the database. Nothing here changes the "
        "database.",
        [
            ("code", "result = steps.preflight(ctx)\nresult.frame()"),
            ("md", "## Verdict\nAny `fail` above stops the run here; `warn` lines are for the DBA to judge."),
            ("code", 'print(ctx.verdict("preflight", result.ok, "all checks passed" if result.ok else\n'
                     '                  "; ".join(f"{c.check}: {c.detail}" for c in result.failures)))'),
        ]),
    "01_backup": notebook(
        "Backup",
        "The backup of `backup.mode`: `full` is a `pg_dump -Fc` of the whole database, `schema` a "
        "`pg_dump --schema-only -Fc` (every definition this runbook changes, in seconds whatever the data "
        "size); each is proven readable with `pg_restore --list`, and its size and sha256 go into the "
        "evidence. `restore_point` names a WAL restore point (only with healthy WAL archiving) and waits "
        "until the WAL file holding it is archived; its name, LSN and timeline go into the evidence. Dumps "
        "are private (0600 files in a 0700 folder). The apply step refuses to run without a verified backup "
        "of that mode from this same run, unless the parameters turn backup off (which the evidence records).",
        [
            ("code", "record = steps.backup(ctx, progress=print)  # a long dump reports its size as it grows\npd.DataFrame([record.to_dict()]).T.rename(columns={0: 'backup'})"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("backup", record.verified or not record.enabled,\n'
                     '                  f"verified {record.summary()}" if record.enabled\n'
                     '                  else "backup turned off in the parameters (recorded)"))'),
        ]),
    "02_inspect": notebook(
        "Inspect",
        "Every foreign key on a path to the parent table, read from `pg_constraint` itself (all schemas, "
        "composite keys in their column order, partitioned tables once, the parent's own self-references): "
        "its current rules, validity, deferrability, whether its referencing columns are indexed, row "
        "estimates, and the orphan rows of `NOT VALID` constraints. Nothing here changes the database.",
        [
            ("code", "snapshot = steps.inspect(ctx)\n"
                     "fks = report.foreign_keys_frame(snapshot)\n"
                     "display(Markdown(f\"**{len(fks)}** foreign keys into the deletion set of \"\n"
                     "                 f\"**{len(graph.deletion_set(snapshot.foreign_keys, snapshot.parent))}** tables\"))"),
            ("md", "## The deletion set\nThe parent and every table that reaches it through foreign keys, with "
                   "the length of the shortest path."),
            ("code", "report.deletion_set_frame(snapshot)"),
            ("md", "## Foreign keys into the deletion set"),
            ("code", "fks"),
            ("md", "## Unindexed referencing columns\nEach cascading delete scans these tables sequentially, "
                   "once per deleted parent row."),
            ("code", "fks[~fks['indexed']][['table', 'constraint', 'columns', 'rows (est.)']]"),
            ("md", "## References no foreign key protects\nColumns of the parent key's type, named like a "
                   "reference to it, that no foreign key protects: deleting a user leaves its rows there. "
                   "`references` in the parameters adds the foreign key (opt-in); the counts say how many rows "
                   "point at existing and at missing users."),
            ("code", "report.references_frame(snapshot)"),
            ("md", "## NOT VALID constraints and their orphans\nThey stay not valid; their orphan rows are "
                   "rows that the constraint would reject today."),
            ("code", "fks[~fks['valid']][['table', 'constraint', 'columns', 'orphans']]"),
            ("md", "## The cascade tree (current rules)"),
            ("code", "print('\\n'.join(graph.cascade_tree_lines(snapshot.foreign_keys, snapshot.parent)))"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("inspect", True, f"{len(fks)} foreign keys inspected"))'),
        ]),
    "03_plan": notebook(
        "Plan",
        "For each foreign key: its class and the rule it gets, and why. Ownership edges (the row exists for "
        "its owner) become `ON DELETE CASCADE`; references to someone who acted on a row (`approver_id`, "
        "`updated_by`, ...) and edges into rows that may belong to another owner are set to NULL when "
        "nullable; the parent's self-reference never cascades; wherever the catalog cannot tell whose rows "
        "an edge reaches, the plan stops and asks (a decision, closed by `rules`). `rules` always win. Then "
        "what changes in plain words, what it will lock, the exact DDL and its exact rollback. Pure "
        "computation over the inspected snapshot: nothing here changes the database.",
        [
            ("code", "plan = steps.plan(ctx)\n"
                     "for note in plan.notes:\n"
                     "    print('NOTE:', note)\n"
                     "display(Markdown(f\"**{len(plan.changes)}** of {len(plan.items)} foreign keys change\"))"),
            ("md", "## Every foreign key into the deletion set"),
            ("code", "report.plan_frame(plan)"),
            ("md", "## Decisions\nWhere the catalog cannot tell whose rows an edge reaches, the plan stops "
                   "and asks: each open decision, the rules that close it and what each would do, and the facts "
                   "that inform it. Apply refuses to run while any is open."),
            ("code", "for line in plan.decision_lines():\n    print(line)\nreport.decisions_frame(plan)"),
            ("md", "## SecondUser: other owners' rows\nEvery edge the policy does not count as the user's "
                   "ownership, the path a user's delete takes to it, and what happens there to rows that may "
                   "belong to someone else."),
            ("code", "report.collateral_frame(plan)"),
            ("md", "## Why each rule, and the flags that deserve a second look"),
            ("code", "report.reasons_frame(plan)"),
            ("md", "## What changes, in words, and what it locks"),
            ("code", "report.behaviour_frame(plan)"),
            ("md", "## The cascade tree as planned"),
            ("code", "planned = {i.fk.key: i.planned for i in plan.items}\n"
                     "print('\\n'.join(graph.cascade_tree_lines(steps.snapshot_before(ctx).foreign_keys, plan.parent, planned)))"),
            ("md", "## The application's models\nWith `models` set (e.g. `app.models:Base`): every `ondelete` the "
                   "next Alembic autogenerate would revert and every `relationship()` that fights the planned rules, "
                   "with the model's file, line and the fix (`runbook orm-check` prints the same)."),
            ("code", "steps.models_frame(ctx, plan) if ctx.params.models else print('models is not set')"),
            ("md", "## The DDL (`plan.sql`)"),
            ("code", "print(plan.forward_script())"),
            ("md", "## The rollback (`rollback.sql`)"),
            ("code", "print(plan.rollback_script())"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("plan", not plan.decisions, f"{len(plan.changes)} change(s) planned, "\n'
                     '                  f"{sum(1 for i in plan.items if i.override)} override(s), {len(plan.notes)} note(s)"\n'
                     '                  if not plan.decisions else f"{len(plan.decisions)} open decision(s): "\n'
                     '                  + "; ".join(plan.decision_lines())))'),
        ]),
    "04_apply": notebook(
        "Apply",
        "Executes the plan one foreign key at a time: in its own transaction, under `SET LOCAL lock_timeout`, "
        "one atomic `ALTER TABLE … DROP CONSTRAINT fk, ADD CONSTRAINT fk … NOT VALID` (never a moment without "
        "the constraint), committed at once so `users` is never held locked across several tables; a lock "
        "wait that times out is rolled back and retried with backoff. Then `VALIDATE CONSTRAINT` in a "
        "transaction of its own, which blocks neither reads nor writes. An advisory lock keeps two runs "
        "apart. With `dry_run` (the default) it executes nothing and shows what it would run.",
        [
            ("code", "outcome = steps.apply(ctx, progress=print)  # one line per foreign key as it is done\n"
                     "display(Markdown('**dry run**: nothing was executed' if outcome.dry_run else md_text(outcome.backup_note)))\n"
                     "outcome.frame()"),
            ("md", "## Indexes on referencing columns\nBuilt only with `create_missing_indexes: true`, "
                   "with `CREATE INDEX CONCURRENTLY` outside any transaction; an INVALID index left by an "
                   "interrupted build is dropped and built again."),
            ("code", "outcome.index_frame() if outcome.indexes else print('no index built' + (\n"
                     "    '' if ctx.params.create_missing_indexes else ' (create_missing_indexes is off)'))"),
            ("md", "## Verdict"),
            ("code", 'if outcome.dry_run:\n'
                     '    message = f"dry run: {len(outcome.statements)} statement(s) shown, none executed"\n'
                     'else:\n'
                     '    done = sum(1 for r in outcome.results if r.status != "failed")\n'
                     '    message = f"{done} of {len(outcome.results)} foreign key(s) changed" + (\n'
                     '        "" if not outcome.failed else "; not done: " + "; ".join(r.error or r.constraint for r in outcome.failed))\n'
                     'print(ctx.verdict("apply", not outcome.failed, message))'),
        ]),
    "05_verify": notebook(
        "Verify",
        "Inspects again and compares with the snapshot taken before: every foreign key still exists; each "
        "changed one has its planned rule and every other property (columns and their order, referenced "
        "columns, `ON UPDATE`, `MATCH`, deferrability, validity, comment) as before; every other one is "
        "exactly as it was. Planning again must find nothing left to change.",
        [
            ("code", "outcome = steps.verify(ctx)\noutcome.frame()"),
            ("md", "## Problems"),
            ("code", "for problem in outcome.problems:\n    print('PROBLEM:', problem)\n"
                     "print(f'{len(outcome.problems)} problem(s); re-planning finds '\n"
                     "      f'{len(outcome.replan.changes)} change(s)' + (' (dry run: the plan was not applied)' if outcome.dry_run else ''))"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("verify", outcome.ok, "before and after agree with the plan" if outcome.ok\n'
                     '                  else "; ".join(outcome.problems)))'),
        ]),
    "06_test_user_deletion": notebook(
        "Test-user deletion",
        "Turns \"the constraints say CASCADE\" into evidence. A synthetic test user (an `…@example.invalid` "
        "marker) gets at least one row in every table of the deletion set, with values worked out from the "
        "catalog; the preview shows what deleting it will remove (the same computation as `runbook preview` "
        "for a real user); a single `DELETE` of the user follows, and the proof checks that nothing of the "
        "user remains, and, from the transaction's own row counters, that every table lost and updated "
        "exactly the rows the preview said, whatever other sessions write meanwhile. A second test user's rows "
        "hang off the test user's (a comment on its post): what the delete does to them is shown and proven. "
        "Every statement runs under `statement_timeout` and `lock_timeout`. All of it runs in one transaction "
        "that is rolled back unless `test_user.commit` is set. "
        "In a dry run the step is skipped unless `test_user.rehearse` is set: then the plan's DDL runs first "
        "inside the same rolled-back transaction, which holds the apply's locks for as long as it lasts.",
        [
            ("code", "outcome = steps.test_user(ctx)\ndisplay(Markdown(md_bold(outcome.message)))"),
            ("md", "## The test user's rows\nOne row per table of the deletion set (a table it could not fill is "
                   "named with the database's error)."),
            ("code", "deletion.synthesis_frame(outcome.run.synthesis) if outcome.run else print(outcome.skipped)"),
            ("md", "## Preview: what the delete will do\nRows deleted and rows set to NULL per table, walking the "
                   "foreign keys with their current rules; blockers are RESTRICT / NO ACTION edges with rows."),
            ("code", "if outcome.run and outcome.run.preview:\n"
                     "    display(deletion.preview_frame(outcome.run.preview))\n"
                     "    display(deletion.blockers_frame(outcome.run.preview))"),
            ("md", "## Proof: rows deleted, updated and inserted by the delete, per table, against the preview"),
            ("code", "deletion.proof_frame(outcome.run.proof) if outcome.run and outcome.run.proof else None"),
            ("md", "## Another user's rows on the test user's\nWhat the delete does to them (planned by the "
                   "preview, found by key afterwards)."),
            ("code", "if outcome.run:\n"
                     "    display(deletion.second_user_frame(outcome.run.second_user))\n"
                     "    for note in outcome.run.notes:\n"
                     "        print(note)"),
            ("md", "## Orphans\nRows outside the deletion set that only the deleted rows referenced (stored media, "
                   "for example): for an external clean-up job. Never deleted here."),
            ("code", "deletion.orphans_frame(outcome.run.orphans) if outcome.run else None"),
            ("md", "## The ordered delete script\nFor databases where CASCADE is not wanted: the explicit "
                   "statements for one user, children before parents, cycles broken by setting a nullable key to "
                   "NULL first (`delete_script.sql`), proven on a test user of its own in a rolled-back "
                   "transaction."),
            ("code", "print('\\n'.join(s + ';' for s in outcome.script))\n"
                     "print(outcome.script_proof.message if outcome.script_proof else 'not proven: ' + (outcome.skipped or ''))"),
            ("md", "## Preview for a real user\nWith `preview_user_id` set: what deleting that user would do. "
                   "Read-only."),
            ("code", "if preview_user_id is not None:\n"
                     "    real = steps.preview_user(ctx, preview_user_id)\n"
                     "    display(deletion.preview_frame(real), deletion.blockers_frame(real))\n"
                     "    display(Markdown('Other users\\' rows this delete removes or detaches:'))\n"
                     "    display(report.collateral_rows_frame(collateral.of_preview(real, ctx.params)))\n"
                     "    display(Markdown('Rows of this user that no foreign key reaches (left behind by the delete):'))\n"
                     "    display(report.unprotected_frame(steps.preview_unprotected(ctx, preview_user_id)))\n"
                     "else:\n"
                     "    print('preview_user_id is not set')"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("test_user", outcome.ok, outcome.message, skipped=outcome.skipped is not None))'),
            ("md", "## Evidence\nRun by hand, the run folder gets the manifest and index page that `runbook run` "
                   "writes, and `runbook verify-evidence` checks it; under `runbook run` the runner writes them."),
            ("code", "if ctx.by_hand:\n    from runbook_lib import by_hand\n    print(by_hand.seal(ctx))"),
        ]),
    "07_rollback": notebook(
        "Rollback",
        "Restores every foreign key that a previous run changed to its exact original definition, read from "
        "that run's captured snapshot (whose evidence must verify first). The same safe recipe as apply: one "
        "foreign key per transaction, atomic swap, lock timeout with retries, separate validation. Afterwards "
        "`pg_get_constraintdef` of each must be exactly what it was before that run. Run it with "
        "`runbook rollback RUN_DIR`.",
        [
            ("md", "## What will run\nThe run folder must verify, and the database's run history must vouch "
                   "for it (or its manifest carry a valid `RUNBOOK_EVIDENCE_KEY` signature); the reverse DDL "
                   "must be exactly what the run's `plan.json` recorded. This is the DDL, before it runs."),
            ("code", "from runbook_lib import vouch\n\nprint(vouch.rollback_plan(ctx, source_run).rollback_script())"),
            ("md", "## Rolling back"),
            ("code", "outcome = steps.rollback(ctx, source_run, progress=print)\n"
                     "display(Markdown(f'Rolling back the run in {md_bold(outcome.source.name)}'))\n"
                     "# Timings vary from run to run: they are in rollback_result.json.\n"
                     "pd.DataFrame([r.to_dict() for r in outcome.results]).drop(columns=['swap_ms', 'validate_ms'])"),
            ("md", "## Each restored foreign key against its original definition"),
            ("code", "pd.DataFrame(outcome.comparison.rows)"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("rollback", outcome.ok, f"{len(outcome.results)} foreign key(s) restored to their "\n'
                     '                  "original definitions" if outcome.ok else "; ".join(\n'
                     '                  [r.error for r in outcome.results if r.error] + outcome.comparison.problems)))'),
        ],
        extra_parameters='\nsource_run = ""             # the run folder whose changes are rolled back'),
    "08_erase_user": notebook(
        "Erase a user",
        "Deletes one real user's account with proof, for a \"delete my account\" request or a GDPR erasure. "
        "The preflight first re-plans on the live catalog: every foreign key must already have the rule the "
        "policy wants, otherwise the erasure is refused with one line per foreign key. The preview then "
        "shows what the delete will remove and detach, the tables whose rows of this user are so many that "
        "they go in batches of `erase.batch_rows` (deepest tables first, by key, each batch its own short "
        "transaction under `lock_timeout` and `statement_timeout`), unindexed foreign keys with the "
        "`CREATE INDEX CONCURRENTLY` that fixes them, and the rows the user's rows alone referenced (orphans, "
        "e.g. stored media). Nothing changes unless `confirm` is true.",
        [
            ("code", "from runbook_lib import erase_run\n\n"
                     "erase_user_id = erase_run.given_user_id(erase_user_id)\n"
                     "conn = erase_run.open_connection(ctx.conninfo())\n"
                     "outcome = erase_run.preview_user(conn, ctx.params, erase_user_id) "
                     "if erase_user_id is not None else None\n"
                     "print(outcome.message if outcome else 'erase_user_id is not set: nothing to preview')\n"
                     "for line in (erase_run.refusal_lines(outcome) if outcome else []):\n"
                     "    print(line)"),
            ("md", "## Preview\nRows deleted and detached (SET NULL / SET DEFAULT) per table, the batches "
                   "each heavy table takes, and the fix for each unindexed foreign key on the way."),
            ("code", "erase_run.preview_frame(outcome.plan) if outcome and outcome.plan else None"),
            ("md", "## Orphans\nRows outside the deletion set that only this user's rows reference: listed in "
                   "`orphans.csv` for the clean-up job (with the columns named in `erase.orphan_columns`), "
                   "and deleted in the final transaction when `erase.orphans` is `delete`."),
            ("code", "(erase_run.orphans_frame(outcome.predicted_orphans) if outcome and outcome.predicted_orphans\n"
                     " else print('no orphans: nothing outside the deletion set is referenced only by this user'))"),
            ("md", "## Erase\nOnly when `confirm` is true and nothing blocks: the batches, then the user and "
                   "its remaining rows in one transaction that commits only when, together with the batches, "
                   "every table changed by exactly the preview's counts (read from `pg_stat_xact_user_tables`, "
                   "without reading any table). Each transaction prints a line as it commits; one that waited "
                   "longer than `lock_timeout` for a lock (or lost a deadlock) is retried up to `lock_retries` "
                   "times with backoff. A crash between batches, or a lock held past the last retry, is "
                   "finished by running this again."),
            ("code", "if outcome and confirm and outcome.ok:\n"
                     "    outcome = erase_run.carry_out(conn, ctx.params, outcome, run_dir=ctx.run_dir, progress=print)\n"
                     "    display(erase_run.transactions_frame(outcome.erasure))\n"
                     "else:\n"
                     "    print('not erased: ' + ('confirm is false' if outcome and not confirm else\n"
                     "                            'blocked' if outcome else 'no user'))"),
            ("md", "## Proof and receipt\nEach table's deleted and detached counts against the preview and a "
                   "lookup by key of every predicted row. The receipt goes into this run folder: "
                   "`receipt.md` / `.html` (one page), `receipt.json` (counts, transactions, and per table one "
                   "SHA-256 over the deleted rows' key hashes), `deleted_keys.csv.gz` (one key hash per deleted "
                   "row) and `orphans.csv`; none holds a column value of the user."),
            ("code", "if outcome and outcome.proof:\n"
                     "    display(erase_run.proof_frame(outcome.proof))\n"
                     "    print('receipt: receipt.md, receipt.html, receipt.json, deleted_keys.csv.gz, orphans.csv')\n"
                     "conn.close()"),
            ("md", "## Verdict"),
            ("code", 'print(ctx.verdict("erase", outcome is None or outcome.ok, outcome.message if outcome '
                     'else "no user given",\n'
                     '                  **(erase_run.verdict_details(outcome) if outcome else {})))'),
        ],
        extra_parameters='\nerase_user_id = None        # the key of the user to erase (runbook erase with '
                         'erase.hash_keys passes it outside the notebook)\n'
                         'confirm = False             # delete only when true'),
}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    DEFAULTS_YAML.write_text(paramdocs.defaults_yaml(), encoding="utf-8")
    only = set(sys.argv[1:])
    for name, nb in NOTEBOOKS.items():
        if only and name not in only:
            continue
        nbformat.write(nb, OUT / f"{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
