using System.Net;
using System.Text.Json.Nodes;
using Bursar.Caching.Redis;
using Bursar.Core.Budgets;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Budgets counted in a real Redis by several gateway instances at once: together they never hold or spend more than
/// the budget, a dead instance's holds expire, money is exact in nano-dollars, and a Redis outage does what the policy says.
/// </summary>
public sealed class RedisBudgetTests(RedisServer redis) : IClassFixture<RedisServer>, IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-rb-" + Guid.NewGuid().ToString("N"));
    private readonly string _prefix = "bursar:{t" + Guid.NewGuid().ToString("N") + "}:";
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed class NoAlerts : IBudgetAlertSink
    {
        public int Count;
        public void SoftLimitReached(BudgetStatus status) => Interlocked.Increment(ref Count);
    }

    private ConnectionMultiplexer Connect(string? connection = null)
    {
        var config = ConfigurationOptions.Parse(connection ?? redis.ConnectionString);
        config.AbortOnConnectFail = false;
        config.SyncTimeout = 1000;
        config.AsyncTimeout = 1000;
        config.ConnectTimeout = 1000;
        var c = ConnectionMultiplexer.Connect(config);
        _owned.Add(c);
        return c;
    }

    /// <summary>One gateway instance's budgets: its own store (the same definitions), the shared counters.</summary>
    private async Task<(BudgetManager Budgets, RedisBudgetCounters Counters)> Instance(decimal limit, TimeSpan? holdTtl = null, SharedCountersDownPolicy policy = SharedCountersDownPolicy.FailClosed, string? connection = null, NoAlerts? alerts = null)
    {
        Directory.CreateDirectory(_dir);
        var store = new SqliteStore(Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".db"));
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "shared", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Month, LimitUsd = limit }, default);
        var counters = new RedisBudgetCounters(Connect(connection), TimeProvider.System, _prefix, holdTtl: holdTtl);
        _owned.Add(counters);
        var budgets = new BudgetManager(store, alerts ?? new NoAlerts(), TimeProvider.System, NullLogger<BudgetManager>.Instance, counters, new BudgetOptions { WhenSharedCountersDown = policy });
        await budgets.ReloadAsync(default);
        return (budgets, counters);
    }

    private static string? Failure;

    private static readonly BudgetSubject Acme = new("k", null, "acme", null, "gpt-4o");

    [Fact]
    public async Task Two_instances_never_hold_or_spend_more_than_the_budget_together()
    {
        var alerts = new NoAlerts();
        var a = await Instance(1.00m, alerts: alerts);
        var b = await Instance(1.00m, alerts: alerts);
        // 200 calls at once, half on each instance, each holding a worst case of $0.03 against $1.00: 33 fit, not 34
        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            var m = i % 2 == 0 ? a.Budgets : b.Budgets;
            var d = await m.TryReserveAsync(Acme, 0.03m, default);
            if (d.Held) return (m, d.Reservation);
            if (d.Refusal?.Unavailable is { } u) Failure = u;
            return (m, (BudgetReservation?)null);
        }));
        var held = results.Where(x => x.Item2 is not null).ToArray();
        Assert.True(33 == held.Length, $"held {held.Length}; {a.Budgets.SharedFailures + b.Budgets.SharedFailures} failures: {Failure}");
        foreach (var (m, r) in held) m.Settle(r!, 0.02m);
        Assert.True(await a.Budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10)) && await b.Budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10)));
        var status = Assert.Single(a.Budgets.Snapshot());
        Assert.Equal((0.66m, 0m), (status.SpentUsd, status.ReservedUsd)); // both instances' settles, as each sees them
        Assert.Equal(status.SpentUsd, Assert.Single(b.Budgets.Snapshot()).SpentUsd);
        Assert.True(a.Budgets.TryReserve(Acme, 0.34m, out var last, out _)); // exactly to the limit
        Assert.False(b.Budgets.TryReserve(Acme, 0.000000001m, out _, out var over));
        Assert.Contains("$0.66 spent and $0.34 reserved", over!.Message);
        Assert.Equal(0, alerts.Count); // $0.66 is below the soft limit ($0.80)
        a.Budgets.Settle(last, 0.30m);
        await a.Budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0.96m, b.Budgets.Snapshot()[0].SpentUsd);
        Assert.Equal(1, alerts.Count); // raised once, by the instance whose settle crossed it
    }

    [Fact]
    public async Task A_dead_instance_s_holds_expire_so_the_budget_is_not_stuck_and_a_live_one_s_do_not()
    {
        // a 3 s hold: the live instance's heartbeat (every second) keeps its own even when a loaded machine delays a beat
        var dead = await Instance(1.00m, holdTtl: TimeSpan.FromSeconds(3));
        var live = await Instance(1.00m, holdTtl: TimeSpan.FromSeconds(3));
        var other = await Instance(1.00m, holdTtl: TimeSpan.FromSeconds(3));
        Assert.True(dead.Budgets.TryReserve(Acme, 0.50m, out _, out _));
        Assert.True(live.Budgets.TryReserve(Acme, 0.40m, out var kept, out _));
        dead.Counters.Dispose(); // killed: its heartbeat stops, its call never settles
        Assert.False(other.Budgets.TryReserve(Acme, 0.20m, out _, out var refused));
        Assert.True(refused!.Message.Contains("$0.90 reserved", StringComparison.Ordinal), refused.Message);
        // the dead instance's hold expires (3 s after its last beat); the live one's heartbeat keeps its own
        var started = TimeProvider.System.GetTimestamp();
        Bursar.Core.Budgets.BudgetReservation r;
        Bursar.Core.Budgets.BudgetRefusal? still;
        bool held;
        while (!(held = other.Budgets.TryReserve(Acme, 0.20m, out r, out still)) && TimeProvider.System.GetElapsedTime(started) < TimeSpan.FromSeconds(20))
            await Task.Delay(200);
        Assert.True(held, still?.Message);
        Assert.True(TimeProvider.System.GetElapsedTime(started) >= TimeSpan.FromSeconds(2), "the dead instance's hold lapsed before its TTL");
        Assert.False(other.Budgets.TryReserve(Acme, 0.45m, out _, out var full));
        Assert.Contains("$0.60 reserved", full!.Message);
        live.Budgets.Settle(kept, 0.10m);
        other.Budgets.Settle(r, 0.05m);
        await live.Budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10));
        await other.Budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10));
        Assert.Equal((0.15m, 0m), (other.Budgets.Snapshot()[0].SpentUsd, other.Budgets.Snapshot()[0].ReservedUsd));
    }

    [Fact]
    public async Task Money_is_counted_in_whole_nano_dollars_rounded_up_never_down()
    {
        Assert.Equal(1, RedisBudgetCounters.Nano(0.0000000001m));
        Assert.Equal(38, RedisBudgetCounters.Nano(0.0000000375m)); // a cached Claude token: 37.5 nano-dollars
        Assert.Equal(1_000_000_001, RedisBudgetCounters.Nano(1.0000000001m));
        Assert.Equal(0, RedisBudgetCounters.Nano(-1m));
        var (budgets, _) = await Instance(5m);
        for (var i = 0; i < 1000; i++)
        {
            Assert.True(budgets.TryReserve(Acme, 0.001m, out var r, out _));
            budgets.Settle(r, 0.0000000375m);
        }
        await budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0.000038m, budgets.Snapshot()[0].SpentUsd); // 1,000 x 38 nano: at most a nano-dollar over per call
        // a big, exact amount
        Assert.True(budgets.TryReserve(Acme, 1m, out var big, out _));
        budgets.Settle(big, 4.123456789m);
        await budgets.FlushSettlesAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(4.123494789m, budgets.Snapshot()[0].SpentUsd);
    }

    [Fact]
    public async Task The_ledger_seeds_a_period_once_and_only_ever_raises_it()
    {
        var (_, counters) = await Instance(5m);
        var b = new SharedBudget("seeded", DateTimeOffset.UnixEpoch, DateTimeOffset.MaxValue, 5m);
        await counters.SeedAsync(b, 0.5m);
        await counters.SeedAsync(b, 0.3m); // another instance's ledger lags: the counter stays
        Assert.Equal(0.5m, (await counters.ReadAsync(b)).SpentUsd);
        await counters.SeedAsync(b, 0.7m); // a settle lost with an instance that died while Redis was down: the ledger raises it
        Assert.Equal(0.7m, (await counters.ReadAsync(b)).SpentUsd);
        var reset = b with { CountFrom = DateTimeOffset.UnixEpoch.AddDays(1) }; // reset by hand: a new count
        Assert.Equal(0m, (await counters.ReadAsync(reset)).SpentUsd);
    }

    [Fact]
    public async Task With_redis_down_budgets_fail_closed_by_default_or_count_locally_when_configured()
    {
        var own = new RedisServer();
        await own.InitializeAsync();
        try
        {
            var closed = await Instance(1m, connection: own.ConnectionString);
            var local = await Instance(1m, connection: own.ConnectionString, policy: SharedCountersDownPolicy.LocalCounters);
            Assert.True(closed.Budgets.TryReserve(Acme, 0.1m, out var before, out _));
            own.Stop();
            Assert.False(closed.Budgets.TryReserve(Acme, 0.1m, out _, out var refusal));
            Assert.Contains($"Redis at 127.0.0.1:{own.Port}", refusal!.Unavailable);
            Assert.Contains("WhenSharedCountersDown", refusal.Message);
            Assert.True(local.Budgets.TryReserve(Acme, 0.1m, out var counted, out _)); // counted in this process instead
            Assert.False(local.Budgets.TryReserve(Acme, 0.95m, out _, out var localRefusal)); // and still limited there
            Assert.Null(localRefusal!.Unavailable);
            closed.Budgets.Settle(before, 0.05m); // cannot reach Redis: kept, not lost
            local.Budgets.Settle(counted, 0.01m);
            Assert.False(await closed.Budgets.FlushSettlesAsync(TimeSpan.FromSeconds(2.5)), "a settle landed in a Redis that is down");
            Assert.Equal(1, closed.Budgets.PendingSettles);
            // the settle's own attempt fails once its connection to the stopped Redis times out, which on a loaded machine can
            // outlast the flush above: wait for it to be counted (the refused reservation was the first failure)
            for (var i = 0; i < 200 && closed.Budgets.SharedFailures < 2; i++) await Task.Delay(100);
            Assert.True(closed.Budgets.SharedFailures >= 2, $"{closed.Budgets.SharedFailures} failures counted");
        }
        finally
        {
            await own.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_redis_restarted_empty_is_seeded_from_the_ledger_before_it_hands_out_money_again()
    {
        var own = new RedisServer();
        await own.InitializeAsync();
        var port = own.Port;
        try
        {
            Directory.CreateDirectory(_dir);
            var store = new SqliteStore(Path.Combine(_dir, "seeded.db"));
            await store.UpsertBudgetAsync(new BudgetDefinition { Id = "shared", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Month, LimitUsd = 1m }, default);
            var now = TimeProvider.System.GetUtcNow();
            await store.WriteAsync([.. Enumerable.Range(0, 8).Select(i => new Bursar.Core.Ledger.LedgerRecord
            {
                Id = $"spent-{i}", Timestamp = now, Dialect = "openai", Outcome = "ok", Customer = "acme", Priced = true, Cost = 0.10m,
            })], default);
            var counters = new RedisBudgetCounters(Connect(own.ConnectionString), TimeProvider.System, _prefix);
            _owned.Add(counters);
            var budgets = new BudgetManager(store, new NoAlerts(), TimeProvider.System, NullLogger<BudgetManager>.Instance, counters);
            await budgets.ReloadAsync(default);
            Assert.False((await budgets.TryReserveAsync(Acme, 0.30m, default)).Held); // $0.80 of the ledger is in Redis

            own.Stop();
            await own.DisposeAsync();
            own = RedisServer.OnPort(port); // back on the same address with no data (no persistence)
            await own.InitializeAsync();
            Bursar.Core.Budgets.BudgetDecision d = default;
            for (var i = 0; i < 50; i++)
            {
                d = await budgets.TryReserveAsync(Acme, 0.30m, default);
                if (d.Refusal?.Unavailable is null) break;
                await Task.Delay(100); // reconnecting
            }
            Assert.False(d.Held, "an empty Redis must not count the period from zero");
            Assert.Contains("$0.80 spent", d.Refusal!.Message);
            Assert.True((await budgets.TryReserveAsync(Acme, 0.20m, default)).Held);
        }
        finally
        {
            await own.DisposeAsync();
        }
    }
}

/// <summary>A gateway whose budgets are counted in Redis: the caller sees a 503 in its own dialect naming Redis while it is down, and /health/ready says so.</summary>
public sealed class RedisBudgetGatewayTests
{
    [Fact]
    public async Task A_gateway_refuses_budgeted_calls_with_a_dialect_shaped_503_naming_redis_while_it_is_down()
    {
        var redis = new RedisServer();
        await redis.InitializeAsync();
        var gw = new ConfiguredGateway([$"--Bursar:Redis:Configuration={redis.ConnectionString}"]);
        await gw.InitializeAsync();
        try
        {
            var (status, body) = await gw.AdminAsync(HttpMethod.Put, "/admin/budgets/acme", new { scope = "customer", value = "acme", period = "month", limit_usd = 5m });
            Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
            var acme = await gw.CreateKeyAsync(team: null, customer: "acme");
            var other = await gw.CreateKeyAsync(team: null, customer: "globex");
            var chat = new JsonObject { ["model"] = "gpt-4o-mini", ["max_tokens"] = 20, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) }.ToJsonString();
            var messages = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 20, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) }.ToJsonString();
            using (var ok = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", chat, acme, "redis-budget"))) Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            await gw.Services.GetRequiredService<BudgetManager>().FlushSettlesAsync(TimeSpan.FromSeconds(10)); // settles land off the caller's path
            var spent = (await gw.AdminAsync(HttpMethod.Get, "/admin/budgets")).Body!.AsArray().Single()!["spent_usd"]!.GetValue<decimal>();
            Assert.True(spent > 0, "the call's cost is in the shared counters");

            redis.Stop();
            using (var down = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", chat, acme, "redis-budget")))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, down.StatusCode);
                var error = JsonNode.Parse(await down.Content.ReadAsStringAsync())!["error"]!;
                Assert.Equal("budget_store_unavailable", error["code"]!.GetValue<string>());
                Assert.Contains($"Redis at 127.0.0.1:{redis.Port}", error["message"]!.GetValue<string>());
            }
            using (var down = await gw.Http.SendAsync(gw.Post("/v1/messages", messages, acme, "redis-budget")))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, down.StatusCode);
                var doc = JsonNode.Parse(await down.Content.ReadAsStringAsync())!;
                Assert.Equal("error", doc["type"]!.GetValue<string>());
                Assert.Contains("Redis at", doc["error"]!["message"]!.GetValue<string>());
            }
            // a call no budget applies to is not refused
            using (var free = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", chat, other, "redis-budget"))) Assert.Equal(HttpStatusCode.OK, free.StatusCode);
            using var ready = await gw.Http.GetAsync("/health/ready");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            var rows = await gw.LedgerAsync("redis-budget", 4);
            Assert.Equal(2, rows.Count(r => r.ErrorType == "budget_store_unavailable" && r.Cost == 0m));
        }
        finally
        {
            await gw.DisposeAsync();
            await redis.DisposeAsync();
        }
    }
}
