"""The ``runbook`` command: a thin shell over the runner (the contract is in README.md, "Running it")."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import RunbookError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook", description="Move foreign keys onto ON DELETE CASCADE, "
                                     "safely, with evidence.")
    parser.add_argument("--version", action="version", version=f"cascade-runbook {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the runbook's notebooks in order with papermill")
    run.add_argument("--params", required=True, help="YAML parameter file")
    run.add_argument("--evidence-dir", default="evidence", help="where the run folder is written")
    run.add_argument("--steps", help="comma-separated subset of: preflight,backup,inspect,plan,apply,verify,"
                                     "test_user")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override one parameter (dots reach nested keys, e.g. backup.enabled=false)")

    demo = sub.add_parser("demo", help="embedded PostgreSQL + demo schema + full run")
    demo.add_argument("--evidence-dir", default="evidence")
    demo.add_argument("--schema", default="health", choices=["health", "qa", "board"])

    ver = sub.add_parser("verify-evidence", help="check every hash in a run folder's manifest")
    ver.add_argument("run_dir")

    rb = sub.add_parser("rollback", help="restore exactly what a run changed")
    rb.add_argument("run_dir")
    rb.add_argument("--evidence-dir", default=None)
    rb.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")

    pv = sub.add_parser("preview", help="read-only: what deleting one user would remove")
    pv.add_argument("--params", required=True)
    pv.add_argument("--user-id", required=True)

    er = sub.add_parser("erase", help="erase real users: preview, then with --confirm delete with proof")
    er.add_argument("--params", required=True)
    er.add_argument("--user-id", default=None)
    er.add_argument("--user-ids-file", default=None, help="one id per line, erased one by one")
    er.add_argument("--confirm", action="store_true", help="delete (without it: preview only, nothing changes)")
    er.add_argument("--evidence-dir", default="evidence")
    er.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")

    lab = sub.add_parser("lab", help="JupyterLab on fresh copies of notebooks/, connected like run")
    lab.add_argument("--evidence-dir", default=None, help="where the lab folder is made (default: evidence)")
    lab.add_argument("--demo", action="store_true", help="start the embedded demo server first")
    lab.add_argument("--port", type=int, default=None)
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser (headless)")

    al = sub.add_parser("alembic", help="write the plan as an Alembic revision file")
    al.add_argument("--params", required=True)
    al.add_argument("--versions-dir", required=True, help="the Alembic versions folder to write into")
    al.add_argument("--message", default=None, help="the revision's message (and file name)")
    al.add_argument("--down-revision", default=None, help="revision to follow (default: the current head)")

    orm = sub.add_parser("orm-check", help="SQLAlchemy models against the planned rules (exit 1 on findings)")
    orm.add_argument("--params", required=True)
    orm.add_argument("--models", required=True, metavar="MODULE[:ATTR]",
                     help="the declarative base or MetaData, e.g. app.models:Base (imported from the current folder)")

    ck = sub.add_parser("check", help="read-only CI guard: exit 1 when any FK differs from the policy")
    ck.add_argument("--params", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return _dispatch(args)
    except RunbookError as exc:
        print(f"runbook: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("runbook: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from . import runner

    if args.command in ("run", "rollback", "erase"):
        from . import progress

        progress.enable(sys.stderr)
    if args.command == "run":
        result = runner.run(args.params, evidence_dir=args.evidence_dir, steps=args.steps, overrides=args.param)
        return _report(result)
    if args.command == "verify-evidence":
        from .evidence import verify_evidence

        problems = verify_evidence(Path(args.run_dir))
        for line in problems:
            print(f"runbook: evidence: {line}", file=sys.stderr)
        if not problems:
            print(f"evidence verifies: {args.run_dir}")
        for line in runner.trust_lines(Path(args.run_dir)):
            print(line)
        return EXIT_OK if not problems else EXIT_FAILED
    if args.command == "rollback":
        result = runner.rollback(args.run_dir, evidence_dir=args.evidence_dir, overrides=args.param)
        return _report(result)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.schema, Path(args.evidence_dir))
    if args.command == "lab":
        from .lab import run_lab

        return run_lab(demo=args.demo, port=args.port, open_browser=not args.no_browser,
                       evidence_dir=Path(args.evidence_dir) if args.evidence_dir else None,
                       announce=lambda line: print(line, file=sys.stderr))
    if args.command == "preview":
        return _preview(args.params, args.user_id)
    if args.command == "alembic":
        from . import toolchain_cli

        return toolchain_cli.alembic(args.params, args.versions_dir, args.message, args.down_revision)
    if args.command == "orm-check":
        from . import toolchain_cli

        return toolchain_cli.orm_check(args.params, args.models)
    if args.command == "check":
        from . import toolchain_cli

        return toolchain_cli.check(args.params)
    if args.command == "erase":
        from .erase_cli import erase_command

        return erase_command(args)
    raise AssertionError(args.command)


def _preview(params_file: str, user_id: str) -> int:
    """Read-only: print what deleting one user would do; exit 1 when the delete would be blocked."""
    from . import params as params_mod
    from . import collateral, deletion, report, steps, terminal
    from .erase_plan import predict_orphans
    from .erase_run import orphans_frame
    from .context import RunContext

    params = params_mod.load(params_file)
    ctx = RunContext(params=params, run_dir=Path.cwd())
    found = steps.preview_user(ctx, user_id)
    # A terminal of 100 columns: long values are cut, wide frames wrap; the evidence keeps the detail.
    show = terminal.frame_lines
    lines = show(deletion.preview_frame(found))
    blockers = deletion.blockers_frame(found)
    if len(blockers):
        lines += ["", "blockers:", *show(blockers)]
    others = collateral.of_preview(found, params)
    if others:
        lines += ["", "other users' rows this delete removes or detaches:",
                  *show(report.collateral_rows_frame(others))]
    with ctx.connect() as conn:
        lonely = predict_orphans(conn, found, list(params.erase["orphan_columns"]))
    if lonely:
        lines += ["", "left unreferenced by this delete (orphans, for a clean-up job):", *show(orphans_frame(lonely))]
    unprotected = steps.preview_unprotected(ctx, user_id)
    if unprotected:
        lines += ["", "not reached by any foreign key (the delete leaves these rows behind):",
                  *show(report.unprotected_frame(unprotected))]
    print("\n".join([*lines, "", *terminal.text_lines(found.message, "  ")]))
    return EXIT_OK if not found.certain_blockers else EXIT_FAILED


def _report(result: "object") -> int:
    from .runner import RunResult, main_stream_line

    assert isinstance(result, RunResult)
    for step in result.steps:
        print(f"{step.step:<10} {step.status:<8} {step.seconds:>7.2f}s")
    if result.ok:
        print(main_stream_line(result))
        return EXIT_OK
    print(f"runbook: {main_stream_line(result)}", file=sys.stderr)
    for line in open_decisions(result.run_dir):
        print(f"runbook: {line}", file=sys.stderr)
    return EXIT_FAILED


def open_decisions(run_dir: Path) -> list[str]:
    """The plan's open decisions, one line each (what stopped the run, and the rules that close them)."""
    import json

    plan = run_dir / "plan.json"
    if not plan.is_file():
        return []
    return [str(line) for line in json.loads(plan.read_text(encoding="utf-8")).get("decisions", [])]


if __name__ == "__main__":
    sys.exit(main())
