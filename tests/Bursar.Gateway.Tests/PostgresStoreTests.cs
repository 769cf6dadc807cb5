using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Limits;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Core.Routing;
using Bursar.Core.Storage;
using Bursar.Storage.PostgreSql;
using Bursar.Storage.Sqlite;
using Npgsql;

namespace Bursar.Gateway.Tests;

/// <summary>A varied, deterministic ledger workload: tags, models, runs, errors, unpriced calls, savings, over the last days.</summary>
public static class LedgerWorkload
{
    public static List<LedgerRecord> Records(int count, int seed = 7, DateTimeOffset? end = null, string idPrefix = "rec")
    {
        var rng = new Random(seed);
        var last = end ?? DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        string[] features = ["support", "search", "code-review", "agent", "eval"];
        string[] teams = ["eng", "cx", "research"];
        string[] models = ["gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-5", "claude-haiku-4-5"];
        var list = new List<LedgerRecord>(count);
        for (var i = 0; i < count; i++)
        {
            var priced = rng.Next(20) != 0;
            var error = rng.Next(25) == 0;
            // costs with up to 12 decimal places: exact in numeric, rounding in any float
            var cost = priced ? rng.Next(1, 5_000_000) / 1_000_000_000_000m * rng.Next(1, 1000) : (decimal?)null;
            var run = rng.Next(4) == 0 ? $"run-{seed}-{rng.Next(count / 8 + 1)}" : null;
            list.Add(new LedgerRecord
            {
                Id = $"{idPrefix}-{seed}-{i:D7}",
                Timestamp = last.AddMilliseconds(-rng.NextInt64(3L * 24 * 3600 * 1000)),
                KeyId = "key-" + rng.Next(6), Team = teams[rng.Next(teams.Length)], Customer = rng.Next(5) == 0 ? null : "customer-" + (char)('a' + rng.Next(8)),
                Feature = features[rng.Next(features.Length)], Route = rng.Next(3) == 0 ? "cheap-first" : null, Task = rng.Next(2) == 0 ? "answer" : "classify",
                Template = rng.Next(3) == 0 ? "tpl-" + rng.Next(3) : null, RunId = run, RunEndReason = run is not null && rng.Next(5) == 0 ? "answered" : null,
                Dialect = rng.Next(2) == 0 ? "openai" : "anthropic", Provider = rng.Next(2) == 0 ? "openai" : "anthropic",
                RequestedModel = models[rng.Next(models.Length)], ServedModel = models[rng.Next(models.Length)], RoutingReason = rng.Next(4) == 0 ? "complexity 0.21 < 0.5" : null,
                Streamed = rng.Next(2) == 0, Batch = rng.Next(10) == 0,
                InputTokens = rng.Next(10, 20_000), CacheReadTokens = rng.Next(3) == 0 ? rng.Next(0, 8_000) : 0, CacheWrite5mTokens = rng.Next(5) == 0 ? rng.Next(0, 2_000) : 0,
                CacheWrite1hTokens = rng.Next(20) == 0 ? 1_024 : 0, OutputTokens = rng.Next(1, 4_000), ReasoningTokens = rng.Next(4) == 0 ? rng.Next(0, 1_000) : 0,
                Priced = priced, Cost = cost, CounterfactualCost = cost is { } c ? c * 3 : null, ReportedCost = rng.Next(6) == 0 ? cost : null,
                SavingRouting = rng.Next(4) == 0 ? 0.000123456789m : 0, SavingResponseCache = rng.Next(10) == 0 ? 0.00042m : 0, SavingPromptCache = rng.Next(3) == 0 ? rng.Next(1, 999) / 10_000_000m : 0,
                SavingBatch = 0, SavingCompaction = rng.Next(20) == 0 ? 0.000001m : 0, ContextTokensRemoved = rng.Next(6) == 0 ? rng.Next(1, 3_000) : 0, SavingOutputCap = rng.Next(20) == 0 ? 0.00000007m : 0,
                LatencyMs = Math.Round(rng.NextDouble() * 3000, 3), TimeToFirstTokenMs = rng.Next(2) == 0 ? Math.Round(rng.NextDouble() * 500, 3) : null,
                Outcome = error ? "error" : rng.Next(30) == 0 ? "cache_hit" : "ok", StatusCode = error ? 502 : 200,
                ErrorType = error ? "upstream_error" : null, ErrorMessage = error ? "upstream said no" : null, FinishReason = error ? null : rng.Next(15) == 0 ? "length" : "stop",
                UpstreamRequestId = "req_" + rng.Next(), VolatilePrefix = rng.Next(30) == 0 ? "timestamp" : null,
                PrefixHash = rng.Next(3) == 0 ? "h" + rng.Next(5) : null, PrefixTokens = rng.Next(3) == 0 ? 1_200 : 0, UsageEstimated = rng.Next(40) == 0,
            });
        }
        return list;
    }
}

