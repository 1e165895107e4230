-- Every shape the inspection and the plan must get right, in one database (parent: public.users).
CREATE SCHEMA "Other Schema";

CREATE TABLE public.users (
    id bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    tenant int NOT NULL DEFAULT 1,
    referred_by bigint REFERENCES public.users (id),
    UNIQUE (tenant, id)
);
INSERT INTO public.users (id, email, referred_by) VALUES (1, 'a@example.com', NULL), (2, 'b@example.com', 1);

-- composite key in a column order unlike the table's, MATCH FULL, ON UPDATE, deferrable, commented
CREATE TABLE public.memberships (
    id serial PRIMARY KEY,
    user_id bigint,
    tenant int,
    CONSTRAINT memberships_owner_fk FOREIGN KEY (tenant, user_id) REFERENCES public.users (tenant, id)
        MATCH FULL ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED
);
COMMENT ON CONSTRAINT memberships_owner_fk ON public.memberships IS 'the owner''s memberships';
INSERT INTO public.memberships (user_id, tenant) VALUES (1, 1), (2, 1);

-- NOT VALID with orphans
CREATE TABLE public.legacy_notes (id serial PRIMARY KEY, user_id bigint);
INSERT INTO public.legacy_notes (user_id) VALUES (1), (999), (998), (NULL);
ALTER TABLE public.legacy_notes ADD CONSTRAINT legacy_notes_user_fk
    FOREIGN KEY (user_id) REFERENCES public.users (id) NOT VALID;

-- partitioned child, FK declared on the partitioned parent
CREATE TABLE public.events (
    id bigint NOT NULL,
    user_id bigint NOT NULL REFERENCES public.users (id),
    at date NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_rest PARTITION OF public.events DEFAULT;
INSERT INTO public.events VALUES (1, 1, '2025-03-01'), (2, 2, '2027-01-01');

-- other schema, mixed case, spaces, 63-byte names
CREATE TABLE "Other Schema"."Audit Trail" (
    id serial PRIMARY KEY,
    "User Id" bigint CONSTRAINT "Audit Trail → User" REFERENCES public.users (id)
);
CREATE TABLE public.t_sixty_three_bytes_long_table_name_xxxxxxxxxxxxxxxxxxxxxxxxxxxx (
    id serial PRIMARY KEY,
    user_id bigint CONSTRAINT c_sixty_three_bytes_long_constraint_name_yyyyyyyyyyyyyyyyyyyyyyy
        REFERENCES public.users (id)
);

-- a unique column that is not the primary key
CREATE TABLE public.email_prefs (id serial PRIMARY KEY, email text NOT NULL REFERENCES public.users (email));

-- second level, and an explicit RESTRICT on a second-level path
CREATE TABLE public.nutrition_goals (id serial PRIMARY KEY, user_id bigint NOT NULL REFERENCES public.users (id));
CREATE TABLE public.nutrition_goal_targets (
    id serial PRIMARY KEY, goal_id int NOT NULL REFERENCES public.nutrition_goals (id));
CREATE TABLE public.appointments (id serial PRIMARY KEY, user_id bigint NOT NULL REFERENCES public.users (id));
CREATE TABLE public.prescriptions (
    id serial PRIMARY KEY, appointment_id int NOT NULL REFERENCES public.appointments (id) ON DELETE RESTRICT);
INSERT INTO public.nutrition_goals (user_id) VALUES (1), (2);
INSERT INTO public.nutrition_goal_targets (goal_id) VALUES (1), (1), (2);
INSERT INTO public.appointments (user_id) VALUES (1);
INSERT INTO public.prescriptions (appointment_id) VALUES (1);

-- a cross edge: sessions point at their last message, messages belong to sessions
CREATE TABLE public.chat_sessions (id serial PRIMARY KEY, user_id bigint NOT NULL REFERENCES public.users (id),
                                   last_message_id int);
CREATE TABLE public.chat_messages (id serial PRIMARY KEY,
                                   session_id int NOT NULL REFERENCES public.chat_sessions (id));
ALTER TABLE public.chat_sessions ADD CONSTRAINT chat_sessions_last_message_fk
    FOREIGN KEY (last_message_id) REFERENCES public.chat_messages (id);
INSERT INTO public.chat_sessions (user_id) VALUES (1);
INSERT INTO public.chat_messages (session_id) VALUES (1);
UPDATE public.chat_sessions SET last_message_id = 1;

-- already CASCADE: untouched
CREATE TABLE public.devices (id serial PRIMARY KEY,
                             user_id bigint NOT NULL REFERENCES public.users (id) ON DELETE CASCADE);
CREATE INDEX devices_user_id_idx ON public.devices (user_id);

-- outside the deletion set: a lookup table and a view
CREATE TABLE public.medication_catalog (id serial PRIMARY KEY, name text);
CREATE TABLE public.user_medications (
    id serial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES public.users (id),
    medication_id int REFERENCES public.medication_catalog (id)
);
CREATE TABLE public.countries (code text PRIMARY KEY);
CREATE TABLE public.cities (id serial PRIMARY KEY, country text REFERENCES public.countries (code));
CREATE VIEW public.active_users AS SELECT id, email FROM public.users;

-- kept by a rules override
CREATE TABLE public.billing (id serial PRIMARY KEY, user_id bigint REFERENCES public.users (id));
INSERT INTO public.billing (user_id) VALUES (1);
