-- 0010: the endpoints of an upstream model as an instance last saw them (host:port, health,
-- requests outstanding and served, failures, mean latency), for 'modelgate model show'.
ALTER TABLE models ADD COLUMN endpoints jsonb;
