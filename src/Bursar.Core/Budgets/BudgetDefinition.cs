using System.Text.Json.Serialization;

namespace Bursar.Core.Budgets;

/// <summary>What a budget is counted over.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BudgetScope>))]
public enum BudgetScope { Global, Key, Team, Customer, Feature, Model }

/// <summary>How often a budget resets (calendar periods in the budget's time zone). Per-run spend is a run cap.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BudgetPeriod>))]
public enum BudgetPeriod { Hour, Day, Week, Month, Total }

/// <summary>A spending limit on one scope and period, in USD. Validated when created.</summary>
public sealed record BudgetDefinition
{
    public required string Id { get; init; }
    public required BudgetScope Scope { get; init; }
    /// <summary>The key id, team, customer, feature or model the budget applies to; null for <see cref="BudgetScope.Global"/>.</summary>
    public string? Value { get; init; }
    public required BudgetPeriod Period { get; init; }
    /// <summary>Hard limit: a call whose worst-case cost would cross it is refused.</summary>
    public required decimal LimitUsd { get; init; }
    /// <summary>Share of the limit at which an alert is raised once per period. Default 0.8.</summary>
    public decimal SoftLimitFraction { get; init; } = 0.8m;
    /// <summary>IANA time zone for calendar periods. Default UTC.</summary>
    public string TimeZone { get; init; } = "UTC";

    /// <summary>When the budget was last reset by hand: spend before it does not count in the current period.</summary>
    public DateTimeOffset? ResetAt { get; init; }

    public decimal SoftLimitUsd => LimitUsd * SoftLimitFraction;

    /// <summary>Where counting starts for the window beginning at <paramref name="windowStart"/>.</summary>
    public DateTimeOffset CountFrom(DateTimeOffset windowStart) => ResetAt is { } r && r > windowStart ? r : windowStart;

    public string Describe() => Scope == BudgetScope.Global ? $"global {Period.ToString().ToLowerInvariant()} budget" : $"{Scope.ToString().ToLowerInvariant()} '{Value}' {Period.ToString().ToLowerInvariant()} budget";

    /// <summary>Throws with a message naming the field when the definition cannot work.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Id)) throw new ArgumentException("A budget needs an id.");
        if (Scope != BudgetScope.Global && string.IsNullOrWhiteSpace(Value)) throw new ArgumentException($"A {Scope} budget needs a value (which {Scope.ToString().ToLowerInvariant()} it limits).");
        if (Scope == BudgetScope.Global && Value is not null) throw new ArgumentException("A global budget takes no value.");
        if (LimitUsd < 0) throw new ArgumentException($"limit_usd must be zero or more, not {LimitUsd}.");
        if (SoftLimitFraction is <= 0 or > 1) throw new ArgumentException($"soft_limit_fraction must be in (0, 1], not {SoftLimitFraction}.");
        _ = BudgetWindow.Zone(TimeZone);
    }
}

/// <summary>Who and what a call is for, as the budgets see it.</summary>
public readonly record struct BudgetSubject(string? KeyId, string? Team, string? Customer, string? Feature, string? Model)
{
    public bool Matches(BudgetDefinition b) => b.Scope switch
    {
        BudgetScope.Global => true,
        BudgetScope.Key => string.Equals(KeyId, b.Value, StringComparison.Ordinal),
        BudgetScope.Team => string.Equals(Team, b.Value, StringComparison.Ordinal),
        BudgetScope.Customer => string.Equals(Customer, b.Value, StringComparison.Ordinal),
        BudgetScope.Feature => string.Equals(Feature, b.Value, StringComparison.Ordinal),
        BudgetScope.Model => string.Equals(Model, b.Value, StringComparison.OrdinalIgnoreCase),
        _ => false,
    };
}

public interface IBudgetStore
{
    Task<IReadOnlyList<BudgetDefinition>> ListBudgetsAsync(CancellationToken cancellationToken);
    Task UpsertBudgetAsync(BudgetDefinition budget, CancellationToken cancellationToken);
    Task<bool> DeleteBudgetAsync(string id, CancellationToken cancellationToken);
    /// <summary>Starts the budget's current period again from zero (persisted, so every gateway instance sees it).</summary>
    Task<bool> ResetBudgetAsync(string id, DateTimeOffset when, CancellationToken cancellationToken);
    /// <summary>Settled spend the ledger holds for the budget's scope since <paramref name="since"/> (seeds counters after a restart).</summary>
    Task<decimal> SpentSinceAsync(BudgetDefinition budget, DateTimeOffset since, CancellationToken cancellationToken);
}
