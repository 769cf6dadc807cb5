namespace Bursar.Core.Budgets;

/// <summary>
/// Budget counters shared by every gateway instance (spend per budget period, money reserved by calls in flight), so
/// two instances cannot each let a customer spend the whole budget. <see cref="BudgetManager"/> keeps the definitions
/// and periods and asks these counters for the numbers; without them (the embedded default) it counts in process.
/// Implementations are atomic across every budget of one call (all or none) and throw when their store is unreachable:
/// <see cref="BudgetOptions.WhenSharedCountersDown"/> says what happens then.
/// </summary>
public interface ISharedBudgetCounters
{
    /// <summary>The store, as messages name it (e.g. <c>Redis at 10.0.0.5:6379</c>).</summary>
    string Name { get; }

    /// <summary>Holds <paramref name="amountUsd"/> against every budget, or none when one would be crossed (its index is returned, with what it had).</summary>
    ValueTask<SharedReservation> TryReserveAsync(SharedBudget[] budgets, decimal amountUsd, CancellationToken cancellationToken);

    /// <summary>Releases a hold of <paramref name="reservedUsd"/> and adds the actual cost to each budget's current period; returns each period's spend after it.</summary>
    ValueTask<decimal[]> SettleAsync(SharedBudget[] budgets, decimal reservedUsd, decimal actualUsd);

    /// <summary>Sets a period's spend from the ledger when no instance has counted it yet, or raises it to the ledger's; never lowers it.</summary>
    ValueTask SeedAsync(SharedBudget budget, decimal spentUsd);

    /// <summary>A period's spend and what calls in flight on every live instance hold.</summary>
    ValueTask<(decimal SpentUsd, decimal ReservedUsd)> ReadAsync(SharedBudget budget);
}

/// <summary>One budget's counters: its id, where its current period's counting started, when the period ends, its limit.</summary>
public readonly record struct SharedBudget(string BudgetId, DateTimeOffset CountFrom, DateTimeOffset PeriodEnd, decimal LimitUsd);

/// <summary>
/// What a shared reservation did: <see cref="RefusedIndex"/> -1 when every budget holds the money.
/// <see cref="UnseededIndex"/> names a budget whose period the store does not know (a new period, or a store restarted
/// empty): nothing was held, and the caller seeds it from the ledger and tries again.
/// </summary>
public readonly record struct SharedReservation(int RefusedIndex, decimal SpentUsd, decimal ReservedUsd, int UnseededIndex = -1)
{
    public bool Held => RefusedIndex < 0 && UnseededIndex < 0;
}

/// <summary>What budgets do while the shared counters cannot be reached.</summary>
public enum SharedCountersDownPolicy
{
    /// <summary>Refuse calls that budgets apply to, with a 503 naming the store (the default: no spend that cannot be counted).</summary>
    FailClosed,
    /// <summary>Count in this process until the store is back, with a logged warning (instances may then overspend together).</summary>
    LocalCounters,
}

/// <summary>How budgets are counted (<c>Bursar:Budgets</c>).</summary>
public sealed class BudgetOptions
{
    public const string Section = "Bursar:Budgets";

    /// <summary>What budgets do while the shared counters (<c>Bursar:Redis:Configuration</c>) are unreachable. Default <see cref="SharedCountersDownPolicy.FailClosed"/>.</summary>
    public SharedCountersDownPolicy WhenSharedCountersDown { get; set; } = SharedCountersDownPolicy.FailClosed;

    public BudgetOptions Clone() => (BudgetOptions)MemberwiseClone();

    public void Validate()
    {
        if (!Enum.IsDefined(WhenSharedCountersDown))
            throw new ArgumentOutOfRangeException(nameof(WhenSharedCountersDown), WhenSharedCountersDown, "Bursar:Budgets:WhenSharedCountersDown must be FailClosed or LocalCounters.");
    }
}
