-- A parent table whose name is a reserved word, with children named by reserved words, in another
-- schema with a space and mixed case, and one second-level child.
CREATE SCHEMA "Order Data";

CREATE TABLE public."user" (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO public."user" VALUES (1, 'one'), (2, 'two');

CREATE TABLE public."group" (
    id int PRIMARY KEY,
    "user" int NOT NULL CONSTRAINT "group.user → user" REFERENCES public."user" (id)
);
INSERT INTO public."group" VALUES (10, 1), (20, 2);

CREATE TABLE "Order Data"."Line Item" (
    id int PRIMARY KEY,
    "User ID" int NOT NULL REFERENCES public."user" (id)
);
INSERT INTO "Order Data"."Line Item" VALUES (100, 1), (200, 2);

CREATE TABLE public."select" (
    id int PRIMARY KEY,
    "group" int NOT NULL REFERENCES public."group" (id)
);
INSERT INTO public."select" VALUES (1000, 10), (2000, 20);
