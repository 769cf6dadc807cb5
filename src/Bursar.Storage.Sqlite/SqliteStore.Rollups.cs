using System.Globalization;
using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Core.Usage;
using Microsoft.Data.Sqlite;

namespace Bursar.Storage.Sqlite;

/// <summary>
/// Incremental rollups: every ledger write adds its records' totals to hourly and daily buckets per dimension in the same
/// transaction, so a report over millions of calls reads a few thousand rollup rows. Money stays exact decimal text,
/// added with a <c>dec_add</c> SQL function.
/// </summary>
public sealed partial class SqliteStore
{
    private const int RollupVersion = 6;

    /// <summary>The rollup tables' count columns and what each holds, in the order they are written and read back (<see cref="Totals"/>).</summary>
    private static readonly (string Column, Func<RollupTotals, long> Value)[] RollupCountColumns =
    [
        ("calls", t => t.Calls), ("unpriced", t => t.UnpricedCalls), ("errors", t => t.ErrorCalls), ("cache_hits", t => t.ResponseCacheHits),
        ("routed", t => t.RoutedCalls), ("truncated", t => t.TruncatedCalls), ("input", t => t.InputTokens), ("cache_read", t => t.CacheReadTokens),
        ("cache_write", t => t.CacheWriteTokens), ("output", t => t.OutputTokens), ("estimated", t => t.EstimatedCalls), ("batched", t => t.BatchCalls),
        ("context_calls", t => t.ContextCalls), ("context_removed", t => t.ContextTokensRemoved),
        ("volatile_calls", t => t.VolatilePrefixCalls), ("uncosted_cache_calls", t => t.UncostedCacheCalls),
    ];

    /// <summary>The money columns (exact decimal text), in the same order as <see cref="Totals"/> reads them.</summary>
    private static readonly (string Column, Func<RollupTotals, decimal> Value)[] RollupMoneyColumns =
    [
        ("cost", t => t.Cost), ("s_routing", t => t.SavingRouting), ("s_response_cache", t => t.SavingResponseCache), ("s_prompt_cache", t => t.SavingPromptCache),
        ("s_batch", t => t.SavingBatch), ("s_compaction", t => t.SavingCompaction), ("s_output_cap", t => t.SavingOutputCap),
    ];

    private static readonly string[] RollupCounts = RollupCountColumns.Select(c => c.Column).ToArray();
    private static readonly string[] RollupMoney = RollupMoneyColumns.Select(c => c.Column).ToArray();

    /// <summary>The upsert of one rollup row per table, its values in the order of <see cref="RollupCounts"/>, latency, <see cref="RollupMoney"/> (as bound in <c>UpdateRollups</c>).</summary>
    private static readonly Dictionary<string, string> RollupUpsertSql = new[] { "rollup_hour", "rollup_day" }.ToDictionary(table => table, table =>
    {
        var all = RollupCounts.Append("latency_ms").Concat(RollupMoney).ToArray();
        return $"""
            INSERT INTO {table} (dim, bucket, value, {string.Join(',', all)}) VALUES ({string.Join(',', Enumerable.Range(1, all.Length + 3).Select(i => "?" + i.ToString(CultureInfo.InvariantCulture)))})
            ON CONFLICT(dim, bucket, value) DO UPDATE SET
            {string.Join(", ", RollupCounts.Append("latency_ms").Select(x => $"{x} = {x} + excluded.{x}").Concat(RollupMoney.Select(x => $"{x} = dec_add({x}, excluded.{x})")))}
            """;
    });

    private static RollupTotals Totals(long[] n, double latency, decimal[] m) => new()
    {
        Calls = n[0], UnpricedCalls = n[1], ErrorCalls = n[2], ResponseCacheHits = n[3], RoutedCalls = n[4], TruncatedCalls = n[5],
        InputTokens = n[6], CacheReadTokens = n[7], CacheWriteTokens = n[8], OutputTokens = n[9], EstimatedCalls = n[10], BatchCalls = n[11], ContextCalls = n[12], ContextTokensRemoved = n[13],
        VolatilePrefixCalls = n[14], UncostedCacheCalls = n[15], LatencyMsSum = latency,
        Cost = m[0], SavingRouting = m[1], SavingResponseCache = m[2], SavingPromptCache = m[3], SavingBatch = m[4], SavingCompaction = m[5], SavingOutputCap = m[6],
    };

