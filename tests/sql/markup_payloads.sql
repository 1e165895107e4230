-- Names, comments, CHECK messages and trigger errors that are HTML: a page must show them as text.
-- (Unquoted attribute values without quotes: Markdown passes such a tag through as live HTML.)
CREATE TABLE public.users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE);
INSERT INTO public.users (email) VALUES ('a@example.com'), ('b@example.com');

CREATE SCHEMA "s<script>alert(1)</script>";

-- An owned table in the schema: ownership edge by column name.
CREATE TABLE "s<script>alert(1)</script>".orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES public.users (id),
    note text CONSTRAINT "chk<img src=x onerror=alert(2)>" CHECK (note IS NULL OR length(note) < 100)
);
CREATE INDEX ON "s<script>alert(1)</script>".orders (user_id);

-- Table, column and constraint named with payloads; a rule by constraint name decides the edge.
CREATE TABLE public."t<img src=x onerror=alert(3)>" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "c<svg onload=alert(4)>" bigint NOT NULL,
    CONSTRAINT "fk<img src=y onerror=alert(5)>" FOREIGN KEY ("c<svg onload=alert(4)>")
        REFERENCES public.users (id)
);
COMMENT ON CONSTRAINT "fk<img src=y onerror=alert(5)>" ON public."t<img src=x onerror=alert(3)>"
    IS '<script>alert(6)</script><b onmouseover=alert(6)>hover</b>';
INSERT INTO public."t<img src=x onerror=alert(3)>" ("c<svg onload=alert(4)>") VALUES (1), (2);

-- A table whose trigger refuses every insert with an HTML message: the test user cannot fill it.
CREATE TABLE public.audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES public.users (id),
    entry text NOT NULL
);
CREATE FUNCTION public.audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '<img src=x onerror=alert(7)>' USING DETAIL = '<script>alert(8)</script>';
END $$;
CREATE TRIGGER "trg<svg onload=alert(9)>" BEFORE INSERT ON public.audit_log
    FOR EACH ROW EXECUTE FUNCTION public.audit_refuse();
-- The same on the payload-named table: the test-user verdict then names it.
CREATE TRIGGER refuse BEFORE INSERT ON public."t<img src=x onerror=alert(3)>"
    FOR EACH ROW EXECUTE FUNCTION public.audit_refuse();
-- A CHECK whose failure message names a payload constraint: the test user cannot satisfy it.
CREATE TABLE public.profiles (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES public.users (id),
    bio text NOT NULL CONSTRAINT "bio<img src=x onerror=alert(10)>" CHECK (bio = 'never' AND bio <> 'never')
);
