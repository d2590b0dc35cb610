-- 0007: the names each model also answers to, as instances report them (the CLI resolves an
-- alias to the model's own name, which prices, usage and allow-lists use).
ALTER TABLE models ADD COLUMN aliases text[] NOT NULL DEFAULT '{}';