    /// <summary>
    /// <see cref="RollupTotals.IsUncostedCacheCall"/> in SQL, word for word in the partial index and the query that reads it (SQLite uses
    /// a partial index only for a query whose WHERE holds its terms). Money is decimal text: any spelling of zero casts to 0, and no non-zero decimal does (the smallest, 1e-28, is a double).
    /// </summary>
    private const string UncostedCacheWhere = "CAST(saving_prompt_cache AS REAL) = 0 AND (cache_read_tokens <> 0 OR cache_write_5m_tokens <> 0 OR cache_write_1h_tokens <> 0)";

    public Task<IReadOnlyList<UncostedCacheCall>> ReadUncostedCacheCallsAsync(DateTimeOffset from, DateTimeOffset to, int limit, CancellationToken cancellationToken)
    {
        IReadOnlyList<UncostedCacheCall> rows = Query($"""
            SELECT feature, served_model, requested_model, batch, input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens
            FROM ledger INDEXED BY ledger_uncosted_cache WHERE {UncostedCacheWhere} AND ts_unix_ms >= $from AND ts_unix_ms < $to ORDER BY ts_unix_ms LIMIT $limit
            """,
            r => new UncostedCacheCall(r.IsDBNull(0) ? null : r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2), r.GetInt64(3) != 0,
                new TokenUsage(r.GetInt64(4), r.GetInt64(5), r.GetInt64(6), r.GetInt64(7), r.GetInt64(8), r.GetInt64(9))),
            ("$from", from.ToUnixTimeMilliseconds()), ("$to", to.ToUnixTimeMilliseconds()), ("$limit", limit));
        return Task.FromResult(rows);
    }

    private void MigrateRollups(SqliteConnection c)
    {
        string Table(string name) => $"""
            CREATE TABLE IF NOT EXISTS {name} (dim INTEGER NOT NULL, bucket INTEGER NOT NULL, value TEXT NOT NULL,
              {string.Join(", ", RollupCounts.Select(x => x + " INTEGER NOT NULL"))}, latency_ms REAL NOT NULL,
              {string.Join(", ", RollupMoney.Select(x => x + " TEXT NOT NULL"))},
              PRIMARY KEY (dim, bucket, value)) WITHOUT ROWID;
            """;
        using var cmd = c.CreateCommand();
        cmd.CommandText = Table("rollup_hour") + Table("rollup_day") + """
            DROP TABLE IF EXISTS rollup_runs;
            CREATE TABLE IF NOT EXISTS rollup_run_ids (run_id TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS rollup_run_day (day INTEGER NOT NULL, feature TEXT NOT NULL, runs INTEGER NOT NULL, ended INTEGER NOT NULL,
              calls INTEGER NOT NULL, cost TEXT NOT NULL, PRIMARY KEY (day, feature)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            """;
        cmd.ExecuteNonQuery();
        // counts added after the first rollup layout: the version bump below rebuilds them from the ledger
        AddColumn(c, "rollup_hour", "estimated", "INTEGER NOT NULL DEFAULT 0");
        AddColumn(c, "rollup_day", "estimated", "INTEGER NOT NULL DEFAULT 0");
        AddColumn(c, "rollup_hour", "batched", "INTEGER NOT NULL DEFAULT 0");
        AddColumn(c, "rollup_day", "batched", "INTEGER NOT NULL DEFAULT 0");
        foreach (var table in new[] { "rollup_hour", "rollup_day" })
            foreach (var column in new[] { "context_calls", "context_removed", "volatile_calls", "uncosted_cache_calls" }) AddColumn(c, table, column, "INTEGER NOT NULL DEFAULT 0");
        // the calls the cache report costs from the ledger (cache tokens, no recorded saving): a partial index holds just these rows
        using (var uncosted = c.CreateCommand())
        {
            uncosted.CommandText = $"CREATE INDEX IF NOT EXISTS ledger_uncosted_cache ON ledger(ts_unix_ms) WHERE {UncostedCacheWhere}";
            uncosted.ExecuteNonQuery();
        }
        using var version = c.CreateCommand();
        version.CommandText = "SELECT value FROM meta WHERE name = 'rollup_version'";
        if (version.ExecuteScalar() is string v && int.Parse(v, CultureInfo.InvariantCulture) == RollupVersion) return;
        RebuildRollups(c);
    }

    /// <summary>Recomputes every rollup from the ledger (a store from before rollups, or a changed rollup layout).</summary>
    private void RebuildRollups(SqliteConnection c)
    {
        long total;
        using (var count = c.CreateCommand())
        {
            count.CommandText = "SELECT COUNT(*) FROM ledger";
            total = (long)count.ExecuteScalar()!;
        }
        if (total > 0) _progress($"Building report rollups from {total:N0} ledger rows in {Path} (once, on the first open after an upgrade)...");
        long done = 0;
        using var tx = c.BeginTransaction();
        using (var clear = c.CreateCommand())
        {
            clear.Transaction = tx;
            clear.CommandText = "DELETE FROM rollup_hour; DELETE FROM rollup_day; DELETE FROM rollup_run_ids; DELETE FROM rollup_run_day;";
            clear.ExecuteNonQuery();
        }
        long after = long.MinValue;
        while (true)
        {
            var page = new List<LedgerRecord>();
            using (var read = c.CreateCommand())
            {
                read.Transaction = tx;
                read.CommandText = $"SELECT rowid, {string.Join(',', LedgerColumns)} FROM ledger WHERE rowid > $after ORDER BY rowid LIMIT 50000";
                read.Parameters.AddWithValue("$after", after);
                using var r = read.ExecuteReader();
                while (r.Read())
                {
                    after = r.GetInt64(0);
                    page.Add(ReadLedger(r, 1));
                }
            }
            if (page.Count == 0) break;
            UpdateRollups(c, tx, page);
            done += page.Count;
            if (total >= 200_000 && done % 500_000 < page.Count) _progress($"  report rollups: {done:N0} / {total:N0} ledger rows");
        }
        using (var mark = c.CreateCommand())
        {
            mark.Transaction = tx;
            mark.CommandText = "INSERT INTO meta (name, value) VALUES ('rollup_version', $v) ON CONFLICT(name) DO UPDATE SET value = excluded.value";
            mark.Parameters.AddWithValue("$v", RollupVersion.ToString(CultureInfo.InvariantCulture));
            mark.ExecuteNonQuery();
        }
        tx.Commit();
    }

    private static void UpdateRollups(SqliteConnection c, SqliteTransaction tx, IReadOnlyList<LedgerRecord> records)
    {
        if (records.Count == 0) return;
        var hourly = LedgerRollup.Aggregate(records, LedgerRollup.Hour);
        foreach (var (table, deltas) in new[] { ("rollup_hour", hourly), ("rollup_day", LedgerRollup.Coarsen(hourly, LedgerRollup.Day)) })
        {
            // values bound straight through SQLite's C API (the store's second hot path after the ledger rows themselves)
            using var upsert = new RowBinder(c.Handle!, RollupUpsertSql[table]);
            foreach (var (key, t) in deltas)
            {
                upsert.Begin();
                upsert.Int((int)key.Dimension);
                upsert.Int(key.BucketStart);
                upsert.Text(key.Value);
                foreach (var (_, value) in RollupCountColumns) upsert.Int(value(t));
                upsert.Real(t.LatencyMsSum);
                foreach (var (_, value) in RollupMoneyColumns) upsert.Money(value(t));
                upsert.Execute();
            }
        }
        // runs: counted once, on the day and feature of the first call seen; calls, cost and ends on the day of each call
        using var newRun = c.CreateCommand();
        newRun.Transaction = tx;
        newRun.CommandText = "INSERT INTO rollup_run_ids (run_id) VALUES ($id) ON CONFLICT DO NOTHING";
        var id = newRun.Parameters.Add(new SqliteParameter("$id", null));
        var perDay = RunRollup.Fold(records, runId =>
        {
            id.Value = runId;
            return newRun.ExecuteNonQuery() == 1; // the run_ids table remembers runs across writes
        });
        if (perDay.Count == 0) return;
        using var runs = c.CreateCommand();
        runs.Transaction = tx;
        runs.CommandText = """
            INSERT INTO rollup_run_day (day, feature, runs, ended, calls, cost) VALUES ($day, $feature, $runs, $ended, $calls, $cost)
            ON CONFLICT(day, feature) DO UPDATE SET runs = runs + excluded.runs, ended = ended + excluded.ended, calls = calls + excluded.calls, cost = dec_add(cost, excluded.cost)
            """;
        var day = runs.Parameters.Add(new SqliteParameter("$day", null));
        var feature = runs.Parameters.Add(new SqliteParameter("$feature", null));
        var n = runs.Parameters.Add(new SqliteParameter("$runs", null));
        var ended = runs.Parameters.Add(new SqliteParameter("$ended", null));
        var calls = runs.Parameters.Add(new SqliteParameter("$calls", null));
        var cost = runs.Parameters.Add(new SqliteParameter("$cost", null));
        foreach (var ((d, f), t) in perDay)
        {
            day.Value = d;
            feature.Value = f;
            n.Value = t.Runs;
            ended.Value = t.Ended;
            calls.Value = t.Calls;
            cost.Value = Dec(t.Cost);
            runs.ExecuteNonQuery();
        }
    }

    /// <summary>
    /// Hourly rollups are kept this long (default 90 days); daily ones for ever. A window edge older than this is widened to the whole UTC day,
    /// so a report on last year answers at day resolution and the hourly table stays small however many customers or keys there are.
    /// </summary>
    public TimeSpan HourlyRollupRetention { get; init; } = TimeSpan.FromDays(90);

    /// <summary>Deletes hourly rollups older than <see cref="HourlyRollupRetention"/>; returns the rows removed.</summary>
    public int PruneHourlyRollups()
    {
        var cutoff = LedgerRollup.BucketOf(_time.GetUtcNow() - HourlyRollupRetention, LedgerRollup.Day);
        return NonQuery("DELETE FROM rollup_hour WHERE bucket < $cutoff", ("$cutoff", cutoff));
    }

    public Task<RollupSlice> SliceAsync(ReportDimension by, DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken)
    {
        var dim = by == ReportDimension.Day ? ReportDimension.All : by;
        // edges older than the hourly retention widen to whole days (their hours may have been pruned)
        var hourlyFrom = DateTimeOffset.FromUnixTimeSeconds(LedgerRollup.BucketOf(_time.GetUtcNow() - HourlyRollupRetention, LedgerRollup.Day));
        if (from < hourlyFrom) from = DateTimeOffset.FromUnixTimeSeconds(LedgerRollup.BucketOf(from, LedgerRollup.Day));
        if (to < hourlyFrom)
        {
            var day = LedgerRollup.BucketOf(to, LedgerRollup.Day);
            to = DateTimeOffset.FromUnixTimeSeconds(day == to.ToUnixTimeSeconds() ? day : day + LedgerRollup.Day);
        }
        var (fromHour, toHour, fromDay, toDay) = LedgerRollup.Split(from, to);
        var columns = string.Join(',', RollupCounts.Append("latency_ms").Concat(RollupMoney));
        var rows = Query($"""
            SELECT value, bucket, {columns} FROM rollup_day WHERE dim = $dim AND bucket >= $fromDay AND bucket < $toDay
            UNION ALL
            SELECT value, bucket, {columns} FROM rollup_hour WHERE dim = $dim AND ((bucket >= $fromHour AND bucket < MIN($fromDay, $toHour)) OR (bucket >= MAX($toDay, $fromHour) AND bucket < $toHour))
            """, r =>
            {
                var counts = new long[RollupCounts.Length];
                for (var i = 0; i < counts.Length; i++) counts[i] = r.GetInt64(2 + i);
                var money = new decimal[RollupMoney.Length];
                for (var i = 0; i < money.Length; i++) money[i] = ParseDec(r.GetString(3 + counts.Length + i));
                var day = DateOnly.FromDateTime(DateTimeOffset.FromUnixTimeSeconds(r.GetInt64(1)).UtcDateTime);
                return (r.GetString(0), day, Totals(counts, r.GetDouble(2 + counts.Length), money));
            },
            ("$dim", (int)dim), ("$fromDay", fromDay), ("$toDay", toDay), ("$fromHour", fromHour), ("$toHour", toHour));
        // hourly edge rows and daily rows of the same day fold into one (value, day) entry
        var merged = new Dictionary<(string, DateOnly), RollupTotals>();
        foreach (var (value, day, t) in rows)
        {
            if (merged.TryGetValue((value, day), out var sum)) sum.Add(t);
            else merged[(value, day)] = t;
        }
        return Task.FromResult(new RollupSlice(by, DateTimeOffset.FromUnixTimeSeconds(fromHour), DateTimeOffset.FromUnixTimeSeconds(toHour),
            merged.Select(kv => (kv.Key.Item1, kv.Key.Item2, kv.Value)).ToArray()));
    }

    public Task<IReadOnlyList<RunCostRow>> RunCostsAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken)
    {
        // whole UTC days: a run is counted on the day it started
        var fromDay = LedgerRollup.BucketOf(from, LedgerRollup.Day);
        var toDay = LedgerRollup.BucketOf(to, LedgerRollup.Day) + (to.ToUnixTimeSeconds() % LedgerRollup.Day == 0 ? 0 : LedgerRollup.Day);
        IReadOnlyList<RunCostRow> rows = Query("""
            SELECT feature, SUM(runs), SUM(ended), SUM(calls), dec_sum(cost) FROM rollup_run_day
            WHERE day >= $from AND day < $to GROUP BY feature HAVING SUM(runs) > 0
            """, r => new RunCostRow(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), ParseDec(r.GetString(4))),
            ("$from", fromDay), ("$to", toDay)).OrderByDescending(x => x.Cost).ToArray();
        return Task.FromResult(rows);
    }
}
