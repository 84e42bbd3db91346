-- 0004_last_error: why a job failed, for operators (issue 14, managing jobs).
--
-- The error text of the job's last nack (or "lease expired"), as the replicated
-- state machine keeps it; NULL when it never failed. A dead job keeps its row,
-- state and last error until it is retried, cancelled or purged; cancelled
-- jobs leave the table like acked ones.

ALTER TABLE jobs ADD COLUMN last_error TEXT;

COMMENT ON COLUMN jobs.last_error IS
    'The error of the job''s last nack (or "lease expired"); NULL when it never failed.';
