using System.Globalization;
using Npgsql;

namespace Bursar.Storage.PostgreSql;

/// <summary>
/// The schema as numbered migrations, applied in order at start (or by <c>bursar db migrate</c>) and recorded in
/// <c>schema_migrations</c>. Every instance may start at once: an advisory lock lets one apply them while the others wait.
/// A migration once released is never edited; a change is a new one. Money is <c>numeric</c>, never floating point.
/// </summary>
public static class PostgresMigrations
{
    /// <summary>Serialises migrations across gateway instances (an arbitrary constant: "Bursar" in ASCII).</summary>
    private const long LockKey = 0x42_75_72_73_61_72;

    /// <summary>Rollup rows are updated in place by every batch: free space on each page (fillfactor) keeps those updates HOT (no index churn).</summary>
    private static string RollupTable(string name) => $"""
        CREATE TABLE {name} (
          dim smallint NOT NULL, bucket bigint NOT NULL, value text NOT NULL,
          calls bigint NOT NULL, unpriced bigint NOT NULL, errors bigint NOT NULL, cache_hits bigint NOT NULL, routed bigint NOT NULL,
          truncated bigint NOT NULL, input bigint NOT NULL, cache_read bigint NOT NULL, cache_write bigint NOT NULL, output bigint NOT NULL,
          estimated bigint NOT NULL, latency_ms double precision NOT NULL,
          cost numeric NOT NULL, s_routing numeric NOT NULL, s_response_cache numeric NOT NULL, s_prompt_cache numeric NOT NULL,
          s_batch numeric NOT NULL, s_compaction numeric NOT NULL, s_output_cap numeric NOT NULL,
          PRIMARY KEY (dim, bucket, value)) WITH (fillfactor = 70);
        """;

    /// <summary>
    /// <see cref="Bursar.Core.Reporting.RollupTotals.IsUncostedCacheCall"/> in SQL: a call with cache tokens and no recorded prompt-cache saving.
    /// The partial index of migration 8 and the cache report's read of those rows share it word for word.
    /// </summary>
    internal const string UncostedCacheWhere = "saving_prompt_cache = 0 AND (cache_read_tokens <> 0 OR cache_write_5m_tokens <> 0 OR cache_write_1h_tokens <> 0)";

    /// <summary>A ledger column's value as <see cref="Bursar.Core.Reporting.LedgerRollup.Value"/> names its group, per stored dimension.</summary>
    private static readonly (int Dim, string Value)[] RollupDimensionValues =
    [
        (13, "'all'"), (0, "COALESCE(feature, '(none)')"), (1, "COALESCE(team, '(none)')"), (2, "COALESCE(customer, '(none)')"),
        (3, "COALESCE(served_model, '(none)')"), (4, "COALESCE(requested_model, '(none)')"), (5, "COALESCE(task, '(none)')"),
        (6, "COALESCE(template, '(none)')"), (7, "COALESCE(key_id, '(none)')"), (8, "COALESCE(provider, '(none)')"), (9, "outcome"),
        (10, "COALESCE(route, '(none)')"), (11, "COALESCE(feature, '(none)') || ' / ' || COALESCE(served_model, '(none)')"),
    ];

    /// <summary>
    /// Migration 8's backfill: the new rollup counts for the ledger rows already written, computed in SQL (the rollups' other columns are
    /// already right, so only these two are set). The rows that count at all (volatile prefix, or cache tokens without a saving) are
    /// copied once into a temporary table; each dimension's hourly and daily rows are then updated from it.
    /// </summary>
    private static string BackfillCacheCounts()
    {
        const string Volatile = "volatile_prefix IS NOT NULL AND left(volatile_prefix, 6) <> 'moved:'";
        var sb = new System.Text.StringBuilder($"""
            CREATE TEMP TABLE rollup_backfill ON COMMIT DROP AS
              SELECT (floor(ts_unix_ms / 3600000.0) * 3600)::bigint AS hour, feature, team, customer, served_model, requested_model, task, template,
                key_id, provider, outcome, route, ({Volatile})::int AS v, ({UncostedCacheWhere})::int AS u
              FROM ledger WHERE ({Volatile}) OR ({UncostedCacheWhere});

            """);
        foreach (var (dim, value) in RollupDimensionValues)
            foreach (var (table, bucket) in new[] { ("rollup_hour", "hour"), ("rollup_day", "(floor(hour / 86400.0) * 86400)::bigint") })
                sb.Append(CultureInfo.InvariantCulture, $"""
                    UPDATE {table} r SET volatile_calls = s.v, uncosted_cache_calls = s.u
                    FROM (SELECT {value} AS value, {bucket} AS bucket, SUM(v)::bigint AS v, SUM(u)::bigint AS u FROM rollup_backfill GROUP BY 1, 2) s
                    WHERE r.dim = {dim} AND r.bucket = s.bucket AND r.value = s.value;

                    """);
        return sb.ToString();
    }

