using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Core.Usage;
using Npgsql;

namespace Bursar.Storage.PostgreSql;

/// <summary>
/// Incremental rollups, as in the SQLite store: every ledger write adds its new records' totals to hourly and daily buckets per
/// dimension in the same transaction, so a report over millions of calls reads a few thousand rows. Each table is upserted in one
/// statement from arrays (<c>unnest</c>), its rows in key order, so concurrent writers from several gateway instances lock rows in
/// the same order and never deadlock. Money is added as <c>numeric</c>.
/// </summary>
public sealed partial class PostgresStore
{
    private static readonly string[] RollupCounts = ["calls", "unpriced", "errors", "cache_hits", "routed", "truncated", "input", "cache_read", "cache_write", "output", "estimated", "batched", "context_calls", "context_removed", "volatile_calls", "uncosted_cache_calls"];
    private static readonly string[] RollupMoney = ["cost", "s_routing", "s_response_cache", "s_prompt_cache", "s_batch", "s_compaction", "s_output_cap"];

    private static long[] Counts(RollupTotals t) =>
        [t.Calls, t.UnpricedCalls, t.ErrorCalls, t.ResponseCacheHits, t.RoutedCalls, t.TruncatedCalls, t.InputTokens, t.CacheReadTokens, t.CacheWriteTokens, t.OutputTokens, t.EstimatedCalls, t.BatchCalls, t.ContextCalls, t.ContextTokensRemoved, t.VolatilePrefixCalls, t.UncostedCacheCalls];

    private static decimal[] Money(RollupTotals t) =>
        [t.Cost, t.SavingRouting, t.SavingResponseCache, t.SavingPromptCache, t.SavingBatch, t.SavingCompaction, t.SavingOutputCap];

    private static RollupTotals Totals(long[] n, double latency, decimal[] m) => new()
    {
        Calls = n[0], UnpricedCalls = n[1], ErrorCalls = n[2], ResponseCacheHits = n[3], RoutedCalls = n[4], TruncatedCalls = n[5],
        InputTokens = n[6], CacheReadTokens = n[7], CacheWriteTokens = n[8], OutputTokens = n[9], EstimatedCalls = n[10], BatchCalls = n[11], ContextCalls = n[12], ContextTokensRemoved = n[13],
        VolatilePrefixCalls = n[14], UncostedCacheCalls = n[15], LatencyMsSum = latency,
        Cost = m[0], SavingRouting = m[1], SavingResponseCache = m[2], SavingPromptCache = m[3], SavingBatch = m[4], SavingCompaction = m[5], SavingOutputCap = m[6],
    };

    private static string RollupUpsert(string table) => $"""
        INSERT INTO {table} (dim, bucket, value, {string.Join(", ", RollupCounts)}, latency_ms, {string.Join(", ", RollupMoney)})
        SELECT * FROM unnest(@dim::smallint[], @bucket::bigint[], @value::text[], {string.Join(", ", RollupCounts.Select(x => $"@{x}::bigint[]"))},
          @latency_ms::float8[], {string.Join(", ", RollupMoney.Select(x => $"@{x}::numeric[]"))})
        ON CONFLICT (dim, bucket, value) DO UPDATE SET
        {string.Join(", ", RollupCounts.Append("latency_ms").Concat(RollupMoney).Select(x => $"{x} = {table}.{x} + excluded.{x}"))}
        """;

    private static readonly string HourUpsert = RollupUpsert("rollup_hour");
    private static readonly string DayUpsert = RollupUpsert("rollup_day");

