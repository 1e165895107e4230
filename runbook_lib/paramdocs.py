"""The parameters' documentation, rendered from ``params.SPEC``: ``parameters/defaults.yaml`` and the
notebooks' parameter cell. Both are generated (``scripts/build_notebooks.py``) and a test checks that
the shipped files are what this module renders, so defaults live in one place only.
"""
from __future__ import annotations

import textwrap
from typing import Any

import yaml

from .params import DEFAULTS, NESTED, SPEC, TOP_LEVEL, Spec

EXAMPLE_PARENT = "users"

_HEADER = """\
# The documented default parameter set: every key the runbook accepts, with its default.
# Generated from runbook_lib/params.py (scripts/build_notebooks.py writes it; a test checks it).
# An unknown key or a wrong value in any parameter file is an error before anything runs.
# The connection is never a parameter: set RUNBOOK_DSN, or libpq's PG* variables / service file / .pgpass.
"""


def _yaml_value(key: str, value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    dumped = yaml.safe_dump({key: value}, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return dumped[1:-1]  # "{key: value}" -> "key: value"


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, 100 - len(indent) - 2)]


def _entry(spec: Spec, indent: str, name: str) -> list[str]:
    lines = _comment(spec.doc, indent)
    if spec.example:
        lines += _comment(f"Example: {spec.example}", indent)
    default = EXAMPLE_PARENT if spec.key == "parent_table" else spec.default
    lines.append(indent + _yaml_value(name, default))
    return lines


def defaults_yaml() -> str:
    """The text of ``parameters/defaults.yaml``."""
    lines = [_HEADER.rstrip("\n")]
    done: set[str] = set()
    for spec in SPEC:
        head, _, sub = spec.key.partition(".")
        lines.append("")
        if not sub:
            lines.extend(_entry(spec, "", head))
            continue
        if head not in done:
            lines.append(f"{head}:")
            done.add(head)
        else:
            lines.pop()
        lines.extend(_entry(spec, "  ", sub))
    return "\n".join(lines) + "\n"


def _first_sentence(text: str) -> str:
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 90 else sentence[:87] + "..."


def parameters_cell(extra: str = "") -> str:
    """The notebooks' parameter cell: every key with its default (papermill injects the run's values)."""
    lines = ["# Parameters: `runbook run` injects the run's values after this cell; by hand, edit them here.",
             "# Every key is documented in parameters/defaults.yaml."]
    for name in TOP_LEVEL:
        value = EXAMPLE_PARENT if name == "parent_table" else DEFAULTS[name]
        if isinstance(value, list):
            value = tuple(value)
        doc = (f"{name}.*: see parameters/defaults.yaml" if name in NESTED
               else _first_sentence(next(s.doc for s in SPEC if s.key == name)))
        lines.append(f"{name} = {value!r}  # {doc}")
    lines.append('run_dir = ""  # the run\'s evidence folder (set by `runbook run`; empty: one per database and parent table)')
    return "\n".join(lines) + extra


def context_call() -> str:
    """The set-up cell's call that validates the parameters and opens the run folder."""
    args = ", ".join(f"{name}={name}" for name in TOP_LEVEL)
    return "\n".join(textwrap.wrap(f"ctx = RunContext.open(run_dir, {args})", 100,
                                   subsequent_indent=" " * len("ctx = RunContext.open(")))
