using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Bursar.Caching.Redis;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Limits;
using Bursar.Core.Runs;
using Bursar.Core.Storage;
using Bursar.Storage.PostgreSql;
using Bursar.Storage.Sqlite;
using StackExchange.Redis;

/// <summary>
/// The scale-out stores against the embedded defaults, in one run: a redis-server and a PostgreSQL server of their own
/// (temporary directories, free ports, stopped at the end), one gateway on SQLite + in-process counters and one on
/// PostgreSQL + Redis, the same key, four budgets and a rate limit on both, the same upstream. Alternating rounds at
/// concurrency 1 (JSON and SSE): the added p50 of the shared gateway over the embedded one. Then the Redis round trips
/// the request path makes: a budget reservation across four budgets, its settle, a rate-limit check, a run start.
/// </summary>
internal static class SharedBench
{
    public static async Task<int> RunAsync(int rounds, int seconds, int basePort)
    {
        var (up, embeddedPort, sharedPort) = (basePort, basePort + 1, basePort + 2);
        var self = typeof(SharedBench).Assembly.Location;
        var root = Path.Combine(Path.GetTempPath(), "bursar-shared-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        Process? redis = null;
        Bursar.Testing.LocalPostgres? pg = null;
        Process? upstream = null, embedded = null, shared = null;
        try
        {
            var redisPort = Bursar.Testing.LocalPostgres.FreePort();
            redis = Process.Start(new ProcessStartInfo("redis-server", $"--port {redisPort} --bind 127.0.0.1 --save \"\" --appendonly no") { UseShellExecute = false, RedirectStandardOutput = true })
                ?? throw new InvalidOperationException("redis-server did not start (Debian's redis-server)");
            pg = new Bursar.Testing.LocalPostgres();
            await pg.StartAsync();
            var pgConnection = await pg.CreateDatabaseAsync();

            var secret = VirtualKey.NewSecret();
            var embeddedData = Path.Combine(root, "embedded");
            Directory.CreateDirectory(embeddedData);
            await SeedAsync(new SqliteStore(Path.Combine(embeddedData, "bursar.db")), secret);
            await SeedAsync(new PostgresStore(pgConnection, TimeProvider.System), secret);

            upstream = Runner.Spawn(self, $"upstream --port {up}");
            embedded = Runner.Spawn(self, $"gateway --port {embeddedPort} --upstream http://127.0.0.1:{up} --data {embeddedData}");
            shared = Runner.Spawn(self, $"gateway --port {sharedPort} --upstream http://127.0.0.1:{up} --data {Path.Combine(root, "shared")} " +
                $"--Bursar:Store=postgres \"--Bursar:Postgres:ConnectionString={pgConnection}\" --Bursar:Redis:Configuration=127.0.0.1:{redisPort}");
            using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64, UseProxy = false, PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = TimeSpan.FromSeconds(30) };
            await Runner.WaitReady(http, $"http://127.0.0.1:{up}/ready");
            await Runner.WaitReady(http, $"http://127.0.0.1:{embeddedPort}/health/ready");
            await Runner.WaitReady(http, $"http://127.0.0.1:{sharedPort}/health/ready");
            foreach (var st in new[] { false, true })
                foreach (var port in new[] { up, embeddedPort, sharedPort })
                    await Runner.Load(http, $"http://127.0.0.1:{port}/v1/chat/completions", port == up ? null : secret, st, 1, 3);

            Console.WriteLine($"Shared stores vs embedded defaults, {TimeProvider.System.GetUtcNow():yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, concurrency 1, {rounds} rounds of {seconds} s per path (after a 1 s warm-up), alternating;");
            Console.WriteLine($"both gateways: 4 budgets (global, team, customer, key) and a key rate limit apply to every call; redis-server {RedisVersion()}, PostgreSQL {pg.Version}");
            Console.WriteLine();
            Console.WriteLine("| mode | embedded added p50 (per round) | median | shared added p50 (per round) | median | shared - embedded | embedded p99 | shared p99 | errors |");
            Console.WriteLine("|---|---|---:|---|---:|---:|---:|---:|---:|");
            foreach (var stream in new[] { false, true })
            {
                var (e, s, e99, s99) = (new List<double>(), new List<double>(), new List<double>(), new List<double>());
                long errors = 0;
                for (var r = 0; r < rounds; r++)
                {
                    var direct = await Runner.Load(http, $"http://127.0.0.1:{up}/v1/chat/completions", null, stream, 1, seconds);
                    var first = r % 2 == 0 ? embeddedPort : sharedPort;
                    var one = await Runner.Load(http, $"http://127.0.0.1:{first}/v1/chat/completions", secret, stream, 1, seconds);
                    var two = await Runner.Load(http, $"http://127.0.0.1:{(first == embeddedPort ? sharedPort : embeddedPort)}/v1/chat/completions", secret, stream, 1, seconds);
                    var (x, y) = first == embeddedPort ? (one, two) : (two, one);
                    e.Add(x.P50 - direct.P50); s.Add(y.P50 - direct.P50); e99.Add(x.P99); s99.Add(y.P99);
                    errors += direct.Errors + x.Errors + y.Errors;
                }
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {(stream ? "stream" : "json")} | {List(e)} ms | {Median(e):F3} ms | {List(s)} ms | {Median(s):F3} ms | {Median(s) - Median(e):F3} ms | {Median(e99):F3} ms | {Median(s99):F3} ms | {errors} |"));
            }

            Console.WriteLine();
            await RoundTripsAsync($"127.0.0.1:{redisPort}");
            return 0;
        }
        finally
        {
            foreach (var p in new[] { shared, embedded, upstream }) if (p is not null) Runner.Kill(p);
            if (redis is not null) Runner.Kill(redis);
            if (pg is not null) await pg.StopAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static async Task SeedAsync(IBursarStore store, string secret)
    {
        await store.AddAsync(new VirtualKey { Id = "key_bench", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), Team = "bench", Customer = "acme", CreatedAt = TimeProvider.System.GetUtcNow() }, default);
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "g", Scope = BudgetScope.Global, Period = BudgetPeriod.Month, LimitUsd = 1_000_000m }, default);
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "t", Scope = BudgetScope.Team, Value = "bench", Period = BudgetPeriod.Day, LimitUsd = 1_000_000m }, default);
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "c", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Month, LimitUsd = 1_000_000m, TimeZone = "Europe/Paris" }, default);
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "k", Scope = BudgetScope.Key, Value = "key_bench", Period = BudgetPeriod.Hour, LimitUsd = 1_000_000m }, default);
        await store.UpsertRateLimitAsync(new RateLimitDefinition(RateLimitScope.Key, "key_bench", 10_000_000, 10_000_000_000), default);
        (store as IDisposable)?.Dispose();
    }

    /// <summary>The Redis round trips of the request path, measured one at a time from this process (p50 / p99 of 5,000 each).</summary>
    private static async Task RoundTripsAsync(string redisAddress)
    {
        using var redis = await ConnectionMultiplexer.ConnectAsync(redisAddress);
        using var budgets = new RedisBudgetCounters(redis, TimeProvider.System, "bench:{b}:");
        var four = Enumerable.Range(0, 4).Select(i => new SharedBudget("b" + i, DateTimeOffset.UnixEpoch, DateTimeOffset.MaxValue, 1_000_000m)).ToArray();
        foreach (var b in four) await budgets.SeedAsync(b, 0m);
        var cells = new RedisRateLimitCells(redis, "bench:{l}:");
        var twoCells = new[] { new RateLimitCell("k:r", 1_000_000_000, 1), new RateLimitCell("k:t", 1_000_000_000, 500) };
        using var runs = new RedisRunState(redis, new RunCapOptions { MaxTurns = null, MaxToolCalls = null }, TimeProvider.System, "bench:{r}:");
        const int n = 5_000;
        async Task<double[]> Time(Func<int, Task> op)
        {
            for (var i = 0; i < 200; i++) await op(i); // warm-up
            var ms = new double[n];
            for (var i = 0; i < n; i++)
            {
                var t = Stopwatch.GetTimestamp();
                await op(i);
                ms[i] = Stopwatch.GetElapsedTime(t).TotalMilliseconds;
            }
            Array.Sort(ms);
            return ms;
        }
        var reserve = await Time(async _ => await budgets.TryReserveAsync(four, 0.001m, default));
        var settle = await Time(async _ => await budgets.SettleAsync(four, 0.001m, 0.0004m));
        var limit = await Time(async _ => await cells.TryAcquireAsync(twoCells, default));
        var start = await Time(async i => await runs.TryStartAsync("k", "run-" + (i % 50), 0.001m, default));
        var complete = await Time(async i => await runs.CompleteAsync("k", "run-" + (i % 50), 0, 0.0004m, null, 0.001m));
        Console.WriteLine($"Redis round trips from one process, one at a time, {n:N0} each after 200 to warm up:");
        Console.WriteLine();
        Console.WriteLine("| operation | p50 ms | p99 ms |");
        Console.WriteLine("|---|---:|---:|");
        foreach (var (name, v) in new[] { ("budget reservation, 4 budgets (one script)", reserve), ("budget settle, 4 budgets (one script)", settle), ("rate-limit check, 2 cells (one script)", limit), ("run start (one script)", start), ("run turn recorded (one script)", complete) })
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {v[n / 2]:F3} | {v[(int)(n * 0.99)]:F3} |"));
    }

    private static string RedisVersion()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("redis-server", "--version") { RedirectStandardOutput = true, UseShellExecute = false })!;
            var text = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            var v = text.Split(' ').FirstOrDefault(t => t.StartsWith("v=", StringComparison.Ordinal));
            return v?[2..] ?? "?";
        }
        catch (System.ComponentModel.Win32Exception) { return "?"; }
    }

    private static double Median(List<double> v) { var s = v.Order().ToArray(); return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2; }

    private static string List(List<double> v) => string.Join(", ", v.Select(d => d.ToString("F3", CultureInfo.InvariantCulture)));
}