/// <summary>The PostgreSQL store against a real server: the same contract the SQLite store keeps, exact money, reports equal to SQLite's.</summary>
public sealed class PostgresStoreTests(PostgresServer pg) : IClassFixture<PostgresServer>
{
    private async Task<PostgresStore> FreshAsync() => new(await pg.CreateDatabaseAsync());

    private static SqliteStore Sqlite(string dir) => new(Path.Combine(dir, "bursar.db"), _ => { });

    [Fact]
    public async Task Migrations_are_versioned_applied_once_and_a_newer_schema_is_refused()
    {
        var cs = await pg.CreateDatabaseAsync();
        using var first = new PostgresStore(cs);
        Assert.Equal(PostgresMigrations.All.Select(m => m.Version), PostgresMigrations.Applied(first.DataSource));
        // a second instance (another gateway) starting on the same database applies nothing
        Assert.Empty(PostgresMigrations.Apply(first.DataSource, TimeProvider.System));
        using var second = new PostgresStore(cs);
        Assert.Equal(PostgresMigrations.All.Select(m => m.Version), PostgresMigrations.Applied(second.DataSource));
        // a database migrated by a newer Bursar is not touched
        await using (var c = await first.DataSource.OpenConnectionAsync())
        await using (var cmd = new NpgsqlCommand("INSERT INTO schema_migrations VALUES (999, 'from the future', now())", c))
            await cmd.ExecuteNonQueryAsync();
        var e = Assert.Throws<InvalidOperationException>(() => new PostgresStore(cs));
        Assert.Contains("newer than this Bursar knows", e.Message);
    }

    [Fact]
    public async Task Ledger_writes_are_idempotent_by_id_and_read_back_exactly()
    {
        using var store = await FreshAsync();
        var records = LedgerWorkload.Records(300);
        await store.WriteAsync(records[..200], default);
        // a replayed spool: the first 200 again with 100 new ones, and one id twice in the same batch
        await store.WriteAsync([.. records, records[250]], default);
        await store.WriteAsync(records[..50], default);
        Assert.Equal(300, await store.CountAsync(default));
        var back = await store.ReadAsync(new LedgerQuery { Limit = int.MaxValue }, default);
        Assert.Equal(records.OrderBy(r => r.Id, StringComparer.Ordinal), back.OrderBy(r => r.Id, StringComparer.Ordinal));
        Assert.True(back.Zip(back.Skip(1)).All(p => p.First.Timestamp <= p.Second.Timestamp), "records come back oldest first");

        // windows, limits (oldest or newest first) and routes, as the SQLite store answers them
        var mid = records.OrderBy(r => r.Timestamp).ElementAt(150).Timestamp;
        Assert.Equal(records.Count(r => r.Timestamp >= mid), (await store.ReadAsync(new LedgerQuery { From = mid, Limit = int.MaxValue }, default)).Count);
        var newest = await store.ReadAsync(new LedgerQuery { Limit = 10, Newest = true }, default);
        Assert.Equal(records.OrderByDescending(r => r.Timestamp).Take(10).Select(r => r.Timestamp).Order(), newest.Select(r => r.Timestamp));
        var routed = await store.ReadAsync(new LedgerQuery { Routes = ["cheap-first"], Limit = int.MaxValue }, default);
        Assert.Equal(records.Count(r => r.Route == "cheap-first"), routed.Count);

        // the rollups counted each record once, replays or not
        var slice = await store.SliceAsync(ReportDimension.Feature, DateTimeOffset.UtcNow.AddDays(-4), DateTimeOffset.UtcNow.AddHours(1), default);
        Assert.Equal(300, slice.Rows.Sum(r => r.Totals.Calls));
        Assert.Equal(records.Sum(r => r.Cost ?? 0), slice.Rows.Sum(r => r.Totals.Cost));
        Assert.Equal(records.Count(r => r.Batch), slice.Rows.Sum(r => r.Totals.BatchCalls));
        Assert.Equal(records.Count(r => r.ContextTokensRemoved > 0), slice.Rows.Sum(r => r.Totals.ContextCalls));
        Assert.Equal(records.Sum(r => r.ContextTokensRemoved), slice.Rows.Sum(r => r.Totals.ContextTokensRemoved));
    }

