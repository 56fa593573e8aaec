-- What queries need to know which rollup buckets they may trust, and the
-- progress of a full rebuild (server/metrics/rollup.c, docs/database.md):
--   * tb_metric_rollup_progress: one row, moved by every transaction of a
--     full rebuild (which re-aggregates raw retention in ascending time):
--     every 5-minute bucket before rebuilt_before is rebuilt. UNLOGGED like
--     the ingest log and tb_metric_ingest_log_intact, so that the crash
--     recovery that empties those empties it too;
--   * mon_metric_rollup_valid_before(raw cutoff): the first instant from
--     which the rollups may be behind the raw points. Queries read rollup
--     buckets that end at or before it and raw points from it on.

CREATE UNLOGGED TABLE tb_metric_rollup_progress (
  id                  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  rebuilt_before      TIMESTAMPTZ NOT NULL
);

-- With the log whole (a row in tb_metric_ingest_log_intact): the earliest
-- point of the batches above the watermark (their buckets are not yet
-- re-aggregated), or infinity. Without it (a full rebuild is due or under
-- way): raw retention's first bucket p_raw_cutoff, or the progress of the
-- rebuild past it, and never beyond the batches above the watermark.
-- Reads one row of each state table and the log above the watermark (its
-- primary key): a few rows. STABLE: one answer per statement.
CREATE FUNCTION mon_metric_rollup_valid_before(p_raw_cutoff timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE
AS $fn$
  SELECT least(
    CASE WHEN EXISTS (SELECT 1 FROM tb_metric_ingest_log_intact) THEN timestamptz 'infinity'
         ELSE greatest(p_raw_cutoff, (SELECT rebuilt_before FROM tb_metric_rollup_progress)) END,
    (SELECT min(l.min_time) FROM tb_metric_ingest_log l
      WHERE l.seq > (SELECT watermark_seq FROM tb_metric_rollup_state)))
$fn$;
