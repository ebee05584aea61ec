-- Issue 12: the provider's own request id on each generation (x-request-id from OpenAI,
-- request-id from Anthropic), so a support ticket can be traced to the provider; and the
-- `misconfigured` outcome (401/403, model not found, unsupported parameter: falls back).
ALTER TABLE generations ADD COLUMN provider_request_id text;

ALTER TABLE generations DROP CONSTRAINT generations_primary_outcome_check;
ALTER TABLE generations ADD CONSTRAINT generations_primary_outcome_check
    CHECK (primary_outcome IN ('succeeded', 'failed', 'misconfigured', 'rejected', 'skipped'));
