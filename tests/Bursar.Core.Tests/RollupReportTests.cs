using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Storage.Sqlite;
using Microsoft.Data.Sqlite;

namespace Bursar.Core.Tests;

public sealed class RollupReportTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-rollup-" + Guid.NewGuid().ToString("N"));
    private static readonly DateTimeOffset T0 = new(2026, 11, 2, 0, 0, 0, TimeSpan.Zero);

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private SqliteStore Store(TimeProvider? time = null) => new(Path.Combine(_dir, "bursar.db"), time: time ?? new Microsoft.Extensions.Time.Testing.FakeTimeProvider(T0.AddDays(10)));

    private static LedgerRecord R(DateTimeOffset t, string feature, string model, decimal? cost, string? customer = null, string? run = null,
        decimal savingCache = 0, long input = 100, long output = 20, string? end = null) => new()
    {
        Id = Guid.NewGuid().ToString("N"), Timestamp = t, Dialect = "openai", Outcome = "ok", Feature = feature, ServedModel = model,
        Customer = customer, RunId = run, RunEndReason = end, Cost = cost, Priced = cost is not null, InputTokens = input, OutputTokens = output,
        SavingResponseCache = savingCache, LatencyMs = 10,
    };

    [Fact]
    public async Task Report_from_rollups_matches_hand_computed_totals()
    {
        var store = Store();
        await store.WriteAsync([
            R(T0.AddHours(1), "chat", "gpt-4.1", 0.000123456789m, "acme"),
            R(T0.AddHours(2), "chat", "gpt-4.1", 0.5m, "acme"),
            R(T0.AddHours(26), "search", "gpt-4.1-mini", 0.25m, "globex", savingCache: 0.1m),
            R(T0.AddHours(27), "search", "mystery-model", null, "globex"),
        ], default);
        var report = await SpendReport.QueryAsync(store, ReportDimension.Feature, T0, T0.AddDays(3), default);
        Assert.Equal(0.750123456789m, report.Total.Cost);
        Assert.Equal(4, report.Total.Calls);
        Assert.Equal(1, report.Total.UnpricedCalls);
        Assert.Equal(0.1m, report.Total.Saved);
        var chat = report.Rows.Single(r => r.Group == "chat");
        Assert.Equal(0.500123456789m, chat.Cost);
        Assert.Equal(2, chat.Calls);
        Assert.Equal(200, chat.InputTokens);
        // trend: one point per UTC day with that day's spend
        Assert.Equal([new DateOnly(2026, 11, 2), new DateOnly(2026, 11, 3)], report.Trend.Select(t => t.Day));
        Assert.Equal(0.500123456789m, report.Trend[0].Cost);
        Assert.Equal(0.1m, report.Savings.Single(s => s.Lever == "response cache").Saved);
        Assert.Equal("chat / gpt-4.1", report.TopDrivers[0].Group);
    }

    [Fact]
    public async Task Windows_with_ragged_hours_equal_the_reference_built_from_records()
    {
        var store = Store();
        var rng = new Random(7);
        string[] features = ["chat", "search", "summarize", "extract"], models = ["gpt-4.1", "gpt-4.1-mini", "claude-haiku-4-5"];
        var records = Enumerable.Range(0, 3000).Select(i => R(T0.AddMinutes(rng.Next(0, 60 * 24 * 9)), features[rng.Next(4)], models[rng.Next(3)],
            rng.Next(10) == 0 ? null : rng.Next(1, 100_000) / 1_000_000m, "c" + rng.Next(20)))
            // a third compacted (tokens removed, the context saving), some at the batch rate: the per-route lever columns add up too
            .Select(r => rng.Next(3) != 0 ? r : r with { ContextTokensRemoved = rng.Next(1, 5_000), SavingCompaction = rng.Next(-100, 1_000) / 1_000_000m, ContextStrategy = "sliding-window", Batch = rng.Next(2) == 0 })
            .ToArray();
        Assert.Contains(records, r => r.ContextTokensRemoved > 0);
        foreach (var chunk in records.Chunk(257)) await store.WriteAsync(chunk, default);
        foreach (var (from, to) in new[] { (T0, T0.AddDays(9)), (T0.AddHours(5), T0.AddDays(6).AddHours(7)), (T0.AddHours(30), T0.AddHours(40)), (T0.AddDays(2), T0.AddDays(3)) })
        {
            foreach (var by in new[] { ReportDimension.Feature, ReportDimension.Model, ReportDimension.Customer, ReportDimension.Day })
            {
                var fromStore = await store.SliceAsync(by, from, to, default);
                var expected = RollupSlice.FromRecords(records, by, from, to);
                Assert.Equal(Canonical(expected), Canonical(fromStore));
            }
        }
    }

    private static string[] Canonical(RollupSlice s) => s.Rows.OrderBy(x => x.Value, StringComparer.Ordinal).ThenBy(x => x.Day)
        .Select(x => $"{x.Value}|{x.Day}|{x.Totals.Calls}|{x.Totals.UnpricedCalls}|{x.Totals.Cost}|{x.Totals.InputTokens}|{x.Totals.OutputTokens}|{x.Totals.BatchCalls}|{x.Totals.ContextCalls}|{x.Totals.ContextTokensRemoved}|{x.Totals.SavingCompaction}").ToArray();

    [Fact]
    public async Task A_replayed_batch_is_not_counted_twice()
    {
        var store = Store();
        var batch = new[] { R(T0, "chat", "gpt-4.1", 0.2m), R(T0.AddMinutes(1), "chat", "gpt-4.1", 0.3m) };
        await store.WriteAsync(batch, default);
        await store.WriteAsync(batch, default); // the spool replays a batch whose commit it did not see
        var report = await SpendReport.QueryAsync(store, ReportDimension.Feature, T0, T0.AddDays(1), default);
        Assert.Equal(2, report.Total.Calls);
        Assert.Equal(0.5m, report.Total.Cost);
    }

    [Fact]
    public async Task Rollups_are_rebuilt_for_a_store_written_before_they_existed()
    {
        var path = Path.Combine(_dir, "bursar.db");
        var store = new SqliteStore(path);
        await store.WriteAsync([R(T0, "chat", "gpt-4.1", 0.2m), R(T0.AddDays(1), "search", "gpt-4.1", 0.3m)], default);
        using (var c = new SqliteConnection($"Data Source={path}"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "DROP TABLE rollup_hour; DROP TABLE rollup_day; DROP TABLE rollup_run_ids; DROP TABLE rollup_run_day; DELETE FROM meta;";
            cmd.ExecuteNonQuery();
        }
        SqliteConnection.ClearAllPools();
        var reopened = new SqliteStore(path);
        var report = await SpendReport.QueryAsync(reopened, ReportDimension.Feature, T0, T0.AddDays(2), default);
        Assert.Equal(0.5m, report.Total.Cost);
        Assert.Equal(["search", "chat"], report.Rows.Select(r => r.Group));
    }

    [Fact]
    public async Task Cost_per_completed_task_groups_calls_by_run()
    {
        var store = Store();
        await store.WriteAsync([
            R(T0, "agent", "gpt-4.1", 0.10m, run: "r1"), R(T0.AddMinutes(1), "agent", "gpt-4.1", 0.20m, run: "r1", end: "max_turns"),
            R(T0, "agent", "gpt-4.1", 0.30m, run: "r2"),
            R(T0, "chat", "gpt-4.1", 1m),
        ], default);
        var report = await SpendReport.QueryAsync(store, ReportDimension.Feature, T0, T0.AddDays(1), default);
        var agent = Assert.Single(report.Tasks);
        Assert.Equal("agent", agent.Feature);
        Assert.Equal(2, agent.Runs);
        Assert.Equal(1, agent.EndedRuns);
        Assert.Equal(3, agent.Calls);
        Assert.Equal(0.30m, agent.CostPerRun);
        Assert.Contains("Cost per completed task", report.ToTable());
    }

    [Fact]
    public async Task A_limited_read_can_keep_the_newest_records()
    {
        var store = Store();
        await store.WriteAsync(Enumerable.Range(0, 10).Select(i => R(T0.AddMinutes(i), "f" + i, "gpt-4.1", 0.1m)).ToArray(), default);
        var newest = await store.ReadAsync(new LedgerQuery { Limit = 3, Newest = true }, default);
        Assert.Equal(["f7", "f8", "f9"], newest.Select(r => r.Feature));
        var oldest = await store.ReadAsync(new LedgerQuery { Limit = 3 }, default);
        Assert.Equal(["f0", "f1", "f2"], oldest.Select(r => r.Feature));
        await store.WriteAsync([R(T0.AddHours(1), "routed", "gpt-4.1", 0.1m) with { Route = "summaries" }], default);
        var routed = await store.ReadAsync(new LedgerQuery { Routes = ["summaries", "other"] }, default);
        Assert.Equal("routed", Assert.Single(routed).Feature);
    }

    [Fact]
    public async Task Old_windows_answer_at_day_resolution_once_their_hours_are_pruned()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(T0.AddDays(10));
        var store = Store(time);
        var records = Enumerable.Range(0, 48).Select(i => R(T0.AddHours(i), "chat", "gpt-4.1", 0.01m)).ToArray();
        await store.WriteAsync(records, default);
        // recent: a ragged window counts the hours it covers
        Assert.Equal(0.10m, (await SpendReport.QueryAsync(store, ReportDimension.Feature, T0.AddHours(5), T0.AddHours(15), default)).Total.Cost);
        // 200 days later the hourly rows are pruned, and the same window widens to its whole day
        time.Advance(TimeSpan.FromDays(200));
        Assert.True(store.PruneHourlyRollups() > 0);
        var old = await SpendReport.QueryAsync(store, ReportDimension.Feature, T0.AddHours(5), T0.AddHours(15), default);
        Assert.Equal(0.24m, old.Total.Cost);
        Assert.Equal(T0, old.From);
        Assert.Equal(T0.AddDays(1), old.To);
    }

    [Fact]
    public void A_report_window_names_the_field_to_fix()
    {
        var now = new DateTimeOffset(2026, 11, 23, 10, 30, 0, TimeSpan.Zero);
        Assert.True(ReportWindow.TryParse(null, null, 7, now, out var w, out _));
        Assert.Equal((now.AddDays(-7), now.AddHours(1)), w);
        Assert.True(ReportWindow.TryParse("2026-11-01", "2026-11-02T12:00Z", 7, now, out w, out _)); // from wins over days
        Assert.Equal(new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero), w.From);
        Assert.False(ReportWindow.TryParse("yesterday", null, null, now, out _, out var e));
        Assert.StartsWith("from: 'yesterday'", e);
        Assert.False(ReportWindow.TryParse(null, null, 0, now, out _, out e));
        Assert.StartsWith("days:", e);
        Assert.False(ReportWindow.TryParse("2026-11-05", "2026-11-01", null, now, out _, out e));
        Assert.Contains("must be before to", e);
    }
}