    private static async Task UpdateRollupsAsync(NpgsqlConnection c, NpgsqlTransaction tx, IReadOnlyList<LedgerRecord> records, CancellationToken ct)
    {
        if (records.Count == 0) return;
        var hourly = LedgerRollup.Aggregate(records, LedgerRollup.Hour);
        foreach (var (sql, deltas) in new[] { (HourUpsert, hourly), (DayUpsert, LedgerRollup.Coarsen(hourly, LedgerRollup.Day)) })
        {
            var rows = deltas.Select(kv => (Key: kv.Key with { Value = Clean(kv.Key.Value) }, kv.Value))
                .OrderBy(x => (int)x.Key.Dimension).ThenBy(x => x.Key.BucketStart).ThenBy(x => x.Key.Value, StringComparer.Ordinal).ToArray();
            await using var cmd = new NpgsqlCommand(sql, c, tx);
            cmd.Parameters.AddWithValue("dim", rows.Select(x => (short)x.Key.Dimension).ToArray());
            cmd.Parameters.AddWithValue("bucket", rows.Select(x => x.Key.BucketStart).ToArray());
            cmd.Parameters.AddWithValue("value", rows.Select(x => x.Key.Value).ToArray());
            var counts = rows.Select(x => Counts(x.Value)).ToArray();
            for (var i = 0; i < RollupCounts.Length; i++) cmd.Parameters.AddWithValue(RollupCounts[i], counts.Select(n => n[i]).ToArray());
            cmd.Parameters.AddWithValue("latency_ms", rows.Select(x => x.Value.LatencyMsSum).ToArray());
            var money = rows.Select(x => Money(x.Value)).ToArray();
            for (var i = 0; i < RollupMoney.Length; i++) cmd.Parameters.AddWithValue(RollupMoney[i], money.Select(m => m[i]).ToArray());
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        // runs: counted once, on the day and feature of the first call seen anywhere (the run_ids table remembers runs across writes and instances)
        var runIds = records.Where(r => r.RunId is not null).Select(r => Clean(r.RunId!)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        if (runIds.Length == 0) return;
        var fresh = new HashSet<string>(StringComparer.Ordinal);
        await using (var newRuns = new NpgsqlCommand("INSERT INTO rollup_run_ids (run_id) SELECT unnest(@ids::text[]) ON CONFLICT DO NOTHING RETURNING run_id", c, tx))
        {
            newRuns.Parameters.AddWithValue("ids", runIds);
            await using var r = await newRuns.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false)) fresh.Add(r.GetString(0));
        }
        var perDay = RunRollup.Fold(records, runId => fresh.Remove(Clean(runId)))
            .OrderBy(kv => kv.Key.Day).ThenBy(kv => kv.Key.Feature, StringComparer.Ordinal).ToArray();
        if (perDay.Length == 0) return;
        await using var runs = new NpgsqlCommand("""
            INSERT INTO rollup_run_day (day, feature, runs, ended, calls, cost)
            SELECT * FROM unnest(@day::bigint[], @feature::text[], @runs::bigint[], @ended::bigint[], @calls::bigint[], @cost::numeric[])
            ON CONFLICT (day, feature) DO UPDATE SET runs = rollup_run_day.runs + excluded.runs, ended = rollup_run_day.ended + excluded.ended,
              calls = rollup_run_day.calls + excluded.calls, cost = rollup_run_day.cost + excluded.cost
            """, c, tx);
        runs.Parameters.AddWithValue("day", perDay.Select(x => x.Key.Day).ToArray());
        runs.Parameters.AddWithValue("feature", perDay.Select(x => Clean(x.Key.Feature)).ToArray());
        runs.Parameters.AddWithValue("runs", perDay.Select(x => x.Value.Runs).ToArray());
        runs.Parameters.AddWithValue("ended", perDay.Select(x => x.Value.Ended).ToArray());
        runs.Parameters.AddWithValue("calls", perDay.Select(x => x.Value.Calls).ToArray());
        runs.Parameters.AddWithValue("cost", perDay.Select(x => x.Value.Cost).ToArray());
        await runs.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Hourly rollups are kept this long (default 90 days); daily ones for ever (as in the SQLite store).</summary>
    public TimeSpan HourlyRollupRetention { get; init; } = TimeSpan.FromDays(90);

    public int PruneHourlyRollups()
    {
        var cutoff = LedgerRollup.BucketOf(_time.GetUtcNow() - HourlyRollupRetention, LedgerRollup.Day);
        using var c = _data.OpenConnection();
        using var cmd = new NpgsqlCommand("DELETE FROM rollup_hour WHERE bucket < @cutoff", c);
        cmd.Parameters.AddWithValue("cutoff", cutoff);
        return cmd.ExecuteNonQuery();
    }

    public async Task<RollupSlice> SliceAsync(ReportDimension by, DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken)
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
        // money as text: a sum may carry more digits than a decimal holds, and decimal.Parse rounds where decimal addition would.
        // Rows in the SQLite store's order (daily, then hourly, each by bucket and value in binary order), so the floating-point
        // latency sums are added in the same order and reports agree to the last digit.
        var columns = string.Join(", ", RollupCounts.Append("latency_ms").Concat(RollupMoney.Select(m => m + "::text")));
        var rows = await QueryAsync($"""
            SELECT value, bucket, {columns} FROM (
              SELECT 0 AS part, value, bucket, {columns.Replace("::text", "", StringComparison.Ordinal)} FROM rollup_day WHERE dim = @dim AND bucket >= @fromDay AND bucket < @toDay
              UNION ALL
              SELECT 1, value, bucket, {columns.Replace("::text", "", StringComparison.Ordinal)} FROM rollup_hour WHERE dim = @dim AND ((bucket >= @fromHour AND bucket < LEAST(@fromDay, @toHour)) OR (bucket >= GREATEST(@toDay, @fromHour) AND bucket < @toHour))
            ) slice ORDER BY part, bucket, value COLLATE "C"
            """, r =>
            {
                var counts = new long[RollupCounts.Length];
                for (var i = 0; i < counts.Length; i++) counts[i] = r.GetInt64(2 + i);
                var money = new decimal[RollupMoney.Length];
                for (var i = 0; i < money.Length; i++) money[i] = ParseMoney(r.GetString(3 + counts.Length + i));
                var day = DateOnly.FromDateTime(DateTimeOffset.FromUnixTimeSeconds(r.GetInt64(1)).UtcDateTime);
                return (r.GetString(0), day, Totals(counts, r.GetDouble(2 + counts.Length), money));
            }, cancellationToken,
            ("dim", (short)dim), ("fromDay", fromDay), ("toDay", toDay), ("fromHour", fromHour), ("toHour", toHour)).ConfigureAwait(false);
        // hourly edge rows and daily rows of the same day fold into one (value, day) entry
        var merged = new Dictionary<(string, DateOnly), RollupTotals>();
        foreach (var (value, day, t) in rows)
        {
            if (merged.TryGetValue((value, day), out var sum)) sum.Add(t);
            else merged[(value, day)] = t;
        }
        return new RollupSlice(by, DateTimeOffset.FromUnixTimeSeconds(fromHour), DateTimeOffset.FromUnixTimeSeconds(toHour),
            merged.Select(kv => (kv.Key.Item1, kv.Key.Item2, kv.Value)).ToArray());
    }

