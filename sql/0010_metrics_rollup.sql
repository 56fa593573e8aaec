-- What the metric maintenance job (server/metrics/rollup.c) needs beyond
-- 0009:
--   * a sign that the ingest log is whole: tb_metric_ingest_log_intact;
--   * retention of a time-series table whichever way it is partitioned;
--   * bounded deletes of old rows parked in a DEFAULT partition.

-- One row, written by the rollup job once it has re-aggregated every bucket
-- within raw retention. The table is UNLOGGED like the ingest log, so the
-- crash recovery (or standby promotion) that empties the log empties this
-- table too: no row means batches may have been lost from the log, and the
-- next run re-aggregates everything instead of trusting the log. Gaps in
-- the sequence cannot tell this apart: a rolled back batch leaves one too.
CREATE UNLOGGED TABLE tb_metric_ingest_log_intact (
  id                  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  since               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Retention of p_table: drops its partitions (native or pg_partman) whose
-- whole range lies before p_cutoff, or the chunks of a TimescaleDB
-- hypertable older than p_cutoff. Returns how many were dropped.
CREATE FUNCTION mon_retention_drop_before(p_table regclass, p_cutoff timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_dropped integer := 0;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = p_table) THEN
    RETURN mon_drop_partitions_before(p_table, p_cutoff);
  END IF;
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    EXECUTE 'SELECT count(*)::integer FROM drop_chunks($1, older_than => $2)'
      INTO v_dropped USING p_table, p_cutoff;
  END IF;
  RETURN v_dropped;
END
$fn$;

-- Deletes at most p_limit rows older than p_cutoff from the DEFAULT
-- partition of p_table (rows that found no partition of their own; they
-- are few, since mon_ensure_partitions moves them out). Returns how many
-- were deleted; 0 when the table has no default partition.
CREATE FUNCTION mon_delete_default_before(p_table regclass, p_cutoff timestamptz, p_limit integer)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_key text;
  v_default regclass;
  v_deleted bigint := 0;
BEGIN
  SELECT a.attname, nullif(pt.partdefid, 0)::regclass INTO v_key, v_default
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
   WHERE pt.partrelid = p_table;
  IF v_default IS NULL THEN
    RETURN 0;
  END IF;
  EXECUTE format('WITH gone AS (DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE %I < $1 LIMIT $2))'
                 ' RETURNING 1) SELECT count(*) FROM gone', v_default, v_default, v_key)
    INTO v_deleted USING p_cutoff, p_limit;
  RETURN v_deleted;
END
$fn$;
