using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Storage.PostgreSql;
using Bursar.Storage.Sqlite;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Bursar.Gateway.Tests;

/// <summary>
/// <c>bursar report --cache</c> served by the rollups: over the same ledger it equals, field by field, the report built from the
/// ledger rows (the path it replaced), in SQLite and in PostgreSQL, including a store whose rollups predate the cache counts.
/// </summary>
public sealed class CacheReportRollupTests(PostgresServer pg) : IClassFixture<PostgresServer>, IDisposable
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-cache-rollup-" + Guid.NewGuid().ToString("N"));
    private static readonly DateTimeOffset From = DateTimeOffset.UtcNow.AddDays(-4), To = DateTimeOffset.UtcNow.AddHours(1);

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private SqliteStore Sqlite() => new(Path.Combine(_dir, "bursar.db"), _ => { });

    /// <summary>
    /// The workload's varied rows (a third with a recorded prompt-cache saving, many with cache tokens and none) plus the cases the cache
    /// report treats apart: cache tokens without a saving on a model the catalog cannot price, a volatile prefix Bursar moved, no feature
    /// and no served model (costed by the requested model), a 1-hour cache write at the batch rate without a saving.
    /// </summary>
    private static List<LedgerRecord> MixedLedger(int count, int seed)
    {
        var records = LedgerWorkload.Records(count, seed);
        for (var i = 0; i < records.Count; i++)
        {
            var r = records[i];
            records[i] = (i % 11) switch
            {
                0 => r with { ServedModel = "zz-unpriced-house-model", RequestedModel = "zz-unpriced-house-model", SavingPromptCache = 0, CacheReadTokens = 500 },
                1 => r with { VolatilePrefix = "moved:timestamp" },
                2 => r with { Feature = null, ServedModel = null },
                3 => r with { SavingPromptCache = 0, CacheWrite1hTokens = 2_048, Batch = true },
                4 => r with { VolatilePrefix = "request id" },
                _ => r,
            };
        }
        return records;
    }

    /// <summary>Today's rule, as <c>report --cache</c> computed it from the ledger rows before rollups served it: the reference.</summary>
    private static void AssertSameAsTheLedgerRows(IReadOnlyList<LedgerRecord> records, CacheReport fromRollups)
    {
        var fromRecords = CacheReport.Build(records, Catalog);
        Assert.Equal(fromRecords.Rows.Select(r => r.Route), fromRollups.Rows.Select(r => r.Route));
        foreach (var (e, a) in fromRecords.Rows.Zip(fromRollups.Rows))
        {
            Assert.Equal(e.Calls, a.Calls);
            Assert.Equal(e.InputTokens, a.InputTokens);
            Assert.Equal(e.CacheReadTokens, a.CacheReadTokens);
            Assert.Equal(e.CacheWriteTokens, a.CacheWriteTokens);
            Assert.Equal(e.NetSavingUsd, a.NetSavingUsd);
            Assert.Equal(e.ResponseCacheHits, a.ResponseCacheHits);
            Assert.Equal(e.ResponseCacheSavingUsd, a.ResponseCacheSavingUsd);
            Assert.Equal(e.VolatileCalls, a.VolatileCalls);
            Assert.Equal(e.UncostedCalls, a.UncostedCalls);
            Assert.Equal(e.HitRatio, a.HitRatio);
            Assert.Equal(e.CostsMoreThanItSaves, a.CostsMoreThanItSaves);
            // and each route's figures are the ones the ledger-row grouping gave before (its formulas, written out)
            var rows = records.Where(r => $"{r.Feature ?? "(none)"} / {r.ServedModel ?? "(none)"}" == e.Route).ToArray();
            Assert.Equal(rows.Length, a.Calls);
            Assert.Equal(rows.Sum(r => r.Usage.TotalInputTokens), a.InputTokens);
            Assert.Equal(rows.Sum(r => CacheReport.PromptCacheSavingOf(r, Catalog)), a.NetSavingUsd);
            Assert.Equal(rows.Where(r => r.SavingResponseCache > 0).Sum(r => r.SavingResponseCache), a.ResponseCacheSavingUsd);
            Assert.Equal(rows.Count(r => r.VolatilePrefix is not null && !r.VolatilePrefix.StartsWith("moved:", StringComparison.Ordinal)), a.VolatileCalls);
        }
        Assert.Equal(fromRecords.ToTable(), fromRollups.ToTable());
    }

    /// <summary>The records a window holds once widened to whole hours, as the rollups answer it.</summary>
    private static LedgerRecord[] InWindow(IEnumerable<LedgerRecord> records, DateTimeOffset from, DateTimeOffset to)
    {
        var (fromHour, toHour, _, _) = LedgerRollup.Split(from, to);
        return records.Where(r => r.Timestamp.ToUnixTimeSeconds() >= fromHour && r.Timestamp.ToUnixTimeSeconds() < toHour).ToArray();
    }

    private static async Task AssertReportsAsync(IReportStore store, List<LedgerRecord> records)
    {
        var whole = await CacheReport.QueryAsync(store, From, To, Catalog, default);
        AssertSameAsTheLedgerRows(records, whole);
        // the ledger exercises every case: costed now from the catalog, not costable, volatile prefixes
        Assert.Contains(records, r => RollupTotals.IsUncostedCacheCall(r) && Catalog.Find(r.ServedModel ?? r.RequestedModel!).Price is not null);
        Assert.True(whole.UncostedCalls > 0);
        Assert.Contains(whole.Rows, r => r.VolatileCalls > 0);
        Assert.Contains("calls carry cache tokens but no recorded saving", whole.ToTable(), StringComparison.Ordinal);
        // an inner window with ragged hours on both sides
        var (from, to) = (From.AddHours(30.5), To.AddHours(-20.25));
        AssertSameAsTheLedgerRows(InWindow(records, from, to), await CacheReport.QueryAsync(store, from, to, Catalog, default));
    }

    [Fact]
    public async Task Cache_report_from_sqlite_rollups_equals_the_report_built_from_the_ledger_rows()
    {
        var store = Sqlite();
        var records = MixedLedger(3_000, seed: 23);
        foreach (var batch in records.Chunk(512)) await store.WriteAsync(batch, default);
        await AssertReportsAsync(store, records);
    }

    [Fact]
    public async Task Cache_report_from_postgres_rollups_equals_the_report_built_from_the_ledger_rows()
    {
        using var store = new PostgresStore(await pg.CreateDatabaseAsync());
        var records = MixedLedger(3_000, seed: 23);
        // one batch replayed: its rows are not counted twice
        foreach (var batch in records.Chunk(512).Append(records[..600].ToArray())) await store.WriteAsync(batch, default);
        await AssertReportsAsync(store, records);
    }

    [Fact]
    public async Task Sqlite_rollups_written_before_the_cache_counts_are_rebuilt_with_them()
    {
        var path = Path.Combine(_dir, "bursar.db");
        var records = MixedLedger(1_500, seed: 5);
        await Sqlite().WriteAsync(records, default);
        // the layout of rollup version 5: no cache counts, no partial index
        using (var c = new SqliteConnection($"Data Source={path}"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = """
                UPDATE rollup_hour SET volatile_calls = 0, uncosted_cache_calls = 0; UPDATE rollup_day SET volatile_calls = 0, uncosted_cache_calls = 0;
                DROP INDEX ledger_uncosted_cache; UPDATE meta SET value = '5' WHERE name = 'rollup_version';
                """;
            cmd.ExecuteNonQuery();
        }
        SqliteConnection.ClearAllPools();
        AssertSameAsTheLedgerRows(records, await CacheReport.QueryAsync(Sqlite(), From, To, Catalog, default));
    }

    [Fact]
    public async Task Postgres_migration_8_backfills_the_cache_counts_of_rows_written_before_it()
    {
        var cs = await pg.CreateDatabaseAsync();
        var records = MixedLedger(1_500, seed: 5);
        using (var first = new PostgresStore(cs))
        {
            await first.WriteAsync(records, default);
            // a database at migration 7: the columns it adds hold 0 for every row written before it, and there is no partial index
            await using var c = await first.DataSource.OpenConnectionAsync();
            await using var cmd = new NpgsqlCommand("""
                UPDATE rollup_hour SET volatile_calls = 0, uncosted_cache_calls = 0; UPDATE rollup_day SET volatile_calls = 0, uncosted_cache_calls = 0;
                DROP INDEX ledger_uncosted_cache; DELETE FROM schema_migrations WHERE version = 8;
                """, c);
            await cmd.ExecuteNonQueryAsync();
        }
        using var upgraded = new PostgresStore(cs);
        Assert.Contains(8, PostgresMigrations.Applied(upgraded.DataSource));
        AssertSameAsTheLedgerRows(records, await CacheReport.QueryAsync(upgraded, From, To, Catalog, default));
        // every dimension's rows are backfilled, not just the one the cache report reads
        foreach (var by in LedgerRollup.Stored)
        {
            var expected = RollupSlice.FromRecords(records, by, From, To).Groups().ToDictionary(g => g.Value, g => (g.Totals.VolatilePrefixCalls, g.Totals.UncostedCacheCalls));
            var actual = (await upgraded.SliceAsync(by, From, To, default)).Groups().ToDictionary(g => g.Value, g => (g.Totals.VolatilePrefixCalls, g.Totals.UncostedCacheCalls));
            Assert.Equal(expected.OrderBy(kv => kv.Key, StringComparer.Ordinal), actual.OrderBy(kv => kv.Key, StringComparer.Ordinal));
        }
    }

    [Fact]
    public async Task Calls_past_the_recost_limit_are_counted_as_not_costed_never_as_zero()
    {
        var store = Sqlite();
        var records = MixedLedger(600, seed: 3);
        await store.WriteAsync(records, default);
        var full = await CacheReport.QueryAsync(store, From, To, Catalog, default);
        var none = await CacheReport.QueryAsync(store, From, To, Catalog, default, recostLimit: 0);
        // nothing re-costed: every call without a recorded saving is counted, and the net figures hold only recorded savings
        Assert.Equal(records.Count(RollupTotals.IsUncostedCacheCall), none.UncostedCalls);
        Assert.True(none.UncostedCalls > full.UncostedCalls);
        Assert.Equal(records.Sum(r => r.SavingPromptCache), none.Rows.Sum(r => r.NetSavingUsd));
        Assert.Contains($"NOTE: {none.UncostedCalls:N0} calls carry cache tokens but no recorded saving", none.ToTable(), StringComparison.Ordinal);
    }
}
