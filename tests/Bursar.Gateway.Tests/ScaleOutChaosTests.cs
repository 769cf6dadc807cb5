using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Npgsql;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Three real <c>bursar serve</c> processes on one PostgreSQL and one Redis, a client spreading calls round-robin over
/// them: together they never overspend a budget, an instance killed with SIGKILL mid-load leaves every answered call
/// with exactly one ledger row (after its restart replays its journal), and its reservations expire so the budget is
/// not stuck; Redis (run as production should, append-only with fsync) and PostgreSQL each crashed and restarted mid-load
/// lose no answered call's row, never reopen a spent budget, and while down give what the documented policy says.
/// </summary>
[Collection("processes")]
public sealed class ScaleOutChaosTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-chaos-" + Guid.NewGuid().ToString("N"));
    private readonly PostgresServer _postgres = new();
    private RedisServer _redis;
    private const string AdminKey = "chaos-admin-key";
    private string _db = "";

    public ScaleOutChaosTests() => _redis = RedisServer.Persistent(Path.Combine(_dir, "redis"));

    public async Task InitializeAsync()
    {
        await _postgres.InitializeAsync();
        await _redis.InitializeAsync();
        _db = await _postgres.CreateDatabaseAsync();
    }

    public async Task DisposeAsync()
    {
        await _redis.DisposeAsync();
        await _postgres.DisposeAsync();
        NpgsqlConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private Dictionary<string, string> Env() => new()
    {
        ["Bursar__Store"] = "postgres",
        ["Bursar__Postgres__ConnectionString"] = _db,
        ["Bursar__Redis__Configuration"] = _redis.ConnectionString,
        ["Bursar__Redis__HoldTtl"] = "00:00:03",
        ["Bursar__AdminKey"] = AdminKey,
    };

    private Task<BursarProcess> StartAsync(int instance) =>
        BursarProcess.StartAsync(Path.Combine(_dir, "instance-" + instance), BursarProcess.FreePort(), Env(), "serve", "--urls", "http://127.0.0.1:{port}");

    private static string Call(string text) => new JsonObject
    {
        // ~3,000 output tokens of Haiku ($0.015) per call, a worst case of 4,000 ($0.02)
        ["model"] = "claude-haiku-4-5", ["max_tokens"] = 4000,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text + " [[sim:tokens=3000]]" }),
    }.ToJsonString();

    private static string? LastUnavailable;
    private static string? LastServerError;

    private static async Task<(HttpStatusCode Status, string? RequestId)> SendAsync(HttpClient http, string baseUrl, string key, string text, CancellationToken ct = default)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, baseUrl + "/v1/messages") { Content = new StringContent(Call(text), Encoding.UTF8, "application/json") };
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var resp = await http.SendAsync(req, ct);
        var body = await resp.Content.ReadAsStringAsync(ct); // the whole answer, or an exception when the instance dies first
        if (resp.StatusCode == HttpStatusCode.ServiceUnavailable) LastUnavailable = body;
        if ((int)resp.StatusCode >= 500) LastServerError = $"{(int)resp.StatusCode} {body}";
        return (resp.StatusCode, resp.Headers.TryGetValues("x-bursar-request-id", out var v) ? v.Single() : null);
    }

    private async Task PutBudgetAsync(HttpClient http, string baseUrl, string customer)
    {
        using var req = new HttpRequestMessage(HttpMethod.Put, $"{baseUrl}/admin/budgets/{customer}")
        {
            Content = new StringContent($$"""{"scope":"customer","value":"{{customer}}","period":"month","limit_usd":1.00}""", Encoding.UTF8, "application/json"),
        };
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);
        using var resp = await http.SendAsync(req);
        Assert.True(resp.IsSuccessStatusCode, await resp.Content.ReadAsStringAsync());
    }

    private async Task<Dictionary<string, decimal>> LedgerAsync(string customer)
    {
        await using var c = new NpgsqlConnection(_db);
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT id, coalesce(cost, 0)::text FROM ledger WHERE customer = @c", c);
        cmd.Parameters.AddWithValue("c", customer);
        await using var r = await cmd.ExecuteReaderAsync();
        var rows = new Dictionary<string, decimal>();
        while (await r.ReadAsync()) rows.Add(r.GetString(0), decimal.Parse(r.GetString(1), CultureInfo.InvariantCulture));
        return rows;
    }

    private static async Task<decimal> ReservedAsync(HttpClient http, string baseUrl, string customer)
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, baseUrl + "/admin/budgets");
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);
        using var resp = await http.SendAsync(req);
        var budgets = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!.AsArray();
        return budgets.Single(b => b!["id"]!.GetValue<string>() == customer)!["reserved_usd"]!.GetValue<decimal>();
    }

    [Fact]
    public async Task Three_instances_never_overspend_and_a_killed_one_loses_no_row_and_holds_no_money()
    {
        var keyA = await BursarProcess.CreateKeyAsync(Path.Combine(_dir, "cli"), Env(), "--customer", "chaos-a");
        var keyB = await BursarProcess.CreateKeyAsync(Path.Combine(_dir, "cli"), Env(), "--customer", "chaos-b");
        var instances = new BursarProcess?[3];
        for (var i = 0; i < 3; i++) instances[i] = await StartAsync(i);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        try
        {
            var urls = instances.Select(p => p!.BaseUrl).ToArray();
            await PutBudgetAsync(http, urls[0], "chaos-a");
            await PutBudgetAsync(http, urls[0], "chaos-b");
            // the other instances load the budgets on their next policy refresh; a budget write on one reloads only that one
            foreach (var u in urls.Skip(1)) await PutBudgetAsync(http, u, "chaos-a");
            foreach (var u in urls.Skip(1)) await PutBudgetAsync(http, u, "chaos-b");

            // 1. 200 concurrent calls, round-robin over the three, $3 of demand against $1.00
            var first = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => SendAsync(http, urls[i % 3], keyA, $"report {i}")));
            var ok = first.Count(r => r.Status == HttpStatusCode.OK);
            // answered, refused by the budget, or (on a starved machine, Redis slower than its timeout) refused as the policy says: never anything else
            Assert.True(ok > 0 && first.All(r => r.Status is HttpStatusCode.OK or HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable), string.Join(", ", first.Select(r => r.Status).Distinct()));
            var unavailable = first.Count(r => r.Status == HttpStatusCode.ServiceUnavailable);
            Assert.True(unavailable <= 20, $"{unavailable} of 200 calls found Redis too slow: {LastUnavailable}");
            var settled = await EventuallyAsync(async () => await LedgerAsync("chaos-a"), rows => rows.Count >= 200);
            Assert.Equal(200, settled.Count); // every call has its row, the refused ones too
            var spent = settled.Values.Sum();
            Assert.True(spent <= 1.00m, $"settled ${spent} across three instances against a $1.00 budget");
            Assert.True(spent > 0.5m, $"only ${spent} spent: the budget should let most of $1.00 through");

            // 2. load on all three, then SIGKILL one of them mid-load
            var received = new ConcurrentDictionary<string, bool>();
            using var stop = new CancellationTokenSource();
            var clients = Enumerable.Range(0, 12).Select(c => Task.Run(async () =>
            {
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    try
                    {
                        var (status, id) = await SendAsync(http, urls[(c + i) % 3], keyB, $"client {c} call {i}", stop.Token);
                        if (id is not null && status is HttpStatusCode.OK or HttpStatusCode.TooManyRequests) received[id] = true;
                    }
                    catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
                    {
                        // the killed instance: this caller got no answer
                    }
                }
            })).ToArray();
            await Task.Delay(TimeSpan.FromSeconds(2));
            instances[1]!.Kill();
            await Task.Delay(TimeSpan.FromSeconds(2)); // the two survivors keep serving
            await stop.CancelAsync();
            await Task.WhenAll(clients);
            Assert.True(received.Count > 20, $"only {received.Count} answers");

            // the killed instance's holds expire (HoldTtl 3 s): nothing is left reserved once the survivors are idle
            var reserved = await EventuallyAsync(() => ReservedAsync(http, urls[0], "chaos-b"), r => r == 0m, TimeSpan.FromSeconds(15));
            Assert.Equal(0m, reserved);

            // the killed instance restarts on its data directory and replays its journal into PostgreSQL
            await instances[1]!.DisposeAsync();
            instances[1] = await StartAsync(1);
            var rows = await EventuallyAsync(() => LedgerAsync("chaos-b"), r => received.Keys.All(r.ContainsKey), TimeSpan.FromSeconds(30));
            var missing = received.Keys.Where(id => !rows.ContainsKey(id)).ToArray();
            Assert.True(missing.Length == 0, $"{missing.Length} of {received.Count} answered calls have no ledger row");
            Assert.True(rows.Values.Sum() <= 1.00m, $"settled ${rows.Values.Sum()} against $1.00 with an instance killed mid-load");
        }
        finally
        {
            foreach (var p in instances) if (p is not null) await p.DisposeAsync();
        }
    }

    [Fact]
    public async Task Redis_and_postgres_crashed_mid_load_lose_no_answered_row_and_never_reopen_a_spent_budget()
    {
        var key = await BursarProcess.CreateKeyAsync(Path.Combine(_dir, "cli"), Env(), "--customer", "chaos-c");
        var instances = new BursarProcess?[3];
        for (var i = 0; i < 3; i++) instances[i] = await StartAsync(i);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        try
        {
            var urls = instances.Select(p => p!.BaseUrl).ToArray();
            foreach (var u in urls) await PutBudgetAsync(http, u, "chaos-c");
            var received = new ConcurrentDictionary<string, HttpStatusCode>();
            var statuses = new ConcurrentDictionary<HttpStatusCode, int>();
            var phase = "before";
            var byPhase = new ConcurrentDictionary<string, int>(); // answered calls per phase
            var unanswered = new ConcurrentQueue<string>();
            using var stop = new CancellationTokenSource();
            var clients = Enumerable.Range(0, 12).Select(c => Task.Run(async () =>
            {
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    try
                    {
                        var (status, id) = await SendAsync(http, urls[(c + i) % 3], key, $"client {c} call {i}", stop.Token);
                        statuses.AddOrUpdate(status, 1, (_, n) => n + 1);
                        byPhase.AddOrUpdate(phase + " " + (int)status, 1, (_, n) => n + 1);
                        if (id is not null && status is HttpStatusCode.OK or HttpStatusCode.TooManyRequests) received[id] = status;
                    }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
                    catch (Exception e) when (e is HttpRequestException or IOException) { unanswered.Enqueue(e.Message); }
                }
            })).ToArray();
            await Task.Delay(TimeSpan.FromSeconds(2));

            // Redis crashes (SIGKILL) and is back a second later on the same address with what it had written
            phase = "redis down";
            var port = _redis.Port;
            _redis.Stop();
            await _redis.DisposeAsync();
            await Task.Delay(TimeSpan.FromSeconds(1));
            _redis = RedisServer.Persistent(Path.Combine(_dir, "redis"), port);
            await _redis.InitializeAsync();
            phase = "redis back";
            await Task.Delay(TimeSpan.FromSeconds(2));

            // PostgreSQL crashes (immediate stop: no checkpoint, connections cut) and is back a second later
            phase = "postgres down";
            await _postgres.CrashAndRestartAsync(TimeSpan.FromSeconds(1));
            phase = "postgres back";
            await Task.Delay(TimeSpan.FromSeconds(2));
            await stop.CancelAsync();
            await Task.WhenAll(clients);

            var seen = string.Join(", ", byPhase.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}: {p.Value}"));
            // answered, refused by the budget, or refused as the policy says while Redis is down (503 naming it): never a 500, never a dropped connection
            Assert.True(statuses.Keys.All(s => s is HttpStatusCode.OK or HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable), $"{seen}; last: {LastServerError}; {FirstError(instances)}");
            Assert.True(unanswered.IsEmpty, $"{unanswered.Count} calls got no answer: {unanswered.FirstOrDefault()}");
            Assert.True(statuses.GetValueOrDefault(HttpStatusCode.OK) > 0, seen);
            // the budget was spent before Redis crashed; back with its data, Redis must not hand it out again
            Assert.True(byPhase.GetValueOrDefault("redis back 200") + byPhase.GetValueOrDefault("postgres down 200") + byPhase.GetValueOrDefault("postgres back 200") == 0
                || byPhase.GetValueOrDefault("before 429") == 0, $"a spent budget was reopened: {seen}");

            // every answered call has its row once PostgreSQL is back (the instances replay what they spooled), and the spend stays within $1.00
            var rows = await EventuallyAsync(() => LedgerAsync("chaos-c"), r => received.Keys.All(r.ContainsKey), TimeSpan.FromSeconds(30));
            var missing = received.Keys.Where(id => !rows.ContainsKey(id)).ToArray();
            Assert.True(missing.Length == 0, $"{missing.Length} of {received.Count} answered calls have no ledger row ({seen})");
            Assert.True(rows.Values.Sum() <= 1.00m, $"settled ${rows.Values.Sum()} against $1.00 with Redis and PostgreSQL crashed mid-load ({seen})");
        }
        finally
        {
            foreach (var p in instances) if (p is not null) await p.DisposeAsync();
        }
    }

    /// <summary>The first unexpected error the instances logged, with its stack, for a failure message.</summary>
    private static string FirstError(IEnumerable<BursarProcess?> instances)
    {
        foreach (var p in instances)
        {
            var log = p?.Log ?? "";
            var at = log.IndexOf("Exception", StringComparison.Ordinal);
            if (at >= 0) return log.Substring(Math.Max(0, at - 300), Math.Min(4000, log.Length - Math.Max(0, at - 300)));
        }
        return "no instance logged an exception";
    }

    private static async Task<T> EventuallyAsync<T>(Func<Task<T>> read, Func<T, bool> done, TimeSpan? within = null)
    {
        var until = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(20));
        var value = await read();
        while (!done(value) && DateTime.UtcNow < until)
        {
            await Task.Delay(200);
            value = await read();
        }
        return value;
    }
}
