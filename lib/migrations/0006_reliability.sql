-- Issue 11 (reliability): reclaimed reservations and interrupted cron runs.

-- `abandoned`: a reservation never settled (its function was killed) and reclaimed after
-- RESERVATION_TIMEOUT_S; its unit was given back to the month's counter (lib.generation.quota).
ALTER TABLE generations DROP CONSTRAINT generations_status_check;
ALTER TABLE generations ADD CONSTRAINT generations_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'abandoned'));

-- `interrupted`: the run lost its lock connection (or was cut off) before it could finish; its
-- work may be partial and another run may have taken over (lib.jobs.cron).
ALTER TABLE cron_runs DROP CONSTRAINT cron_runs_status_check;
ALTER TABLE cron_runs ADD CONSTRAINT cron_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'interrupted'));