    /// <summary>Every migration, oldest first.</summary>
    public static readonly IReadOnlyList<(int Version, string Name, string Sql)> All =
    [
        (1, "ledger, keys, prices, budgets, rate limits, routes, report rollups", $"""
            CREATE TABLE ledger (
              id text PRIMARY KEY,
              ts timestamptz NOT NULL,
              ts_unix_ms bigint NOT NULL,
              key_id text, team text, customer text, feature text, route text, task text, template text, run_id text,
              dialect text NOT NULL, provider text, requested_model text, served_model text,
              streamed boolean NOT NULL, batch boolean NOT NULL,
              input_tokens bigint NOT NULL, cache_read_tokens bigint NOT NULL, cache_write_5m_tokens bigint NOT NULL,
              cache_write_1h_tokens bigint NOT NULL, output_tokens bigint NOT NULL, reasoning_tokens bigint NOT NULL,
              priced boolean NOT NULL, cost numeric, counterfactual_cost numeric,
              saving_routing numeric NOT NULL, saving_response_cache numeric NOT NULL, saving_prompt_cache numeric NOT NULL,
              saving_batch numeric NOT NULL, saving_compaction numeric NOT NULL, saving_output_cap numeric NOT NULL,
              latency_ms double precision NOT NULL, ttft_ms double precision,
              outcome text NOT NULL, status_code integer NOT NULL, error_type text, error_message text, finish_reason text, upstream_request_id text,
              routing_reason text, run_end_reason text, volatile_prefix text, reported_cost numeric, prefix_hash text,
              prefix_tokens bigint NOT NULL DEFAULT 0, usage_estimated boolean NOT NULL DEFAULT false
            );
            CREATE INDEX ledger_ts ON ledger (ts_unix_ms);
            CREATE INDEX ledger_customer_ts ON ledger (customer, ts_unix_ms);
            CREATE INDEX ledger_team_ts ON ledger (team, ts_unix_ms);
            CREATE INDEX ledger_route_ts ON ledger (route, ts_unix_ms) WHERE route IS NOT NULL;
            CREATE TABLE keys (
              id text PRIMARY KEY, hash text NOT NULL UNIQUE, prefix text NOT NULL, name text, team text, customer text, feature text,
              allowed_tags text, created_at timestamptz NOT NULL, revoked_at timestamptz, downgrade_model text, unpriced_policy text, allowed_customers text
            );
            CREATE INDEX keys_prefix ON keys (prefix);
            CREATE TABLE prices (model text PRIMARY KEY, source text NOT NULL, entry text NOT NULL, imported_at timestamptz NOT NULL);
            CREATE TABLE budgets (
              id text PRIMARY KEY, scope text NOT NULL, value text, period text NOT NULL, limit_usd numeric NOT NULL, soft_fraction numeric NOT NULL,
              time_zone text NOT NULL, reset_at timestamptz
            );
            CREATE TABLE rate_limits (scope text NOT NULL, value text NOT NULL, rpm integer, tpm bigint, PRIMARY KEY (scope, value));
            CREATE TABLE routes (name text PRIMARY KEY, priority integer NOT NULL, policy text NOT NULL);
            {RollupTable("rollup_hour")}
            {RollupTable("rollup_day")}
            CREATE TABLE rollup_run_ids (run_id text PRIMARY KEY);
            CREATE TABLE rollup_run_day (day bigint NOT NULL, feature text NOT NULL, runs bigint NOT NULL, ended bigint NOT NULL,
              calls bigint NOT NULL, cost numeric NOT NULL, PRIMARY KEY (day, feature)) WITH (fillfactor = 70);
            """),
        (2, "batch lines on the ledger (batch_id, custom_id); provider batches, their files and deferred jobs", """
            ALTER TABLE ledger ADD COLUMN batch_id text;
            ALTER TABLE ledger ADD COLUMN custom_id text;
            CREATE INDEX ledger_batch ON ledger (batch_id) WHERE batch_id IS NOT NULL;
            CREATE TABLE batches (
              id text PRIMARY KEY, dialect text NOT NULL, deployment text NOT NULL, upstream_id text, state text NOT NULL,
              key_id text NOT NULL, team text, customer text, feature text, task text, template text, route text,
              model text, lines integer NOT NULL, worst_usd numeric NOT NULL, manifest text NOT NULL, input_file_id text,
              created_unix_ms bigint NOT NULL, updated_unix_ms bigint NOT NULL, collected boolean NOT NULL DEFAULT false, object text, error text, jobs boolean NOT NULL DEFAULT false
            );
            CREATE INDEX batches_open ON batches (collected, state);
            CREATE TABLE batch_files (
              id text PRIMARY KEY, deployment text NOT NULL, upstream_id text NOT NULL, key_id text NOT NULL, purpose text NOT NULL,
              filename text, bytes bigint NOT NULL, lines integer NOT NULL, model text, worst_usd numeric NOT NULL, spool text,
              created_unix_ms bigint NOT NULL, deleted boolean NOT NULL DEFAULT false
            );
            CREATE UNIQUE INDEX batch_files_upstream ON batch_files (deployment, upstream_id);
            CREATE TABLE jobs (
              id text PRIMARY KEY, key_id text NOT NULL, team text, customer text, feature text, task text, template text, route text,
              dialect text NOT NULL, deployment text NOT NULL, model text NOT NULL, requested_model text, body bytea NOT NULL,
              created_unix_ms bigint NOT NULL, deadline_unix_ms bigint NOT NULL, worst_usd numeric NOT NULL, state text NOT NULL, batch_id text,
              status_code integer NOT NULL DEFAULT 0, result bytea, error text, updated_unix_ms bigint NOT NULL
            );
            CREATE INDEX jobs_queue ON jobs (state, deployment, model, created_unix_ms);
            CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;
            """),
        (3, "ledger: tokens the context lever removed and its strategy", """
            ALTER TABLE ledger ADD COLUMN IF NOT EXISTS context_tokens_removed bigint NOT NULL DEFAULT 0;
            ALTER TABLE ledger ADD COLUMN IF NOT EXISTS context_strategy text;
            """),
        (6, "report rollups: calls at the batch rate (the batch share per route); counted from this migration on", """
            ALTER TABLE rollup_hour ADD COLUMN IF NOT EXISTS batched bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_day ADD COLUMN IF NOT EXISTS batched bigint NOT NULL DEFAULT 0;
            """),
        (7, "report rollups: calls the context lever shortened and the input tokens it removed (per route); counted from this migration on", """
            ALTER TABLE rollup_hour ADD COLUMN IF NOT EXISTS context_calls bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_hour ADD COLUMN IF NOT EXISTS context_removed bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_day ADD COLUMN IF NOT EXISTS context_calls bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_day ADD COLUMN IF NOT EXISTS context_removed bigint NOT NULL DEFAULT 0;
            """),
        (8, "report rollups: calls with a volatile prefix and calls with cache tokens but no recorded saving (the cache report per route, served by rollups); backfilled from the ledger; a partial index on the latter", $"""
            ALTER TABLE rollup_hour ADD COLUMN IF NOT EXISTS volatile_calls bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_hour ADD COLUMN IF NOT EXISTS uncosted_cache_calls bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_day ADD COLUMN IF NOT EXISTS volatile_calls bigint NOT NULL DEFAULT 0;
            ALTER TABLE rollup_day ADD COLUMN IF NOT EXISTS uncosted_cache_calls bigint NOT NULL DEFAULT 0;
            CREATE INDEX IF NOT EXISTS ledger_uncosted_cache ON ledger (ts_unix_ms) WHERE {UncostedCacheWhere};
            {BackfillCacheCounts()}
            """),
    ];

