using Microsoft.Extensions.Logging;

namespace Bursar.Core.Budgets;

/// <summary>A budget that would be crossed: who, what limit, how much is already spent, when it resets.</summary>
public sealed record BudgetRefusal(BudgetDefinition Budget, decimal SpentUsd, decimal ReservedUsd, decimal RequestedUsd, DateTimeOffset ResetsAt)
{
    public string Message =>
        $"{char.ToUpperInvariant(Budget.Describe()[0])}{Budget.Describe()[1..]} of ${Budget.LimitUsd} would be exceeded: ${SpentUsd} spent and ${ReservedUsd} reserved by calls in flight; this call could cost up to ${RequestedUsd}. "
        + (ResetsAt == DateTimeOffset.MaxValue ? "This budget does not reset." : $"It resets at {ResetsAt:yyyy-MM-dd'T'HH:mm:ss'Z'}.");
}

/// <summary>Money held against every budget that applies to one call, until the call settles.</summary>
public sealed class BudgetReservation
{
    internal BudgetReservation(IReadOnlyList<(BudgetManager.State State, decimal Amount)> holds, decimal amount)
    {
        Holds = holds;
        Amount = amount;
    }

    internal IReadOnlyList<(BudgetManager.State State, decimal Amount)> Holds { get; }
    public decimal Amount { get; }
    internal int Settled;

    public static BudgetReservation None { get; } = new([], 0m);

    public IEnumerable<string> BudgetIds => Holds.Select(h => h.State.Budget.Id);
}

/// <summary>Live view of one budget for the admin API, CLI and dashboard.</summary>
public sealed record BudgetStatus(BudgetDefinition Budget, DateTimeOffset WindowStart, DateTimeOffset ResetsAt, decimal SpentUsd, decimal ReservedUsd, bool SoftLimitReached)
{
    public decimal RemainingUsd => Math.Max(0, Budget.LimitUsd - SpentUsd - ReservedUsd);
}

public interface IBudgetAlertSink
{
    /// <summary>Called once per budget period when settled spend first reaches the soft limit. Must not block.</summary>
    void SoftLimitReached(BudgetStatus status);
}

/// <summary>
/// Budget counters on the request path: <see cref="TryReserve"/> holds the worst-case cost against every budget that
/// applies, atomically (all or none), and <see cref="Settle"/> replaces the hold with the actual cost when the call
/// ends, fails or is cancelled. Periods roll over on a <see cref="TimeProvider"/>. Counters live in memory and are seeded
/// from the ledger (the source of truth) when a budget is first used, so they survive a restart. The interface is small
/// so a Redis-backed implementation can share counters between instances later.
/// </summary>
public sealed partial class BudgetManager
{
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly IBudgetStore _store;
    private readonly IBudgetAlertSink _alerts;
    private readonly ILogger _logger;
    private State[] _states = [];

    public BudgetManager(IBudgetStore store, IBudgetAlertSink alerts, TimeProvider time, ILogger<BudgetManager> logger)
    {
        _store = store;
        _alerts = alerts;
        _time = time;
        _logger = logger;
    }

    internal sealed class State(BudgetDefinition budget)
    {
        public BudgetDefinition Budget = budget;
        public DateTimeOffset WindowStart;
        public DateTimeOffset WindowEnd;
        public decimal Spent;
        public decimal Reserved;
        public DateTimeOffset AlertedWindow = DateTimeOffset.MinValue;
        public bool Seeded;
    }

    public int Count => _states.Length;

