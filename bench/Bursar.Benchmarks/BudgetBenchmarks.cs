using BenchmarkDotNet.Attributes;
using Bursar.Core.Budgets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Benchmarks;

/// <summary>The budget check on the request path: reserve the worst case against every applicable budget, then settle.</summary>
[MemoryDiagnoser]
public class BudgetBenchmarks
{
    private BudgetManager _manager = null!;
    private readonly BudgetSubject _subject = new("key_7", "team-3", "customer-12", "feature-1", "gpt-4o-mini");

    private sealed class Store(IReadOnlyList<BudgetDefinition> defs) : IBudgetStore
    {
        public Task<IReadOnlyList<BudgetDefinition>> ListBudgetsAsync(CancellationToken ct) => Task.FromResult(defs);
        public Task UpsertBudgetAsync(BudgetDefinition b, CancellationToken ct) => Task.CompletedTask;
        public Task<bool> DeleteBudgetAsync(string id, CancellationToken ct) => Task.FromResult(false);
        public Task<bool> ResetBudgetAsync(string id, DateTimeOffset when, CancellationToken ct) => Task.FromResult(false);
        public Task<decimal> SpentSinceAsync(BudgetDefinition b, DateTimeOffset since, CancellationToken ct) => Task.FromResult(0m);
    }

    private sealed class NoAlerts : IBudgetAlertSink
    {
        public void SoftLimitReached(BudgetStatus status) { }
    }

    [GlobalSetup]
    public void Setup()
    {
        // 20 budgets, 4 of which apply to the call (global, team, customer, model)
        var defs = new List<BudgetDefinition> { new() { Id = "global", Scope = BudgetScope.Global, Period = BudgetPeriod.Month, LimitUsd = 1_000_000m } };
        for (var i = 0; i < 8; i++) defs.Add(new() { Id = "team" + i, Scope = BudgetScope.Team, Value = "team-" + i, Period = BudgetPeriod.Day, LimitUsd = 1_000_000m });
        for (var i = 0; i < 10; i++) defs.Add(new() { Id = "cust" + i, Scope = BudgetScope.Customer, Value = "customer-" + (i + 5), Period = BudgetPeriod.Month, LimitUsd = 1_000_000m, TimeZone = "Europe/Paris" });
        defs.Add(new() { Id = "model", Scope = BudgetScope.Model, Value = "gpt-4o-mini", Period = BudgetPeriod.Hour, LimitUsd = 1_000_000m });
        _manager = new BudgetManager(new Store(defs), new NoAlerts(), TimeProvider.System, NullLogger<BudgetManager>.Instance);
        _manager.ReloadAsync(default).GetAwaiter().GetResult();
    }

    [Benchmark]
    public decimal ReserveAndSettleFourOfTwentyBudgets()
    {
        _manager.TryReserve(_subject, 0.0123m, out var r, out _);
        _manager.Settle(r, 0.0042m);
        return r.Amount;
    }
}
