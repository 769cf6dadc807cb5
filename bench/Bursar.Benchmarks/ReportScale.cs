using System.Diagnostics;
using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Storage.Sqlite;
using Microsoft.Data.Sqlite;

namespace Bursar.Benchmarks;

/// <summary>
/// <c>report-scale [rows] [dir]</c>: fills a SQLite ledger with synthetic calls (30 days; 20 features, 8 teams, 500 customers,
/// 6 models, 10 tasks) through the store's real write path (rollups included), then times the reports against it,
/// beside a plain GROUP BY over the ledger rows for comparison. Default 10,000,000 rows in /tmp/bursar-report-scale.
/// </summary>
public static class ReportScale
{
    /// <summary>Times the reports of <paramref name="store"/> over the synthetic month; returns the median of each.</summary>
    internal static async Task<List<double>> TimeReportsAsync(Bursar.Core.Reporting.IReportStore store, DateTimeOffset start, DateTimeOffset end)
    {
        var catalog = new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn());
        var cases = new (string Name, Func<Task<object>> Run)[]
        {
            ("spend by feature, 30 days (full report: rows, drivers, trend, savings, tasks)", async () => await SpendReport.QueryAsync(store, ReportDimension.Feature, start, end, default)),
            ("spend by customer (500), 30 days", async () => await SpendReport.QueryAsync(store, ReportDimension.Customer, start, end, default)),
            ("spend by model, 7 days 5 hours (ragged edges)", async () => await SpendReport.QueryAsync(store, ReportDimension.Model, end.AddDays(-7).AddHours(-5), end.AddMinutes(-30), default)),
            ("spend per day, 30 days", async () => await SpendReport.QueryAsync(store, ReportDimension.Day, start, end, default)),
            ("spend by team, one day", async () => await SpendReport.QueryAsync(store, ReportDimension.Team, end.AddDays(-1), end, default)),
            ("report --cache (rollups), one day", async () => await CacheReport.QueryAsync(store, end.AddDays(-1), end, catalog, default)),
            ("report --cache (rollups), 30 days", async () => await CacheReport.QueryAsync(store, start, end, catalog, default)),
        };
        Console.WriteLine();
        Console.WriteLine("| report | first (cold) ms | median of 5 ms | max of 5 ms |");
        Console.WriteLine("|---|---:|---:|---:|");
        var medians = new List<double>();
        foreach (var (name, run) in cases)
        {
            var sw = Stopwatch.StartNew();
            await run();
            var cold = sw.Elapsed.TotalMilliseconds;
            var times = new List<double>();
            for (var i = 0; i < 5; i++)
            {
                sw.Restart();
                await run();
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            medians.Add(times[2]);
            Console.WriteLine($"| {name} | {cold:0.0} | {times[2]:0.0} | {times[^1]:0.0} |");
        }
        return medians;
    }

    public static async Task RunAsync(string[] args)
    {
        var rows = args.Length > 1 ? long.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10_000_000;
        var dir = args.Length > 2 ? args[2] : "/tmp/bursar-report-scale";
        var store = new SqliteStore(Path.Combine(dir, "bursar.db"));
        var end = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        var start = end.AddDays(-30);
        var have = await store.CountAsync(default);
        if (have < rows) await FillAsync(store, have, rows, start, end);
        Console.WriteLine($"ledger: {await store.CountAsync(default):N0} rows, file {new FileInfo(store.Path).Length / 1e9:0.00} GB");

        var medians = await TimeReportsAsync(store, start, end);
        await TimeCacheFromLedgerAsync(store, end.AddDays(-1), end);
        // the same question answered by scanning the ledger rows, for scale
        using var c = new SqliteConnection($"Data Source={store.Path};Mode=ReadOnly");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT feature, COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM ledger WHERE ts_unix_ms >= $f AND ts_unix_ms < $t GROUP BY feature";
        cmd.Parameters.AddWithValue("$f", start.ToUnixTimeMilliseconds());
        cmd.Parameters.AddWithValue("$t", end.ToUnixTimeMilliseconds());
        var scan = Stopwatch.StartNew();
        using (var r = cmd.ExecuteReader()) while (r.Read()) { }
        Console.WriteLine($"| plain GROUP BY feature over the ledger rows (no cost sum), for scale | {scan.Elapsed.TotalMilliseconds:0} | | |");
        Console.WriteLine($"\nrollup report / ledger scan (spend by feature, median): {medians[0] / scan.Elapsed.TotalMilliseconds:0.0000}");
    }

