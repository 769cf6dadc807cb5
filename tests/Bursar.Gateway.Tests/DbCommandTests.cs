using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Storage.PostgreSql;
using Bursar.Storage.Sqlite;

namespace Bursar.Gateway.Tests;

/// <summary><c>bursar db migrate</c> and <c>bursar db copy</c> against a real PostgreSQL: an embedded store moved whole, revocations kept, idempotent.</summary>
[Collection("processes")]
public sealed class DbCommandTests(PostgresServer postgres) : IClassFixture<PostgresServer>, IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-dbcopy-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task Migrate_then_copy_moves_an_embedded_store_into_postgres_and_a_second_copy_adds_nothing()
    {
        Directory.CreateDirectory(_dir);
        var sqlite = new SqliteStore(Path.Combine(_dir, "bursar.db"));
        var (live, _) = KeyFactory.Create(TimeProvider.System, "live", team: "search");
        var (gone, _) = KeyFactory.Create(TimeProvider.System, "gone", customer: "acme");
        await sqlite.AddAsync(live, default);
        await sqlite.AddAsync(gone, default);
        await sqlite.RevokeAsync(gone.Id, DateTimeOffset.UnixEpoch.AddDays(20_000), default);
        await sqlite.UpsertBudgetAsync(new BudgetDefinition { Id = "acme", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Month, LimitUsd = 12.5m }, default);
        // 12,345 rows, many sharing a millisecond (the copy pages by timestamp), money to the last digit
        var t0 = DateTimeOffset.UnixEpoch.AddDays(20_400);
        var rows = Enumerable.Range(0, 12_345).Select(i => new LedgerRecord
        {
            Id = $"r{i:D6}", Timestamp = t0.AddMilliseconds(i / 7), Dialect = i % 2 == 0 ? "openai" : "anthropic", Outcome = "ok",
            Customer = i % 3 == 0 ? "acme" : "globex", Feature = "f" + (i % 5), Priced = true, Cost = 0.000001234m * i, InputTokens = i,
        }).ToArray();
        foreach (var chunk in rows.Chunk(2_000)) await sqlite.WriteAsync(chunk, default);

        var connection = await postgres.CreateDatabaseAsync();
        var (exit, stdout, stderr) = await BursarProcess.RunAsync(_dir, "db", "migrate", "--postgres", connection);
        Assert.True(exit == 0, stderr);
        Assert.Contains("Applied migration", stdout);
        (exit, stdout, _) = await BursarProcess.RunAsync(_dir, "db", "migrate", "--postgres", connection);
        Assert.Contains("Up to date", stdout);

        (exit, stdout, stderr) = await BursarProcess.RunAsync(_dir, "db", "copy", "--postgres", connection);
        Assert.True(exit == 0, stderr);
        Assert.Contains("12,345", stdout);
        using var pg = new PostgresStore(connection);
        Assert.Equal(12_345, await pg.CountAsync(default));
        var back = await pg.ReadAsync(new LedgerQuery { Limit = 100_000 }, default);
        Assert.Equal(rows.Sum(r => r.Cost!.Value), back.Sum(r => r.Cost!.Value));
        Assert.Equal(rows.Where(r => r.Customer == "acme").Sum(r => r.Cost!.Value), await pg.SpentSinceAsync(new BudgetDefinition { Id = "x", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Total, LimitUsd = 1 }, DateTimeOffset.UnixEpoch, default));
        var keys = await pg.ListAsync(default);
        Assert.False(keys.Single(k => k.Id == live.Id).IsRevoked);
        Assert.True(keys.Single(k => k.Id == gone.Id).IsRevoked); // a revoked key does not come back to life
        Assert.Equal(12.5m, (await pg.ListBudgetsAsync(default)).Single().LimitUsd);

        // again: nothing new, the rollups not counted twice
        (exit, stdout, stderr) = await BursarProcess.RunAsync(_dir, "db", "copy", "--postgres", connection);
        Assert.True(exit == 0, stderr);
        Assert.Equal(12_345, await pg.CountAsync(default));
        Assert.Matches(@"ledger rows\s*\S\s*12,345\s*\S\s*0\b", stdout);
        var report = await pg.SliceAsync(Bursar.Core.Reporting.ReportDimension.Customer, t0.AddDays(-1), t0.AddDays(1), default);
        Assert.Equal(rows.Where(r => r.Customer == "acme").Sum(r => r.Cost!.Value), report.Groups().Single(g => g.Value == "acme").Totals.Cost);

        // no connection string: one line saying how to give one
        (exit, _, stderr) = await BursarProcess.RunAsync(_dir, "db", "copy");
        Assert.Equal(2, exit);
        Assert.Contains("--postgres", stderr);
    }
}