    [Fact]
    public async Task Money_is_exact_decimal_end_to_end()
    {
        using var store = await FreshAsync();
        var t = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        // 0.1 + 0.2 is 0.3 only in decimal; a tiny and a huge amount keep every digit
        decimal[] amounts = [0.1m, 0.2m, 0.000000000001m, 12345678901234.567890123456m, 0.3333333333333333333333333333m];
        var records = amounts.Select((a, i) => new LedgerRecord
        {
            Id = "money-" + i, Timestamp = t.AddSeconds(-i), Dialect = "openai", Outcome = "ok", StatusCode = 200, Priced = true, Cost = a,
            Customer = "exact", ServedModel = "gpt-4o-mini", SavingPromptCache = a / 7,
        }).ToList();
        await store.WriteAsync(records, default);
        var back = (await store.ReadAsync(new LedgerQuery(), default)).ToDictionary(r => r.Id);
        foreach (var r in records)
        {
            Assert.Equal(r.Cost, back[r.Id].Cost);
            Assert.Equal(r.Cost!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture), back[r.Id].Cost!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(r.SavingPromptCache, back[r.Id].SavingPromptCache);
        }
        var budget = new BudgetDefinition { Id = "exact", Scope = BudgetScope.Customer, Value = "exact", Period = BudgetPeriod.Total, LimitUsd = 0.3m };
        Assert.Equal(amounts.Sum(), await store.SpentSinceAsync(budget, DateTimeOffset.MinValue, default));
        var twoOnly = await store.SpentSinceAsync(budget, t.AddSeconds(-1), default);
        Assert.Equal(0.3m, twoOnly);
        Assert.Equal("0.3", twoOnly.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var slice = await store.SliceAsync(ReportDimension.Customer, t.AddHours(-1), t.AddHours(1), default);
        Assert.Equal(amounts.Sum(), slice.Rows.Where(r => r.Value == "exact").Sum(r => r.Totals.Cost));
        await using var c = await store.DataSource.OpenConnectionAsync();
        await using var cmd = new NpgsqlCommand("SELECT data_type FROM information_schema.columns WHERE table_name IN ('ledger', 'rollup_hour', 'rollup_day', 'rollup_run_day', 'budgets') AND column_name IN ('cost', 'counterfactual_cost', 'reported_cost', 'saving_routing', 's_routing', 'limit_usd')", c);
        await using var types = await cmd.ExecuteReaderAsync();
        var seen = new List<string>();
        while (await types.ReadAsync()) seen.Add(types.GetString(0));
        Assert.NotEmpty(seen);
        Assert.All(seen, s => Assert.Equal("numeric", s));
    }

    [Fact]
    public async Task Text_postgres_cannot_hold_is_replaced_without_failing_the_batch()
    {
        using var store = await FreshAsync();
        var t = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        await store.WriteAsync([new LedgerRecord { Id = "nul", Timestamp = t, Dialect = "openai", Outcome = "error", StatusCode = 400, Feature = "a\0b", ErrorMessage = "bad \ud800 surrogate" },
            new LedgerRecord { Id = "fine", Timestamp = t, Dialect = "openai", Outcome = "ok", StatusCode = 200, Feature = "ok 😀" }], default);
        var back = (await store.ReadAsync(new LedgerQuery(), default)).ToDictionary(r => r.Id);
        Assert.Equal("a\uFFFDb", back["nul"].Feature);
        Assert.Equal("bad \uFFFD surrogate", back["nul"].ErrorMessage);
        Assert.Equal("ok 😀", back["fine"].Feature);
    }

    [Fact]
    public async Task Keys_budgets_limits_routes_and_prices_round_trip()
    {
        using var store = await FreshAsync();
        // keys
        var (key, secret) = KeyFactory.Create(TimeProvider.System, name: "ci", team: "eng", customer: "acme", downgradeModel: "gpt-4o-mini", unpricedPolicy: "refuse", allowedCustomers: ["acme", "beta"]);
        await store.AddAsync(key, default);
        var (other, _) = KeyFactory.Create(TimeProvider.System, name: "other");
        await store.AddAsync(other, default);
        var found = await store.FindByHashAsync(VirtualKey.HashSecret(secret), default);
        Assert.NotNull(found);
        Assert.Equal(key.Id, found.Id);
        Assert.Equal(("ci", "eng", "acme", "gpt-4o-mini", "refuse"), (found.Name, found.Team, found.Customer, found.DowngradeModel, found.UnpricedPolicy));
        Assert.Equal(["acme", "beta"], found.AllowedCustomers!);
        Assert.Equal(key.CreatedAt.ToUnixTimeMilliseconds(), found.CreatedAt.ToUnixTimeMilliseconds());
        Assert.Null(await store.FindByHashAsync("nope", default));
        Assert.Equal([key.Id, other.Id], (await store.ListAsync(default)).Select(k => k.Id));
        Assert.True(await store.RevokeAsync(key.Prefix, DateTimeOffset.UtcNow, default));
        Assert.False(await store.RevokeAsync(key.Prefix, DateTimeOffset.UtcNow, default));
        Assert.NotNull((await store.FindByHashAsync(VirtualKey.HashSecret(secret), default))!.RevokedAt);

        // budgets
        var b = new BudgetDefinition { Id = "team-eng", Scope = BudgetScope.Team, Value = "eng", Period = BudgetPeriod.Month, LimitUsd = 12.345678901m, SoftLimitFraction = 0.75m, TimeZone = "Europe/Paris" };
        await store.UpsertBudgetAsync(b, default);
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "all", Scope = BudgetScope.Global, Period = BudgetPeriod.Day, LimitUsd = 100m }, default);
        Assert.Equal([new BudgetDefinition { Id = "all", Scope = BudgetScope.Global, Period = BudgetPeriod.Day, LimitUsd = 100m }, b], await store.ListBudgetsAsync(default));
        await store.UpsertBudgetAsync(b with { LimitUsd = 20m }, default);
        Assert.Equal(20m, (await store.ListBudgetsAsync(default)).Single(x => x.Id == "team-eng").LimitUsd);
        var reset = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        Assert.True(await store.ResetBudgetAsync("team-eng", reset, default));
        Assert.Equal(reset, (await store.ListBudgetsAsync(default)).Single(x => x.Id == "team-eng").ResetAt);
        Assert.False(await store.ResetBudgetAsync("missing", reset, default));
        Assert.True(await store.DeleteBudgetAsync("all", default));
        Assert.False(await store.DeleteBudgetAsync("all", default));
        Assert.Single(await store.ListBudgetsAsync(default));

