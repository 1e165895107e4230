-- A table and a constraint whose names are SQL injection attempts, and a comment that is one too.
CREATE TABLE public.users (id bigint PRIMARY KEY);
INSERT INTO public.users VALUES (1), (2);

CREATE TABLE public."x""; DROP TABLE users; --" (
    id int PRIMARY KEY,
    "user_id""); DROP TABLE users; --" bigint NOT NULL
        CONSTRAINT "fk""; DROP TABLE users; --" REFERENCES public.users (id)
);
COMMENT ON CONSTRAINT "fk""; DROP TABLE users; --" ON public."x""; DROP TABLE users; --"
    IS 'it''s''; DROP TABLE users; --';
INSERT INTO public."x""; DROP TABLE users; --" VALUES (1, 1), (2, 2);