    /// <summary>Loads the budget definitions and seeds each counter with the ledger's spend in its current window.</summary>
    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        var defs = await _store.ListBudgetsAsync(cancellationToken).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        var old = _states.ToDictionary(s => s.Budget.Id);
        var fresh = new List<State>(defs.Count);
        foreach (var d in defs)
        {
            var (start, end) = BudgetWindow.Current(d.Period, d.TimeZone, now);
            if (old.TryGetValue(d.Id, out var s) && s.Budget.Scope == d.Scope && s.Budget.Value == d.Value && s.Budget.Period == d.Period && s.Budget.TimeZone == d.TimeZone && s.Budget.ResetAt == d.ResetAt)
            {
                lock (_lock) s.Budget = d;
                fresh.Add(s);
                continue;
            }
            var spent = await _store.SpentSinceAsync(d, d.CountFrom(start), cancellationToken).ConfigureAwait(false);
            var state = new State(d) { WindowStart = start, WindowEnd = end, Spent = spent, Seeded = true };
            if (old.TryGetValue(d.Id, out var previous))
            {
                lock (_lock) state.Reserved = previous.Reserved; // calls in flight still hold money
            }
            fresh.Add(state);
        }
        lock (_lock) _states = fresh.ToArray();
    }

    /// <summary>True when any budget exists (the request path skips all budget work otherwise).</summary>
    public bool Any => _states.Length > 0;

    public bool TryReserve(in BudgetSubject subject, decimal worstCaseUsd, out BudgetReservation reservation, out BudgetRefusal? refusal)
    {
        refusal = null;
        reservation = BudgetReservation.None;
        var states = _states;
        if (states.Length == 0) return true;
        var now = _time.GetUtcNow();
        List<(State, decimal)>? holds = null;
        lock (_lock)
        {
            foreach (var s in states)
            {
                if (!subject.Matches(s.Budget)) continue;
                Roll(s, now);
                if (s.Spent + s.Reserved + worstCaseUsd > s.Budget.LimitUsd)
                {
                    refusal = new BudgetRefusal(s.Budget, s.Spent, s.Reserved, worstCaseUsd, s.WindowEnd);
                    return false;
                }
                (holds ??= new List<(State, decimal)>(2)).Add((s, worstCaseUsd));
            }
            if (holds is null) return true;
            foreach (var (s, amount) in holds) s.Reserved += amount;
        }
        reservation = new BudgetReservation(holds, worstCaseUsd);
        return true;
    }

    /// <summary>Adds money already spent (a call made for Bursar's own purposes, such as the LLM routing classifier) to every budget it falls under; no limit check.</summary>
    public void Charge(in BudgetSubject subject, decimal actualUsd)
    {
        var states = _states;
        if (states.Length == 0 || actualUsd <= 0) return;
        var holds = new List<(State, decimal)>();
        foreach (var s in states)
            if (subject.Matches(s.Budget)) holds.Add((s, 0m));
        if (holds.Count > 0) Settle(new BudgetReservation(holds, 0m), actualUsd);
    }

    /// <summary>Replaces the reservation by the actual cost (0 for a call that never reached the provider). Idempotent.</summary>
    public void Settle(BudgetReservation reservation, decimal actualUsd)
    {
        if (reservation.Holds.Count == 0 || Interlocked.Exchange(ref reservation.Settled, 1) == 1) return;
        var now = _time.GetUtcNow();
        List<BudgetStatus>? alerts = null;
        lock (_lock)
        {
            foreach (var (s, amount) in reservation.Holds)
            {
                Roll(s, now);
                s.Reserved = Math.Max(0, s.Reserved - amount);
                s.Spent += actualUsd;
                if (s.Spent >= s.Budget.SoftLimitUsd && s.AlertedWindow != s.WindowStart)
                {
                    s.AlertedWindow = s.WindowStart;
                    (alerts ??= []).Add(Status(s));
                }
            }
        }
        if (alerts is null) return;
        foreach (var a in alerts)
        {
            LogSoftLimit(_logger, a.Budget.Describe(), a.Budget.Id, a.SpentUsd, a.Budget.LimitUsd, a.Budget.SoftLimitFraction);
            _alerts.SoftLimitReached(a);
        }
    }

    /// <summary>Lets go of a hold without spending anything (a check, or a call that never started): unlike <see cref="Settle"/> with 0, no alert. Idempotent.</summary>
    public void Release(BudgetReservation reservation)
    {
        if (reservation.Holds.Count == 0 || Interlocked.Exchange(ref reservation.Settled, 1) == 1) return;
        lock (_lock)
        {
            foreach (var (s, amount) in reservation.Holds) s.Reserved = Math.Max(0, s.Reserved - amount);
        }
    }

    public IReadOnlyList<BudgetStatus> Snapshot()
    {
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            return _states.Select(s => { Roll(s, now); return Status(s); }).ToArray();
        }
    }

    private static BudgetStatus Status(State s) => new(s.Budget, s.WindowStart, s.WindowEnd, s.Spent, s.Reserved, s.AlertedWindow == s.WindowStart);

    private static void Roll(State s, DateTimeOffset now)
    {
        if (now < s.WindowEnd) return;
        var (start, end) = BudgetWindow.Current(s.Budget.Period, s.Budget.TimeZone, now);
        s.WindowStart = start;
        s.WindowEnd = end;
        s.Spent = 0; // reservations of calls still in flight carry over and settle into the new window
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Soft limit reached: {Budget} ({BudgetId}) has spent ${Spent} of ${Limit} (alert at {Fraction:P0})")]
    private static partial void LogSoftLimit(ILogger logger, string budget, string budgetId, decimal spent, decimal limit, decimal fraction);
}