        // rate limits
        await store.UpsertRateLimitAsync(new RateLimitDefinition(RateLimitScope.Team, "eng", 60, null), default);
        await store.UpsertRateLimitAsync(new RateLimitDefinition(RateLimitScope.Key, "k1", null, 100_000), default);
        await store.UpsertRateLimitAsync(new RateLimitDefinition(RateLimitScope.Team, "eng", 120, 5_000_000_000), default);
        Assert.Equal([new RateLimitDefinition(RateLimitScope.Key, "k1", null, 100_000), new RateLimitDefinition(RateLimitScope.Team, "eng", 120, 5_000_000_000)], await store.ListRateLimitsAsync(default));
        Assert.True(await store.DeleteRateLimitAsync(RateLimitScope.Key, "k1", default));
        Assert.False(await store.DeleteRateLimitAsync(RateLimitScope.Key, "k1", default));

        // routes
        var policy = StoredRoute.Parse("""{"feature":"support","model":"gpt-4o-mini","fallbacks":["gpt-4.1"],"max_tokens":300}""");
        await store.UpsertRouteAsync(new StoredRoute("support-cheap", 5, policy), default);
        await store.UpsertRouteAsync(new StoredRoute("first", 1, StoredRoute.Parse("""{"team":"eng","tier":"small"}""")), default);
        var routes = await store.ListRoutesAsync(default);
        Assert.Equal(["first", "support-cheap"], routes.Select(r => r.Name));
        Assert.Equal(("support", "gpt-4o-mini", 300, "support-cheap"), (routes[1].Policy.Feature, routes[1].Policy.Model, routes[1].Policy.MaxTokens!.Value, routes[1].Policy.Name));
        Assert.Equal(["gpt-4.1"], routes[1].Policy.Fallbacks);
        await store.UpsertRouteAsync(new StoredRoute("support-cheap", 0, policy), default);
        Assert.Equal("support-cheap", (await store.ListRoutesAsync(default))[0].Name);
        Assert.True(await store.DeleteRouteAsync("first", default));
        Assert.False(await store.DeleteRouteAsync("first", default));