    /// <summary>
    /// <c>report --cache</c> as it was before the cache report read rollups: every ledger row of the window read into memory and grouped
    /// (<see cref="CacheReport.Build(IEnumerable{LedgerRecord}, Bursar.Core.Pricing.PriceCatalog)"/>), for the before/after comparison.
    /// </summary>
    internal static async Task TimeCacheFromLedgerAsync(ILedgerStore store, DateTimeOffset from, DateTimeOffset to)
    {
        var catalog = new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn());
        var times = new List<double>();
        var count = 0;
        for (var i = 0; i < 3; i++)
        {
            var sw = Stopwatch.StartNew();
            var records = await store.ReadAsync(new LedgerQuery { From = from, To = to, Limit = int.MaxValue }, default);
            CacheReport.Build(records, catalog);
            times.Add(sw.Elapsed.TotalMilliseconds);
            count = records.Count;
        }
        times.Sort();
        Console.WriteLine($"| report --cache as before (reads the window's {count:N0} ledger rows), one day | {times[0]:0.0} (min of 3) | {times[1]:0.0} (median of 3) | {times[2]:0.0} |");
    }

    /// <summary>
    /// <c>report-scale-uncosted [rows] [dir]</c>, on a copy of a <c>report-scale</c> ledger: adds <c>rows</c> calls (default 100,000) over its
    /// last day that carry cache tokens but no recorded saving (as rows from an older version do), then times <c>report --cache</c> over that
    /// day: the rollups plus the read of those rows to cost them, at the default re-costing limit and at none.
    /// </summary>
    public static async Task RunUncostedAsync(string[] args)
    {
        var rows = args.Length > 1 ? long.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000;
        var dir = args.Length > 2 ? args[2] : "/tmp/bursar-report-scale-uncosted";
        var store = new SqliteStore(Path.Combine(dir, "bursar.db"));
        var end = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        var have = await store.CountAsync(default);
        var uncosted = (await store.ReadUncostedCacheCallsAsync(end.AddDays(-1), end, int.MaxValue, default)).Count;
        if (uncosted < rows) await FillAsync(store, have, have + rows - uncosted, end.AddDays(-1), end, recordPromptCacheSaving: false, idPrefix: "old", origin: have);
        Console.WriteLine($"ledger: {await store.CountAsync(default):N0} rows; calls with cache tokens and no recorded saving in the last day: {(await store.ReadUncostedCacheCallsAsync(end.AddDays(-1), end, int.MaxValue, default)).Count:N0}");
        var catalog = new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn());
        Console.WriteLine();
        Console.WriteLine("| report --cache, one day | first (cold) ms | median of 5 ms | max of 5 ms | calls not costed |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var limit in new[] { CacheReport.DefaultRecostLimit, 0 })
        {
            var sw = Stopwatch.StartNew();
            var report = await CacheReport.QueryAsync(store, end.AddDays(-1), end, catalog, default, limit);
            var cold = sw.Elapsed.TotalMilliseconds;
            var times = new List<double>();
            for (var i = 0; i < 5; i++)
            {
                sw.Restart();
                await CacheReport.QueryAsync(store, end.AddDays(-1), end, catalog, default, limit);
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            Console.WriteLine($"| rollups + re-costing limit {limit:N0} | {cold:0.0} | {times[2]:0.0} | {times[^1]:0.0} | {report.UncostedCalls:N0} |");
        }
        await TimeCacheFromLedgerAsync(store, end.AddDays(-1), end);
    }

    /// <summary>Writes synthetic calls <paramref name="from"/>..<paramref name="rows"/> through the store's write path in batches; returns the rows per second.</summary>
    /// <param name="spread">The timestamps are spaced as if this many rows filled <paramref name="start"/>..<paramref name="end"/> (default
    /// <paramref name="rows"/>): a larger number writes a denser traffic, whose batches cover minutes, not hours, as at a high call rate.</param>
    /// <param name="origin">The row spaced at <paramref name="start"/> (rows added to an existing ledger spread over their own window).</param>
    /// <param name="recordPromptCacheSaving">False writes calls as an older version did: cache tokens, no prompt-cache saving (every other call cached).</param>
    internal static async Task<double> FillAsync(ILedgerStore store, long from, long rows, DateTimeOffset start, DateTimeOffset end, int batch = 20_000, long spread = 0,
        bool recordPromptCacheSaving = true, string idPrefix = "bench", long origin = 0)
    {
        if (spread < rows - origin) spread = rows - origin;
        string[] models = ["gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5"];
        decimal[] inRate = [2m, 0.4m, 0.15m, 3m, 1m, 1.25m], outRate = [8m, 1.6m, 0.6m, 15m, 5m, 10m];
        string[] tasks = ["classification", "extraction", "summarization", "chat", "code", "analysis", "reasoning", "eval", "report", "search"];
        var rng = new Random(20261123 + (int)from);
        var span = (end - start).Ticks;
        var sw = Stopwatch.StartNew();
        for (var done = from; done < rows;)
        {
            var n = (int)Math.Min(batch, rows - done);
            var list = new LedgerRecord[n];
            for (var i = 0; i < n; i++)
            {
                var k = done + i;
                var m = rng.Next(models.Length);
                long input = rng.Next(200, 6000), cached = rng.Next(3) == 0 || !recordPromptCacheSaving ? input / 2 : 0, output = rng.Next(10, 900);
                var cost = ((input - cached) * inRate[m] + cached * inRate[m] / 10 + output * outRate[m]) / 1_000_000m;
                list[i] = new LedgerRecord
                {
                    Id = idPrefix + k.ToString("x12", System.Globalization.CultureInfo.InvariantCulture),
                    Timestamp = start.AddTicks((long)((System.Int128)span * (k - origin) / spread)),
                    Dialect = m >= 3 && m <= 4 ? "anthropic" : "openai", Provider = m >= 3 && m <= 4 ? "anthropic" : "openai",
                    KeyId = "key" + rng.Next(40), Team = "team" + rng.Next(8), Customer = "customer" + rng.Next(500), Feature = "feature" + rng.Next(20),
                    Task = tasks[rng.Next(tasks.Length)], Template = "v" + rng.Next(5), RunId = rng.Next(10) == 0 ? "run" + (k / 4) : null,
                    RequestedModel = models[m], ServedModel = models[m],
                    InputTokens = input - cached, CacheReadTokens = cached, OutputTokens = output, Priced = true, Cost = cost, CounterfactualCost = cost,
                    SavingPromptCache = recordPromptCacheSaving ? cached * inRate[m] * 0.9m / 1_000_000m : 0, LatencyMs = rng.Next(200, 3000), Outcome = rng.Next(50) == 0 ? "upstream_error" : "ok", StatusCode = 200,
                };
            }
            await store.WriteAsync(list, default);
            done += n;
            Console.Error.Write($"\rwriting synthetic ledger: {done:N0}/{rows:N0} rows, {(done - from) / sw.Elapsed.TotalSeconds:N0} rows/s   ");
        }
        Console.Error.WriteLine();
        return (rows - from) / sw.Elapsed.TotalSeconds;
    }
}