    public async Task<IReadOnlyList<UncostedCacheCall>> ReadUncostedCacheCallsAsync(DateTimeOffset from, DateTimeOffset to, int limit, CancellationToken cancellationToken) =>
        // the WHERE holds the partial index's predicate (migration 8) word for word, so the planner reads only those rows
        await QueryAsync($"""
            SELECT feature, served_model, requested_model, batch, input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens
            FROM ledger WHERE {PostgresMigrations.UncostedCacheWhere} AND ts_unix_ms >= @from AND ts_unix_ms < @to ORDER BY ts_unix_ms, id LIMIT @limit
            """,
            r => new UncostedCacheCall(r.IsDBNull(0) ? null : r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2), r.GetBoolean(3),
                new TokenUsage(r.GetInt64(4), r.GetInt64(5), r.GetInt64(6), r.GetInt64(7), r.GetInt64(8), r.GetInt64(9))),
            cancellationToken, ("from", from.ToUnixTimeMilliseconds()), ("to", to.ToUnixTimeMilliseconds()), ("limit", (long)limit)).ConfigureAwait(false);

    public async Task<IReadOnlyList<RunCostRow>> RunCostsAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken)
    {
        // whole UTC days: a run is counted on the day it started
        var fromDay = LedgerRollup.BucketOf(from, LedgerRollup.Day);
        var toDay = LedgerRollup.BucketOf(to, LedgerRollup.Day) + (to.ToUnixTimeSeconds() % LedgerRollup.Day == 0 ? 0 : LedgerRollup.Day);
        var rows = await QueryAsync("""
            SELECT feature, SUM(runs)::bigint, SUM(ended)::bigint, SUM(calls)::bigint, SUM(cost)::text FROM rollup_run_day
            WHERE day >= @from AND day < @to GROUP BY feature HAVING SUM(runs) > 0 ORDER BY feature COLLATE "C"
            """, r => new RunCostRow(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), ParseMoney(r.GetString(4))),
            cancellationToken, ("from", fromDay), ("to", toDay)).ConfigureAwait(false);
        return rows.OrderByDescending(x => x.Cost).ToArray();
    }
}
