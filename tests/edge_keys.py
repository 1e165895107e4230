"""Keys of the foreign keys in tests/sql/edge_cases.sql, shared by the database tests."""
from __future__ import annotations

LONG_TABLE = "t_sixty_three_bytes_long_table_name_xxxxxxxxxxxxxxxxxxxxxxxxxxx"
LONG_CONSTRAINT = "c_sixty_three_bytes_long_constraint_name_yyyyyyyyyyyyyyyyyyyyyy"

MEMBERSHIPS = "public.memberships.memberships_owner_fk"
LEGACY = "public.legacy_notes.legacy_notes_user_fk"
EVENTS = "public.events.events_user_id_fkey"
EVENT_CLONES = ("public.events_2025.events_user_id_fkey", "public.events_rest.events_user_id_fkey")
AUDIT = "Other Schema.Audit Trail.Audit Trail → User"
LONG = f"public.{LONG_TABLE}.{LONG_CONSTRAINT}"
EMAIL = "public.email_prefs.email_prefs_email_fkey"
GOALS = "public.nutrition_goals.nutrition_goals_user_id_fkey"
TARGETS = "public.nutrition_goal_targets.nutrition_goal_targets_goal_id_fkey"
APPOINTMENTS = "public.appointments.appointments_user_id_fkey"
PRESCRIPTIONS = "public.prescriptions.prescriptions_appointment_id_fkey"
SELF = "public.users.users_referred_by_fkey"
CROSS_EDGE = "public.chat_sessions.chat_sessions_last_message_fk"
DEVICES = "public.devices.devices_user_id_fkey"
BILLING = "public.billing.billing_user_id_fkey"
CITIES = "public.cities.cities_country_fkey"
MEDICATION = "public.user_medications.user_medications_medication_id_fkey"
