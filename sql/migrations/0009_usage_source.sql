-- 0009: who counted a usage event's tokens when ModelGate's own engine did not (an upstream
-- model): 'upstream' (the server's usage, at most the reservation), 'counted' (ModelGate
-- counted them: the model's tokenizer, or one per streamed chunk), 'bound' (neither: the
-- reservation's upper bound). NULL: counted by ModelGate's own engine.
ALTER TABLE usage_events ADD COLUMN usage_source text CHECK (usage_source IN ('upstream', 'counted', 'bound'));