    /// <summary>The newest schema version this build knows.</summary>
    public static int Latest => All.Max(m => m.Version);

    /// <summary>Applies the migrations the database lacks, in one transaction; returns the versions applied now (empty when up to date).</summary>
    public static IReadOnlyList<int> Apply(NpgsqlDataSource data, TimeProvider time)
    {
        using var c = data.OpenConnection();
        using var tx = c.BeginTransaction();
        Exec(c, tx, $"SELECT pg_advisory_xact_lock({LockKey.ToString(CultureInfo.InvariantCulture)})");
        Exec(c, tx, "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)");
        var applied = new HashSet<int>();
        using (var read = new NpgsqlCommand("SELECT version FROM schema_migrations", c, tx))
        using (var r = read.ExecuteReader())
            while (r.Read()) applied.Add(r.GetInt32(0));
        if (applied.Count > 0 && applied.Max() > Latest)
            throw new InvalidOperationException($"The PostgreSQL database is at schema version {applied.Max()}, newer than this Bursar knows ({Latest}): upgrade Bursar before pointing it at this database.");
        var now = new List<int>();
        foreach (var (version, name, sql) in All.OrderBy(m => m.Version))
        {
            if (applied.Contains(version)) continue;
            Exec(c, tx, sql);
            using var mark = new NpgsqlCommand("INSERT INTO schema_migrations (version, name, applied_at) VALUES (@v, @n, @t)", c, tx);
            mark.Parameters.AddWithValue("v", version);
            mark.Parameters.AddWithValue("n", name);
            mark.Parameters.AddWithValue("t", time.GetUtcNow());
            mark.ExecuteNonQuery();
            now.Add(version);
        }
        tx.Commit();
        return now;
    }

    /// <summary>The versions the database has, oldest first.</summary>
    public static IReadOnlyList<int> Applied(NpgsqlDataSource data)
    {
        using var c = data.OpenConnection();
        using var cmd = new NpgsqlCommand("SELECT version FROM schema_migrations ORDER BY version", c);
        using var r = cmd.ExecuteReader();
        var list = new List<int>();
        while (r.Read()) list.Add(r.GetInt32(0));
        return list;
    }

    private static void Exec(NpgsqlConnection c, NpgsqlTransaction tx, string sql)
    {
        using var cmd = new NpgsqlCommand(sql, c, tx);
        cmd.ExecuteNonQuery();
    }
}