        // imported prices override by model, exact rates
        var price = new ModelPrice { Model = "my-llama", Provider = "local", Source = "import", Rates = new PriceRates { Input = 0.123456789m, Output = 1.5m } };
        Assert.Equal(1, store.ImportPrices([price], DateTimeOffset.UtcNow));
        Assert.Equal(1, store.ImportPrices([price with { Rates = new PriceRates { Input = 0.2m, Output = 0.4m } }], DateTimeOffset.UtcNow));
        var prices = store.LoadImportedPrices();
        Assert.Equal(0.2m, Assert.Single(prices).Rates.Input);
    }

    [Fact]
    public async Task Reports_on_postgres_equal_the_same_ledger_on_sqlite()
    {
        using var store = await FreshAsync();
        var dir = Path.Combine(Path.GetTempPath(), "bursar-parity-" + Guid.NewGuid().ToString("N"));
        try
        {
            var sqlite = Sqlite(dir);
            var records = LedgerWorkload.Records(3_000, seed: 11);
            // the same batches on both, one of them replayed
            foreach (var batch in records.Chunk(512).Append(records[..700].ToArray()))
            {
                await sqlite.WriteAsync(batch, default);
                await store.WriteAsync(batch, default);
            }
            Assert.Equal(await sqlite.CountAsync(default), await store.CountAsync(default));
            var from = DateTimeOffset.UtcNow.AddDays(-4);
            var to = DateTimeOffset.UtcNow.AddHours(1);
            foreach (var by in new[] { ReportDimension.Feature, ReportDimension.Team, ReportDimension.Customer, ReportDimension.Model, ReportDimension.Key, ReportDimension.Route, ReportDimension.Outcome, ReportDimension.Driver, ReportDimension.Day })
            {
                var a = await SpendReport.QueryAsync(sqlite, by, from, to, default);
                var b = await SpendReport.QueryAsync(store, by, from, to, default);
                Assert.Equal(a.ToJson(), b.ToJson());
                Assert.Equal(a.ToCsv(), b.ToCsv());
            }
            // an inner window (hour edges on both sides)
            var edge = await SpendReport.QueryAsync(store, ReportDimension.Feature, from.AddHours(30.5), to.AddHours(-20.25), default);
            Assert.Equal((await SpendReport.QueryAsync(sqlite, ReportDimension.Feature, from.AddHours(30.5), to.AddHours(-20.25), default)).ToJson(), edge.ToJson());
            Assert.Equal(await sqlite.RunCostsAsync(from, to, default), await store.RunCostsAsync(from, to, default));
            var budget = new BudgetDefinition { Id = "c", Scope = BudgetScope.Customer, Value = "customer-c", Period = BudgetPeriod.Total, LimitUsd = 1m };
            Assert.Equal(await sqlite.SpentSinceAsync(budget, DateTimeOffset.MinValue, default), await store.SpentSinceAsync(budget, DateTimeOffset.MinValue, default));
            Assert.Equal(sqlite.PruneHourlyRollups(), store.PruneHourlyRollups());
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Concurrent_writers_on_one_database_count_every_record_once()
    {
        var cs = await pg.CreateDatabaseAsync();
        // three gateway instances: three stores, the same rollup rows, overlapping replays
        var stores = Enumerable.Range(0, 3).Select(_ => new PostgresStore(cs)).ToArray();
        try
        {
            var records = LedgerWorkload.Records(3_000, seed: 5);
            await Task.WhenAll(stores.Select((s, i) => Task.Run(async () =>
            {
                foreach (var batch in records.Chunk(200).Where((_, n) => n % 3 == i || n % 5 == 0)) await s.WriteAsync(batch, default);
            })));
            Assert.Equal(3_000, await stores[0].CountAsync(default));
            var slice = await stores[1].SliceAsync(ReportDimension.Team, DateTimeOffset.UtcNow.AddDays(-4), DateTimeOffset.UtcNow.AddHours(1), default);
            Assert.Equal(3_000, slice.Rows.Sum(r => r.Totals.Calls));
            Assert.Equal(records.Sum(r => r.Cost ?? 0), slice.Rows.Sum(r => r.Totals.Cost));
            var runs = await stores[2].RunCostsAsync(DateTimeOffset.UtcNow.AddDays(-4), DateTimeOffset.UtcNow.AddDays(1), default);
            Assert.Equal(records.Where(r => r.RunId is not null).Select(r => r.RunId).Distinct().Count(), runs.Sum(r => r.Runs));
        }
        finally
        {
            foreach (var s in stores) s.Dispose();
        }
    }

    [Fact]
    public async Task A_row_another_writer_inserts_after_the_id_lookup_sends_the_batch_through_the_staging_table_once()
    {
        using var store = await FreshAsync();
        var records = LedgerWorkload.Records(3, seed: 11);
        await store.WriteAsync([records[0]], default); // its rollups counted once
        Assert.Equal(0, store.StagedWrites);
        // another instance is writing records[0] now: its insert is not committed, so this store's id lookup misses it
        await using var other = await store.DataSource.OpenConnectionAsync();
        await using (var keep = new NpgsqlCommand("CREATE TEMP TABLE keep AS SELECT * FROM ledger WHERE id = @id; DELETE FROM ledger WHERE id = @id", other))
        {
            keep.Parameters.AddWithValue("id", records[0].Id);
            await keep.ExecuteNonQueryAsync();
        }
        var tx = await other.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand("INSERT INTO ledger SELECT * FROM keep", other, tx)) Assert.Equal(1, await insert.ExecuteNonQueryAsync());
        var writing = store.WriteAsync(records, default);
        // the copy waits on the other transaction's row, then meets it: a unique violation, the batch written again
        await Task.Delay(500);
        Assert.False(writing.IsCompleted, "the copy did not wait on the uncommitted row");
        await tx.CommitAsync();
        await writing.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, store.StagedWrites);
        Assert.Equal(3, await store.CountAsync(default));
        var slice = await store.SliceAsync(ReportDimension.All, DateTimeOffset.UtcNow.AddDays(-4), DateTimeOffset.UtcNow.AddHours(1), default);
        Assert.Equal(3, slice.Rows.Sum(r => r.Totals.Calls)); // records[0] counted once, the two new ones once each
        Assert.Equal(records.Sum(r => r.Cost ?? 0), slice.Rows.Sum(r => r.Totals.Cost));
    }
}
