-- Issue 12 (streaming): a stream the client abandoned is settled as `cancelled`, with the
-- tokens the provider reported (or counted from the text) up to then. Keeps 0006's 'abandoned'.
ALTER TABLE generations DROP CONSTRAINT generations_status_check,
    ADD CONSTRAINT generations_status_check
        CHECK (status IN ('pending', 'succeeded', 'failed', 'abandoned', 'cancelled'));
