-- Time partitioning without TimescaleDB: functions that create the range
-- partitions of a table ahead of time and drop old ones. The migration that
-- creates the partitioned tables calls mon_ensure_partitions once; the
-- server's maintenance job calls it again regularly. Each parent has a
-- DEFAULT partition, so a row outside every partition (a late or backfilled
-- point) is kept rather than refused; the next mon_ensure_partitions call
-- moves such rows into partitions of their own.
--
-- Where pg_partman manages a table (registered in partman.part_config),
-- mon_ensure_partitions hands over to partman.run_maintenance instead.

-- Start of the partition holding p_ts. Day- and week-sized intervals are
-- aligned on 2000-01-03 00:00 UTC (a Monday), month-sized ones on calendar
-- months in UTC counted from January 2000.
CREATE FUNCTION mon_partition_start(p_ts timestamptz, p_interval interval)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT
AS $fn$
DECLARE
  v_months integer := extract(year FROM p_interval)::integer * 12 + extract(month FROM p_interval)::integer;
  v_utc timestamp := p_ts AT TIME ZONE 'UTC';
  v_index integer;
BEGIN
  IF v_months > 0 THEN
    IF p_interval <> make_interval(months => v_months) THEN
      RAISE EXCEPTION 'partition interval % mixes months with days or hours', p_interval;
    END IF;
    v_index := (extract(year FROM v_utc)::integer - 2000) * 12 + extract(month FROM v_utc)::integer - 1;
    v_index := v_index - ((v_index % v_months) + v_months) % v_months;
    RETURN make_timestamptz(2000 + floor(v_index / 12.0)::integer, ((v_index % 12) + 12) % 12 + 1, 1, 0, 0, 0, 'UTC');
  END IF;
  IF p_interval <= interval '0' THEN
    RAISE EXCEPTION 'partition interval % must be positive', p_interval;
  END IF;
  RETURN date_bin(p_interval, p_ts, TIMESTAMPTZ '2000-01-03 00:00:00+00');
END
$fn$;

-- Creates the partition [p_start, p_start + p_interval) of p_table unless a
-- table of that name exists or the range overlaps an existing partition.
-- Rows of that range parked in the default partition are moved into it.
-- Returns 1 when a partition was created, else 0.
CREATE FUNCTION mon_create_partition(p_table regclass, p_start timestamptz, p_interval interval)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_schema text;
  v_name text;
  v_key text;
  v_default regclass;
  v_end timestamptz := p_start + p_interval;
  v_part text;
  v_has_rows boolean := false;
BEGIN
  SELECT n.nspname, c.relname INTO v_schema, v_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = p_table;
  SELECT a.attname, nullif(pt.partdefid, 0)::regclass INTO v_key, v_default
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
   WHERE pt.partrelid = p_table;
  IF v_key IS NULL THEN
    RAISE EXCEPTION 'table % is not partitioned', p_table;
  END IF;

  v_part := v_name || '_p' || to_char(p_start AT TIME ZONE 'UTC',
    CASE WHEN p_interval < interval '1 day' THEN 'YYYYMMDD"_"HH24MI' ELSE 'YYYYMMDD' END);
  IF to_regclass(format('%I.%I', v_schema, v_part)) IS NOT NULL THEN
    RETURN 0;
  END IF;

  IF v_default IS NOT NULL THEN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= $1 AND %I < $2)', v_default, v_key, v_key)
      INTO v_has_rows USING p_start, v_end;
  END IF;
  IF v_has_rows THEN
    EXECUTE format('CREATE TEMP TABLE mon_parked_rows (LIKE %s) ON COMMIT DROP', p_table);
    EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= $1 AND %I < $2 RETURNING *) '
                   'INSERT INTO mon_parked_rows SELECT * FROM moved', v_default, v_key, v_key)
      USING p_start, v_end;
  END IF;

  BEGIN
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   v_schema, v_part, p_table, p_start, v_end);
  EXCEPTION WHEN invalid_object_definition THEN
    -- overlaps a partition made earlier with another interval: keep that one
    RAISE NOTICE 'partition % of % overlaps an existing partition; skipped', v_part, p_table;
    IF v_has_rows THEN
      EXECUTE format('INSERT INTO %s SELECT * FROM mon_parked_rows', p_table);
      DROP TABLE mon_parked_rows;
    END IF;
    RETURN 0;
  END;

  IF v_has_rows THEN
    EXECUTE format('INSERT INTO %s SELECT * FROM mon_parked_rows', p_table);
    DROP TABLE mon_parked_rows;
  END IF;
  RETURN 1;
END
$fn$;

-- Makes sure p_table has partitions for the current period and p_ahead
-- periods after it, and for every period of rows parked in its default
-- partition. Returns how many partitions were created. Safe to call often
-- and from several replicas (creating a partition locks the parent briefly).
CREATE FUNCTION mon_ensure_partitions(p_table regclass, p_interval interval, p_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_qualified text;
  v_key text;
  v_default regclass;
  v_start timestamptz;
  v_created integer := 0;
  v_ts timestamptz;
BEGIN
  SELECT format('%s.%s', n.nspname, c.relname) INTO v_qualified
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = p_table;
  IF to_regclass('partman.part_config') IS NOT NULL THEN
    IF EXISTS (SELECT 1 FROM partman.part_config WHERE parent_table = v_qualified) THEN
      EXECUTE 'SELECT partman.run_maintenance($1)' USING v_qualified;
      RETURN 0;
    END IF;
  END IF;

  SELECT a.attname, nullif(pt.partdefid, 0)::regclass INTO v_key, v_default
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
   WHERE pt.partrelid = p_table;
  IF v_key IS NULL THEN
    RAISE EXCEPTION 'table % is not partitioned', p_table;
  END IF;

  v_start := mon_partition_start(now(), p_interval);
  FOR i IN 0 .. greatest(p_ahead, 0) LOOP
    v_created := v_created + mon_create_partition(p_table, v_start + p_interval * i, p_interval);
  END LOOP;

  IF v_default IS NOT NULL THEN
    FOR v_ts IN EXECUTE format('SELECT DISTINCT mon_partition_start(%I, $1) FROM %s', v_key, v_default)
                USING p_interval LOOP
      v_created := v_created + mon_create_partition(p_table, v_ts, p_interval);
    END LOOP;
  END IF;
  RETURN v_created;
END
$fn$;

-- Drops the partitions of p_table whose whole range lies before p_cutoff
-- (retention). The default partition is never dropped. Returns how many
-- partitions were dropped.
CREATE FUNCTION mon_drop_partitions_before(p_table regclass, p_cutoff timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_part record;
  v_dropped integer := 0;
BEGIN
  FOR v_part IN
    SELECT c.oid::regclass AS part,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz AS upper_bound
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_table
       AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
  LOOP
    IF v_part.upper_bound IS NOT NULL AND v_part.upper_bound <= p_cutoff THEN
      EXECUTE format('DROP TABLE %s', v_part.part);
      v_dropped := v_dropped + 1;
    END IF;
  END LOOP;
  RETURN v_dropped;
END
$fn$;
