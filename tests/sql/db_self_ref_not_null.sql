-- A parent whose self-reference is NOT NULL (every node points at its root, a root at itself).
CREATE TABLE public.nodes (
    id int PRIMARY KEY,
    root_id int NOT NULL CONSTRAINT nodes_root_fk REFERENCES public.nodes (id)
);
CREATE TABLE public.node_tags (
    id int PRIMARY KEY,
    node_id int NOT NULL REFERENCES public.nodes (id)
);
INSERT INTO public.nodes VALUES (1, 1), (2, 1);
INSERT INTO public.node_tags VALUES (1, 2);
