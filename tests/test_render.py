"""The SQL a plan renders, text for text, without a connection."""
from __future__ import annotations

from runbook_lib import render
from tests.factories import fk


def test_swap_keeps_every_property_and_quotes_every_name() -> None:
    f = fk('Audit "Trail"', "Audit → User", "user", ("Tenant", "user id"), ("tenant", "id"), schema="Other Schema",
           match="FULL", on_update="CASCADE", deferrable=True, deferred=True)
    text = render.text(render.swap(f, "CASCADE", not_valid=True))
    assert text == (
        'ALTER TABLE "Other Schema"."Audit ""Trail""" DROP CONSTRAINT "Audit → User", ADD CONSTRAINT '
        '"Audit → User" FOREIGN KEY ("Tenant", "user id") REFERENCES "public"."user" ("tenant", "id") MATCH FULL '
        'ON UPDATE CASCADE ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID')


def test_injection_attempts_stay_quoted_names() -> None:
    f = fk('x"; DROP TABLE users; --', "c", "users")
    text = render.text(render.validate(f))
    assert text == 'ALTER TABLE "public"."x""; DROP TABLE users; --" VALIDATE CONSTRAINT "c"'


def test_comment_is_a_quoted_literal_and_set_null_columns_render() -> None:
    f = fk("t", "c", "users", comment="owner's rows")
    assert render.text(render.comment(f) or render.validate(f)) == (
        "COMMENT ON CONSTRAINT \"c\" ON \"public\".\"t\" IS 'owner''s rows'")
    assert render.comment(fk("t", "c", "users")) is None
    g = fk("t", "c", "users", ("a", "b"), ("x", "y"))
    assert 'ON DELETE SET NULL ("b")' in render.text(render.swap(g, "SET NULL", not_valid=False,
                                                                  delete_set_columns=("b",)))
