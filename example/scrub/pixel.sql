-- Scrub step for a copy of production's data (inv db.refresh, review_seed: backup:...).
-- Runs in one psql session with ON_ERROR_STOP after the restore and migrations,
-- before the environment serves again. Pixel keeps one personal datum: the paths
-- and tokens its visitors sent. Replace them; keep the row count and dates.
BEGIN;
UPDATE notes_visit SET path = 'scrubbed-' || id;
COMMIT;
