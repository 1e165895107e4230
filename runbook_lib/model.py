"""The model the runbook works on: foreign keys, tables, reference columns and the catalog snapshot.

Plain data, no database access: the catalog reader fills it, planning, verification and rollback read
it offline, and the evidence stores it as JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

TableKey = tuple[str, str]

DELETE_RULES = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
MATCH_TYPES = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}


def qualname(key: TableKey) -> str:
    """A readable ``schema.table`` (for people; SQL always goes through ``sql.Identifier``)."""
    return f"{key[0]}.{key[1]}"


@dataclass(frozen=True)
class ForeignKey:
    oid: int
    schema: str
    table: str
    name: str
    ref_schema: str
    ref_table: str
    columns: tuple[str, ...]
    ref_columns: tuple[str, ...]
    columns_not_null: tuple[bool, ...]
    on_delete: str
    on_update: str
    match: str
    deferrable: bool
    deferred: bool
    validated: bool
    definition: str
    comment: str | None
    delete_set_columns: tuple[str, ...] = ()
    child_kind: str = "r"
    indexed: bool = False
    child_rows: int | None = None
    # The referencing columns' defaults (pg_get_expr text, None where there is none), in column order.
    column_defaults: tuple[str | None, ...] = ()

    @property
    def child(self) -> TableKey:
        return (self.schema, self.table)

    @property
    def parent(self) -> TableKey:
        return (self.ref_schema, self.ref_table)

    @property
    def key(self) -> str:
        """Constraint names are unique per table, not per schema: the table is part of the identity."""
        return f"{self.schema}.{self.table}.{self.name}"

    @property
    def nullable(self) -> bool:
        return not any(self.columns_not_null)

    @property
    def partitioned(self) -> bool:
        return self.child_kind == "p"

    def same_shape(self, other: "ForeignKey") -> bool:
        """Every property except the delete rule and validity."""
        return (
            self.columns == other.columns
            and self.ref_schema == other.ref_schema
            and self.ref_table == other.ref_table
            and self.ref_columns == other.ref_columns
            and self.on_update == other.on_update
            and self.match == other.match
            and self.deferrable == other.deferrable
            and self.deferred == other.deferred
            and self.comment == other.comment
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ForeignKey":
        values = dict(data)
        for name in ("columns", "ref_columns", "columns_not_null", "delete_set_columns", "column_defaults"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    kind: str
    rows: int | None
    is_partition: bool = False

    @property
    def key(self) -> TableKey:
        return (self.schema, self.name)


@dataclass(frozen=True)
class ReferenceColumn:
    """A column that looks like a reference to the parent's key but that no foreign key protects."""
    schema: str
    table: str
    column: str
    type_name: str
    not_null: bool
    indexed: bool
    rows: int | None
    matched: str
    existing: int | None = None   # rows whose value is the key of an existing parent row
    missing: int | None = None    # rows whose value is the key of no parent row
    sampled: bool = False         # the counts are scaled up from a sample
    partitioned: bool = False

    @property
    def child(self) -> TableKey:
        return (self.schema, self.table)

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class Snapshot:
    server_version_num: int
    server_version: str
    database: str
    parent: TableKey
    foreign_keys: tuple[ForeignKey, ...]
    tables: tuple[TableInfo, ...]
    orphans: Mapping[str, int | None] = field(default_factory=dict)
    # Leaf partitions of each partitioned referencing table in the deletion set ("schema.table" -> keys).
    partitions: Mapping[str, tuple[TableKey, ...]] = field(default_factory=dict)
    # The parent's key columns (primary key, else a unique NOT NULL key).
    parent_key: tuple[str, ...] = ()
    # Columns that look like references to the parent but have no foreign key.
    references: tuple[ReferenceColumn, ...] = ()
    # Facts that inform decisions, per FK key (e.g. a sample of rows whose owners differ).
    facts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def fk(self, key: str) -> ForeignKey | None:
        for fk in self.foreign_keys:
            if fk.key == key:
                return fk
        return None

    def table(self, key: TableKey) -> TableInfo | None:
        for info in self.tables:
            if info.key == key:
                return info
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_version_num": self.server_version_num,
            "server_version": self.server_version,
            "database": self.database,
            "parent": list(self.parent),
            "foreign_keys": [fk.to_dict() for fk in self.foreign_keys],
            "tables": [asdict(t) for t in self.tables],
            "orphans": dict(self.orphans),
            "partitions": {k: [list(t) for t in v] for k, v in self.partitions.items()},
            "parent_key": list(self.parent_key),
            "references": [asdict(r) for r in self.references],
            "facts": {k: list(v) for k, v in self.facts.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Snapshot":
        return cls(
            server_version_num=int(data["server_version_num"]),
            server_version=str(data["server_version"]),
            database=str(data["database"]),
            parent=(data["parent"][0], data["parent"][1]),
            foreign_keys=tuple(ForeignKey.from_dict(d) for d in data["foreign_keys"]),
            tables=tuple(TableInfo(**t) for t in data["tables"]),
            orphans=dict(data.get("orphans", {})),
            partitions={k: tuple((t[0], t[1]) for t in v) for k, v in data.get("partitions", {}).items()},
            parent_key=tuple(data.get("parent_key", ())),
            references=tuple(ReferenceColumn(**r) for r in data.get("references", ())),
            facts={k: tuple(v) for k, v in data.get("facts", {}).items()},
        )
