using System.Diagnostics;
using Bursar.Storage.PostgreSql;
using Npgsql;

namespace Bursar.Benchmarks;

/// <summary>
/// <c>postgres-scale [rows] [batch] [spread]</c>, on the database <c>BURSAR_BENCH_POSTGRES</c> names (an empty one), or on a
/// PostgreSQL of its own when it is unset: writes the same synthetic month as <c>report-scale</c> through the PostgreSQL
/// store's real write path (the ids looked up, binary COPY into the ledger, rollups upserted in the same transaction),
/// reports the rows per second, then times the reports against it beside a plain GROUP BY over the ledger rows, and what
/// <c>bursar report</c> runs for every dimension. Default 1,000,000 rows in batches of 512 (the ledger writer's default
/// largest batch, <c>Bursar:Ledger:MaxBatchSize</c>); <c>spread</c>: the timestamps are spaced as if that many rows filled
/// the month (default <c>rows</c>; a larger number is a denser traffic, whose batches cover minutes rather than hours).
/// </summary>
public static class PostgresScale
{
    public static async Task RunAsync(string[] args)
    {
        var rows = args.Length > 1 ? long.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1_000_000;
        var batch = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 512;
        var spread = args.Length > 3 ? long.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : rows;
        var cs = Environment.GetEnvironmentVariable("BURSAR_BENCH_POSTGRES");
        Bursar.Testing.LocalPostgres? own = null;
        if (string.IsNullOrEmpty(cs))
        {
            // none given: a PostgreSQL of its own (initdb on a free port, default settings), stopped at the end
            own = new Bursar.Testing.LocalPostgres();
            await own.StartAsync();
            cs = await own.CreateDatabaseAsync();
            Console.WriteLine($"PostgreSQL {own.Version} of its own on port {own.Port} (BURSAR_BENCH_POSTGRES unset)");
        }
        try
        {
            await RunOnAsync(cs, rows, batch, spread);
        }
        finally
        {
            if (own is not null) await own.StopAsync();
        }
    }

    private static async Task RunOnAsync(string cs, long rows, int batch, long spread)
    {
        using var store = new PostgresStore(cs);
        var end = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        var start = end.AddDays(-30);
        var have = await store.CountAsync(default);
        if (have < rows)
        {
            var perSecond = await ReportScale.FillAsync(store, have, rows, start, end, batch, spread);
            Console.WriteLine($"COPY write path: {rows - have:N0} rows in batches of {batch:N0}, spaced as {spread:N0} rows a month: {perSecond:N0} rows/s (rollups included, one transaction per batch)");
            var w = store.WriteStats;
            var all = (w.Copy + w.MoveIntoLedger + w.Rollups + w.Commit).TotalSeconds;
            Console.WriteLine($"  by phase: binary COPY {w.Records / w.Copy.TotalSeconds:N0} rows/s ({w.Copy.TotalSeconds / all:P0}), id lookup (or a staged batch's ON CONFLICT move) {w.MoveIntoLedger.TotalSeconds / all:P0}, rollups {w.Rollups.TotalSeconds / all:P0}, commit {w.Commit.TotalSeconds / all:P0}; the store alone {w.Records / all:N0} rows/s");
        }
        await using var c = await store.DataSource.OpenConnectionAsync();
        await using (var size = new NpgsqlCommand("SELECT pg_database_size(current_database())", c))
            Console.WriteLine($"ledger: {await store.CountAsync(default):N0} rows, database {(long)(await size.ExecuteScalarAsync())! / 1e9:0.00} GB");
        await ReportScale.TimeReportsAsync(store, start, end);
        await using var cmd = new NpgsqlCommand("SELECT feature, COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM ledger WHERE ts_unix_ms >= @f AND ts_unix_ms < @t GROUP BY feature", c);
        cmd.Parameters.AddWithValue("f", start.ToUnixTimeMilliseconds());
        cmd.Parameters.AddWithValue("t", end.ToUnixTimeMilliseconds());
        var scan = Stopwatch.StartNew();
        await using (var r = await cmd.ExecuteReaderAsync()) while (await r.ReadAsync()) { }
        Console.WriteLine($"| plain GROUP BY feature over the ledger rows (no cost sum), for scale | {scan.Elapsed.TotalMilliseconds:0} | | |");
        await TimeCliReportsAsync(store, start, end);
    }

    /// <summary>
    /// What <c>bursar report --by X</c> runs, for every dimension it accepts (30 days, the catalog loaded as the CLI loads it):
    /// <see cref="Bursar.Core.Reporting.SpendReport.QueryAsync"/>, served by the rollups, as <c>report --cache</c> is
    /// (<see cref="Bursar.Core.Reporting.CacheReport.QueryAsync"/>); its old path (every ledger row of the window read) is timed over one day for comparison.
    /// </summary>
    private static async Task TimeCliReportsAsync(PostgresStore store, DateTimeOffset start, DateTimeOffset end)
    {
        var catalog = Bursar.Hosting.BursarServices.LoadCatalog(store, new Bursar.Hosting.BursarOptions());
        Console.WriteLine();
        Console.WriteLine("| bursar report --by (30 days) | first (cold) ms | median of 5 ms | max of 5 ms | groups |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var by in Enum.GetValues<Bursar.Core.Reporting.ReportDimension>())
        {
            var sw = Stopwatch.StartNew();
            var report = await Bursar.Core.Reporting.SpendReport.QueryAsync(store, by, start, end, default, catalog);
            var cold = sw.Elapsed.TotalMilliseconds;
            var times = new List<double>();
            for (var i = 0; i < 5; i++)
            {
                sw.Restart();
                await Bursar.Core.Reporting.SpendReport.QueryAsync(store, by, start, end, default, catalog);
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            Console.WriteLine($"| {by.ToString().ToLowerInvariant()} | {cold:0.0} | {times[2]:0.0} | {times[^1]:0.0} | {report.Rows.Count:N0} |");
        }
        // report --cache: served by the rollups (timed with the spend reports above); as it was before, for comparison, over one day
        await ReportScale.TimeCacheFromLedgerAsync(store, end.AddDays(-1), end);
    }
}
