using Bursar.Core.Budgets;
using Bursar.Core.Ledger;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests;

public sealed class BudgetTests
{
    private sealed class MemoryBudgets(params BudgetDefinition[] defs) : IBudgetStore
    {
        public List<BudgetDefinition> Defs { get; } = [.. defs];
        public Dictionary<string, decimal> Seed { get; } = [];
        public Task<IReadOnlyList<BudgetDefinition>> ListBudgetsAsync(CancellationToken ct) => Task.FromResult<IReadOnlyList<BudgetDefinition>>(Defs.ToArray());
        public Task UpsertBudgetAsync(BudgetDefinition b, CancellationToken ct) { Defs.RemoveAll(d => d.Id == b.Id); Defs.Add(b); return Task.CompletedTask; }
        public Task<bool> DeleteBudgetAsync(string id, CancellationToken ct) => Task.FromResult(Defs.RemoveAll(d => d.Id == id) > 0);
        public Task<bool> ResetBudgetAsync(string id, DateTimeOffset when, CancellationToken ct) => Task.FromResult(false);
        public Task<decimal> SpentSinceAsync(BudgetDefinition b, DateTimeOffset since, CancellationToken ct) => Task.FromResult(Seed.GetValueOrDefault(b.Id));
    }

    private sealed class CountingAlerts : IBudgetAlertSink
    {
        public List<BudgetStatus> Alerts { get; } = [];
        public void SoftLimitReached(BudgetStatus status) => Alerts.Add(status);
    }

    private static BudgetDefinition Daily(string id, BudgetScope scope, string? value, decimal limit, string tz = "UTC") =>
        new() { Id = id, Scope = scope, Value = value, Period = BudgetPeriod.Day, LimitUsd = limit, TimeZone = tz };

    private static readonly BudgetSubject Acme = new("key_1", "eng", "acme", "search", "gpt-4o");

