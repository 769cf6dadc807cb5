using System.CommandLine;
using System.Globalization;
using Bursar.Core.Ledger;
using Bursar.Core.Storage;
using Bursar.Storage.PostgreSql;
using Bursar.Storage.Sqlite;
using Spectre.Console;

namespace Bursar.Cli.Commands;

/// <summary><c>bursar db migrate</c> and <c>bursar db copy</c>: the PostgreSQL store's schema, and moving an embedded SQLite ledger into it.</summary>
internal static class DbCommand
{
    private const int Page = 5_000;

    public static Command Create()
    {
        var db = new Command("db", "The PostgreSQL store: apply its schema migrations, or copy an embedded SQLite store into it");
        var postgres = new Option<string?>("--postgres")
        {
            Description = "Npgsql connection string (default: Bursar__Postgres__ConnectionString from the environment)",
        };

        var migrate = new Command("migrate", "Apply the schema migrations the PostgreSQL database lacks (gateway instances also do this at start)") { postgres };
        migrate.SetAction((pr, ct) =>
        {
            var connection = Connection(pr, postgres);
            using var data = Npgsql.NpgsqlDataSource.Create(connection);
            var applied = PostgresMigrations.Apply(data, TimeProvider.System);
            var now = PostgresMigrations.Applied(data);
            Terminal.Line(applied.Count == 0
                ? $"Up to date: schema version {now.Max()} ({Location(connection)})."
                : $"Applied migration{(applied.Count == 1 ? "" : "s")} {string.Join(", ", applied)}; schema version {now.Max()} ({Location(connection)}).");
            return Task.FromResult(0);
        });

        var copy = new Command("copy", "Copy the SQLite store in --data-dir (ledger, keys, budgets, rate limits, routes, imported prices) into PostgreSQL; rows already there are skipped, so it can be run again") { postgres };
        copy.SetAction(async (pr, ct) =>
        {
            var connection = Connection(pr, postgres);
            var dir = CliOptions.DataDirectory(pr, create: false);
            var from = new SqliteStore(Path.Combine(dir, "bursar.db"));
            using var to = new PostgresStore(connection);
            var counts = await CopyAsync(from, to, (done, total) => Terminal.Err.MarkupLine($"  ledger: {done:N0} / {total:N0} rows"), ct);
            var table = Terminal.NewTable(Col.L("what"), Col.R("in SQLite"), Col.R("copied now"));
            foreach (var (what, there, copied) in counts) table.AddRow(what, there.ToString("N0", CultureInfo.InvariantCulture), copied.ToString("N0", CultureInfo.InvariantCulture));
            Terminal.Out.Write(table);
            Terminal.Line($"From {from.Location} to {to.Location}. Report rollups were built with the ledger rows.");
            return 0;
        });

        db.Subcommands.Add(migrate);
        db.Subcommands.Add(copy);
        return db;
    }

    /// <summary>
    /// Copies every store of <paramref name="from"/> into <paramref name="to"/>. The ledger goes in pages in timestamp order
    /// through the target's idempotent write (its rollups with it), so a copy cut off half way is finished by running it again.
    /// Keys keep their revocation. Returns what was there and what was copied, per store.
    /// </summary>
    internal static async Task<List<(string What, long There, long Copied)>> CopyAsync(IBursarStore from, IBursarStore to, Action<long, long>? progress, CancellationToken ct)
    {
        var result = new List<(string, long, long)>();
        var existing = (await to.ListAsync(ct).ConfigureAwait(false)).Select(k => k.Id).ToHashSet(StringComparer.Ordinal);
        var keys = await from.ListAsync(ct).ConfigureAwait(false);
        var copiedKeys = 0;
        foreach (var k in keys)
        {
            if (existing.Contains(k.Id)) continue;
            await to.AddAsync(k with { RevokedAt = null }, ct).ConfigureAwait(false);
            if (k.RevokedAt is { } revoked) await to.RevokeAsync(k.Id, revoked, ct).ConfigureAwait(false); // a revoked key stays revoked
            copiedKeys++;
        }
        result.Add(("keys", keys.Count, copiedKeys));
        var budgets = await from.ListBudgetsAsync(ct).ConfigureAwait(false);
        foreach (var b in budgets) await to.UpsertBudgetAsync(b, ct).ConfigureAwait(false);
        result.Add(("budgets", budgets.Count, budgets.Count));
        var limits = await from.ListRateLimitsAsync(ct).ConfigureAwait(false);
        foreach (var l in limits) await to.UpsertRateLimitAsync(l, ct).ConfigureAwait(false);
        result.Add(("rate limits", limits.Count, limits.Count));
        var routes = await from.ListRoutesAsync(ct).ConfigureAwait(false);
        foreach (var r in routes) await to.UpsertRouteAsync(r, ct).ConfigureAwait(false);
        result.Add(("routes", routes.Count, routes.Count));
        var prices = from.LoadImportedPrices();
        if (prices.Count > 0) to.ImportPrices(prices, TimeProvider.System.GetUtcNow());
        result.Add(("imported prices", prices.Count, prices.Count));

        var total = await from.CountAsync(ct).ConfigureAwait(false);
        var before = await to.CountAsync(ct).ConfigureAwait(false);
        long done = 0;
        DateTimeOffset? after = null;
        var size = Page;
        var seen = new HashSet<string>(StringComparer.Ordinal); // ids at the boundary timestamp, already sent
        while (true)
        {
            var page = await from.ReadAsync(new LedgerQuery { From = after, Limit = size }, ct).ConfigureAwait(false);
            var fresh = page.Where(r => !seen.Contains(r.Id)).ToArray();
            if (fresh.Length == 0)
            {
                if (page.Count < size) break;
                size *= 2; // a whole page at one millisecond: read a bigger one
                continue;
            }
            await to.WriteAsync(fresh, ct).ConfigureAwait(false);
            done += fresh.Length;
            progress?.Invoke(done, total);
            if (page.Count < size) break;
            // the next page starts at the last timestamp (rows sharing it may span pages); those already sent are skipped
            var last = page[^1].Timestamp;
            seen = page.Where(r => r.Timestamp.ToUnixTimeMilliseconds() == last.ToUnixTimeMilliseconds()).Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
            after = DateTimeOffset.FromUnixTimeMilliseconds(last.ToUnixTimeMilliseconds());
            size = Page;
        }
        var now = await to.CountAsync(ct).ConfigureAwait(false);
        result.Add(("ledger rows", total, now - before));
        return result;
    }

    private static string Connection(ParseResult pr, Option<string?> option)
    {
        var given = pr.GetValue(option);
        if (string.IsNullOrWhiteSpace(given))
        {
            var options = CliOptions.StoreOptions();
            given = options.Postgres.ConnectionString;
        }
        if (string.IsNullOrWhiteSpace(given))
            throw new CliException("No PostgreSQL connection string: pass --postgres \"Host=...;Database=...;Username=...;Password=...\" or set Bursar__Postgres__ConnectionString.");
        var check = new Bursar.Hosting.PostgresStoreOptions { ConnectionString = given };
        try { check.Validate(); }
        catch (InvalidOperationException e) { throw new CliException(e.Message.Replace("Bursar:Postgres:ConnectionString", "--postgres", StringComparison.Ordinal)); }
        return given;
    }

    private static string Location(string connection)
    {
        var b = new Npgsql.NpgsqlConnectionStringBuilder(connection);
        return $"PostgreSQL {b.Host}:{b.Port}/{b.Database ?? b.Username}";
    }
}
