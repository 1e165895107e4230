"""A schema of forty tables with the long names real applications grow, all owned by ``users``.

Each table has an owner column (CASCADE), a nullable actor column (SET NULL) and a long text value;
every third one leaves its owner column unindexed. User 1 owns a row in every table, and user 2 acted
on some of them, so a preview or an erasure of user 1 has something to say about every table.
"""
from __future__ import annotations

_AREAS = ("customer_subscription", "warehouse_inventory", "marketing_campaign", "clinical_appointment",
          "financial_ledger", "support_ticket", "learning_management", "fleet_maintenance")
_THINGS = ("billing_adjustment_line_items", "reservation_history_entries", "notification_delivery_attempts",
           "document_attachment_versions", "approval_workflow_transitions")
_ACTORS = ("last_modified_by_user_id", "approved_by_user_id", "reviewer_id", "assignee_id", "creator_id")


def table_names(count: int = 40) -> list[str]:
    names = [f"{area}_{thing}" for area in _AREAS for thing in _THINGS]
    return names[:count]


def actor_columns(count: int = 40) -> list[str]:
    return [_ACTORS[n % len(_ACTORS)] for n in range(count)]


def schema_sql(count: int = 40) -> str:
    parts = ["CREATE TABLE public.users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE);",
             "INSERT INTO public.users VALUES (1, 'first.person@example.com'), (2, 'second.person@example.com');"]
    for n, (name, actor) in enumerate(zip(table_names(count), actor_columns(count))):
        parts.append(
            f"CREATE TABLE public.{name} (id bigserial PRIMARY KEY, "
            f"user_id bigint NOT NULL REFERENCES public.users (id), "
            f"{actor} bigint REFERENCES public.users (id), "
            f"free_text_description_of_what_happened text NOT NULL);")
        if n % 3:
            parts.append(f"CREATE INDEX ON public.{name} (user_id);")
        parts.append(f"CREATE INDEX ON public.{name} ({actor});")
        parts.append(f"INSERT INTO public.{name} (user_id, {actor}, "
                     f"free_text_description_of_what_happened) VALUES "
                     f"(1, 2, repeat('a long description without any spaces at all ', 3)), "
                     f"(2, 1, 'done on behalf of the first person by the second');")
    return "\n".join(parts)