    private static async Task<(BudgetManager, FakeTimeProvider, CountingAlerts, MemoryBudgets)> Manager(params BudgetDefinition[] defs)
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
        var store = new MemoryBudgets(defs);
        var alerts = new CountingAlerts();
        var m = new BudgetManager(store, alerts, time, NullLogger<BudgetManager>.Instance);
        await m.ReloadAsync(default);
        return (m, time, alerts, store);
    }

    [Fact]
    public async Task Reservations_count_against_the_limit_until_settled_to_the_actual_cost()
    {
        var (m, _, _, _) = await Manager(Daily("c", BudgetScope.Customer, "acme", 1.00m));
        Assert.True(m.TryReserve(Acme, 0.60m, out var r1, out _));
        Assert.False(m.TryReserve(Acme, 0.60m, out _, out var refusal));
        Assert.Equal(0.60m, refusal!.ReservedUsd);
        Assert.Contains("customer 'acme' day budget", refusal.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("$1.00", refusal.Message);
        m.Settle(r1, 0.30m);
        m.Settle(r1, 0.30m); // idempotent
        Assert.True(m.TryReserve(Acme, 0.60m, out var r2, out _));
        var s = Assert.Single(m.Snapshot());
        Assert.Equal((0.30m, 0.60m), (s.SpentUsd, s.ReservedUsd));
        m.Settle(r2, 0m); // failed call: nothing spent
        Assert.Equal((0.30m, 0m), (m.Snapshot()[0].SpentUsd, m.Snapshot()[0].ReservedUsd));
    }

    [Fact]
    public async Task A_settled_reservation_is_reused_for_the_next_hold_and_a_live_one_never_is()
    {
        var (m, _, _, _) = await Manager(Daily("c", BudgetScope.Customer, "acme", 1.00m));
        var first = (await m.TryReserveAsync(Acme, 0.40m, default)).Reservation;

        // still live: a new reservation, and both holds count
        var second = (await m.TryReserveAsync(Acme, 0.30m, default, spare: first)).Reservation;
        Assert.NotSame(first, second);
        Assert.Equal(0.70m, m.Snapshot()[0].ReservedUsd);

        m.Settle(first, 0.10m);
        var third = (await m.TryReserveAsync(Acme, 0.20m, default, spare: first)).Reservation; // settled: written into it
        Assert.Same(first, third);
        Assert.Equal(0.20m, third.Amount);
        Assert.Equal((0.10m, 0.50m), (m.Snapshot()[0].SpentUsd, m.Snapshot()[0].ReservedUsd));

        m.Settle(third, 0.05m);
        m.Settle(third, 0.05m); // settled once, as any reservation
        m.Settle(second, 0.30m);
        Assert.Equal((0.45m, 0m), (m.Snapshot()[0].SpentUsd, m.Snapshot()[0].ReservedUsd));
    }

    [Fact]
    public async Task Every_applicable_budget_must_admit_the_call_and_others_are_untouched()
    {
        var (m, _, _, _) = await Manager(Daily("team", BudgetScope.Team, "eng", 10m), Daily("cust", BudgetScope.Customer, "acme", 0.5m), Daily("other", BudgetScope.Customer, "globex", 0.1m));
        Assert.False(m.TryReserve(Acme, 0.6m, out _, out var refusal));
        Assert.Equal("cust", refusal!.Budget.Id);
        Assert.All(m.Snapshot(), s => Assert.Equal(0m, s.ReservedUsd)); // all or nothing
        Assert.True(m.TryReserve(Acme, 0.4m, out var r, out _));
        Assert.Equal(["team", "cust"], r.BudgetIds);
    }

    [Fact]
    public async Task Periods_reset_at_the_calendar_boundary_of_the_budget_time_zone()
    {
        var (m, time, _, _) = await Manager(Daily("paris", BudgetScope.Customer, "acme", 1m, "Europe/Paris"));
        Assert.True(m.TryReserve(Acme, 1m, out var r, out _));
        m.Settle(r, 1m);
        Assert.False(m.TryReserve(Acme, 0.01m, out _, out var refusal));
        Assert.Equal(DateTimeOffset.Parse("2026-11-23T23:00:00Z"), refusal!.ResetsAt); // midnight in Paris (UTC+1)
        time.SetUtcNow(DateTimeOffset.Parse("2026-11-23T22:59:59Z"));
        Assert.False(m.TryReserve(Acme, 0.01m, out _, out _));
        time.SetUtcNow(DateTimeOffset.Parse("2026-11-23T23:00:00Z"));
        Assert.True(m.TryReserve(Acme, 0.01m, out _, out _));
    }

    [Theory]
    [InlineData(BudgetPeriod.Hour, "2026-11-25T10:17:00Z", "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")]
    [InlineData(BudgetPeriod.Week, "2026-11-25T10:17:00Z", "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z")]
    [InlineData(BudgetPeriod.Month, "2026-11-25T10:17:00Z", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")]
    public void Windows_follow_the_calendar(BudgetPeriod period, string now, string start, string end)
    {
        var (s, e) = BudgetWindow.Current(period, "UTC", DateTimeOffset.Parse(now));
        Assert.Equal((DateTimeOffset.Parse(start), DateTimeOffset.Parse(end)), (s, e));
    }

    [Fact]
    public void An_unknown_time_zone_is_refused_by_name()
    {
        var e = Assert.Throws<ArgumentException>(() => Daily("x", BudgetScope.Global, null, 1, "Mars/Olympus").Validate());
        Assert.Contains("Mars/Olympus", e.Message);
    }

    [Fact]
    public async Task The_soft_limit_alerts_exactly_once_per_period()
    {
        var (m, time, alerts, _) = await Manager(Daily("c", BudgetScope.Customer, "acme", 1m));
        void Spend(decimal usd) { Assert.True(m.TryReserve(Acme, usd, out var r, out _)); m.Settle(r, usd); }
        Spend(0.5m);
        Assert.Empty(alerts.Alerts);
        Spend(0.3m); // 0.80: at the soft limit
        Assert.Single(alerts.Alerts);
        Assert.True(m.Snapshot()[0].SoftLimitReached);
        Spend(0.1m);
        Assert.Single(alerts.Alerts);
        time.Advance(TimeSpan.FromDays(1));
        Spend(0.85m);
        Assert.Equal(2, alerts.Alerts.Count);
    }

    [Fact]
    public async Task Counters_are_seeded_from_the_ledger_after_a_restart()
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-budget-" + Guid.NewGuid().ToString("N"));
        var store = new SqliteStore(Path.Combine(dir, "b.db"));
        var now = DateTimeOffset.Parse("2026-11-23T10:00:00Z");
        LedgerRecord R(string id, string customer, decimal cost, DateTimeOffset at) => new() { Id = id, Timestamp = at, Dialect = "openai", Outcome = "ok", Customer = customer, Cost = cost, Priced = true };
        await store.WriteAsync([R("1", "acme", 0.25m, now.AddHours(-1)), R("2", "acme", 0.50m, now.AddHours(-2)), R("3", "acme", 9m, now.AddDays(-1)), R("4", "globex", 3m, now)], default);
        await store.UpsertBudgetAsync(Daily("c", BudgetScope.Customer, "acme", 1m), default);
        var m = new BudgetManager(store, new CountingAlerts(), new FakeTimeProvider(now), NullLogger<BudgetManager>.Instance);
        await m.ReloadAsync(default);
        Assert.Equal(0.75m, Assert.Single(m.Snapshot()).SpentUsd);
        Assert.False(m.TryReserve(Acme, 0.26m, out _, out _));
        Assert.True(m.TryReserve(Acme, 0.25m, out _, out _));

        // a reset counts only spend after it
        await store.ResetBudgetAsync("c", now.AddMinutes(-90), default);
        await m.ReloadAsync(default);
        Assert.Equal(0.25m, m.Snapshot()[0].SpentUsd);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
    }

    private sealed class FlakyWebhook : HttpMessageHandler
    {
        public int Calls;
        public string? Signature;
        public byte[]? Body;
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            Signature = request.Headers.GetValues("x-bursar-signature").Single();
            Body = await request.Content!.ReadAsByteArrayAsync(ct);
            return new HttpResponseMessage(++Calls < 3 ? System.Net.HttpStatusCode.ServiceUnavailable : System.Net.HttpStatusCode.OK);
        }
    }

    [Fact]
    public async Task Webhook_alerts_are_signed_and_retried_with_backoff_without_blocking()
    {
        var time = new FakeTimeProvider();
        var hook = new FlakyWebhook();
        await using var sink = new WebhookAlertSink(new BudgetAlertOptions { WebhookUrl = "http://127.0.0.1:9/hook", WebhookSecret = "s3cret", RetryDelay = TimeSpan.FromSeconds(1) },
            new HttpMessageInvoker(hook), time, NullLogger<WebhookAlertSink>.Instance);
        var def = Daily("c", BudgetScope.Customer, "acme", 1m);
        sink.SoftLimitReached(new BudgetStatus(def, DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch.AddDays(1), 0.8m, 0m, true)); // returns at once
        for (var i = 0; i < 200 && sink.Delivered == 0; i++)
        {
            await Task.Delay(10);
            time.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(1, sink.Delivered);
        Assert.Equal(3, hook.Calls);
        Assert.Equal(WebhookAlertSink.Sign("s3cret", hook.Body!), hook.Signature);
        Assert.Contains("\"budget_id\":\"c\"", System.Text.Encoding.UTF8.GetString(hook.Body!));
        Assert.Single(sink.Raised);
    }
}
