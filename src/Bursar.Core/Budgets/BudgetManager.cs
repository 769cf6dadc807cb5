using Microsoft.Extensions.Logging;

namespace Bursar.Core.Budgets;

/// <summary>A budget that would be crossed: who, what limit, how much is already spent, when it resets.</summary>
public sealed record BudgetRefusal(BudgetDefinition Budget, decimal SpentUsd, decimal ReservedUsd, decimal RequestedUsd, DateTimeOffset ResetsAt)
{
    /// <summary>Set when the budget could not be checked at all (its shared counters are unreachable): the call is refused for that, not for the money.</summary>
    public string? Unavailable { get; init; }

    public string Message => Unavailable ?? Spent;

    private string Spent =>
        $"{char.ToUpperInvariant(Budget.Describe()[0])}{Budget.Describe()[1..]} of ${Budget.LimitUsd} would be exceeded: ${SpentUsd} spent and ${ReservedUsd} reserved by calls in flight; this call could cost up to ${RequestedUsd}. "
        + (ResetsAt == DateTimeOffset.MaxValue ? "This budget does not reset." : $"It resets at {ResetsAt:yyyy-MM-dd'T'HH:mm:ss'Z'}.");
}

/// <summary>What a reservation decided: held (with the reservation to settle) or refused (with why).</summary>
public readonly record struct BudgetDecision(bool Held, BudgetReservation Reservation, BudgetRefusal? Refusal);

/// <summary>Money held against every budget that applies to one call, until the call settles.</summary>
public sealed class BudgetReservation
{
    internal BudgetReservation(BudgetManager.State[] holds, decimal amount, bool shared = false)
    {
        Holds = holds;
        Amount = amount;
        Shared = shared;
    }

    /// <summary>The money is held in the shared counters (else in this process).</summary>
    internal bool Shared { get; }

    /// <summary>The budgets held, each for <see cref="Amount"/>.</summary>
    internal BudgetManager.State[] Holds { get; private set; }
    public decimal Amount { get; private set; }
    internal int Settled;

    /// <summary>
    /// Holds <paramref name="amount"/> against <paramref name="holds"/> in this object again, once its earlier hold was
    /// settled (a settled reservation is never settled twice, so nothing else can still act on it). False (and unchanged)
    /// while it is live, when it is shared, or for <see cref="None"/>.
    /// </summary>
    internal bool TryReuse(BudgetManager.State[] holds, decimal amount)
    {
        if (Shared || ReferenceEquals(this, None) || Volatile.Read(ref Settled) != 1) return false;
        Holds = holds;
        Amount = amount;
        Volatile.Write(ref Settled, 0);
        return true;
    }

    public static BudgetReservation None { get; } = new([], 0m);

    public IEnumerable<string> BudgetIds => Holds.Select(h => h.Budget.Id);
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
public sealed partial class BudgetManager : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly IBudgetStore _store;
    private readonly IBudgetAlertSink _alerts;
    private readonly ILogger _logger;
    private readonly ISharedBudgetCounters? _shared;
    private readonly BudgetOptions _options;
    private readonly System.Threading.Channels.Channel<(BudgetReservation Reservation, decimal Actual)> _settles =
        System.Threading.Channels.Channel.CreateUnbounded<(BudgetReservation, decimal)>(new System.Threading.Channels.UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private Task? _settler;
    private long _pendingSettles;
    private long _sharedFailures;
    private long _lastDownWarning;
    private State[] _states = [];

    public BudgetManager(IBudgetStore store, IBudgetAlertSink alerts, TimeProvider time, ILogger<BudgetManager> logger, ISharedBudgetCounters? shared = null, BudgetOptions? options = null)
    {
        _store = store;
        _alerts = alerts;
        _time = time;
        _logger = logger;
        _shared = shared;
        _options = options?.Clone() ?? new BudgetOptions();
        _options.Validate();
        if (shared is not null) _settler = Task.Run(SettleLoopAsync);
    }

    /// <summary>The shared counters budgets are counted in (null: this process only).</summary>
    public string? SharedCounters => _shared?.Name;

    /// <summary>Reservations and settles the shared counters could not take (their store was unreachable).</summary>
    public long SharedFailures => Interlocked.Read(ref _sharedFailures);

    internal sealed class State(BudgetDefinition budget)
    {
        public BudgetDefinition Budget = budget;
        /// <summary>This state alone, as the holds of a reservation against only it (holds are never changed once made).</summary>
        public State[] Alone => _alone ??= [this];
        private State[]? _alone;
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
        if (_shared is not null)
        {
            foreach (var s in fresh)
            {
                try
                {
                    await _shared.SeedAsync(Shared(s), s.Spent).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    Interlocked.Increment(ref _sharedFailures);
                    LogSharedDown(_logger, _shared.Name, "seeding budget " + s.Budget.Id, e.Message);
                }
            }
        }
    }

    private static SharedBudget Shared(State s) => new(s.Budget.Id, s.Budget.CountFrom(s.WindowStart), s.WindowEnd, s.Budget.LimitUsd);

    /// <summary>True when any budget exists (the request path skips all budget work otherwise).</summary>
    public bool Any => _states.Length > 0;

    public bool TryReserve(in BudgetSubject subject, decimal worstCaseUsd, out BudgetReservation reservation, out BudgetRefusal? refusal)
    {
        refusal = null;
        reservation = BudgetReservation.None;
        var states = _states;
        if (states.Length == 0) return true;
        if (_shared is not null)
        {
            // a caller that cannot wait (the CLI, tests): the request path uses TryReserveAsync
            var d = TryReserveAsync(subject, worstCaseUsd, CancellationToken.None).AsTask().GetAwaiter().GetResult();
            (reservation, refusal) = (d.Reservation, d.Refusal);
            return d.Held;
        }
        return TryReserveLocal(subject, worstCaseUsd, out reservation, out refusal);
    }

    /// <summary>
    /// Holds the worst case against every budget that applies (all or none). In process this completes at once; with
    /// shared counters it is one round trip to their store.
    /// </summary>
    /// <param name="spare">A settled reservation to hold the money in instead of a new one (a face that reuses its call state passes its last call's); ignored when live or shared.</param>
    public ValueTask<BudgetDecision> TryReserveAsync(BudgetSubject subject, decimal worstCaseUsd, CancellationToken cancellationToken, BudgetReservation? spare = null)
    {
        if (_shared is null || _states.Length == 0)
            return ValueTask.FromResult(TryReserveLocal(subject, worstCaseUsd, out var r, out var refusal, spare) ? new BudgetDecision(true, r, null) : new BudgetDecision(false, r, refusal));
        return TryReserveSharedAsync(subject, worstCaseUsd, cancellationToken);
    }

    private bool TryReserveLocal(in BudgetSubject subject, decimal worstCaseUsd, out BudgetReservation reservation, out BudgetRefusal? refusal, BudgetReservation? spare = null)
    {
        refusal = null;
        reservation = BudgetReservation.None;
        var states = _states;
        if (states.Length == 0) return true;
        var now = _time.GetUtcNow();
        var held = 0;
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
                held++;
            }
            if (held == 0) return true;
            var one = held == 1;
            State[]? holds = one ? null : new State[held];
            held = 0;
            foreach (var s in states)
            {
                if (!subject.Matches(s.Budget)) continue;
                s.Reserved += worstCaseUsd;
                if (one) holds = s.Alone;
                else holds![held++] = s;
            }
            reservation = spare is not null && spare.TryReuse(holds!, worstCaseUsd) ? spare : new BudgetReservation(holds!, worstCaseUsd);
        }
        return true;
    }

    private async ValueTask<BudgetDecision> TryReserveSharedAsync(BudgetSubject subject, decimal worstCaseUsd, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var matching = new List<State>(2);
        lock (_lock)
        {
            foreach (var s in _states)
            {
                if (!subject.Matches(s.Budget)) continue;
                Roll(s, now);
                matching.Add(s);
            }
        }
        if (matching.Count == 0) return new BudgetDecision(true, BudgetReservation.None, null);
        var keys = new SharedBudget[matching.Count];
        for (var i = 0; i < keys.Length; i++) keys[i] = Shared(matching[i]);
        SharedReservation r;
        try
        {
            r = await _shared!.TryReserveAsync(keys, worstCaseUsd, cancellationToken).ConfigureAwait(false);
            for (var attempt = 0; r.UnseededIndex >= 0 && attempt < keys.Length + 1; attempt++)
            {
                // the store does not know this period (a new one, or it restarted empty): the ledger says what was spent
                var s = matching[r.UnseededIndex];
                var spent = await _store.SpentSinceAsync(s.Budget, keys[r.UnseededIndex].CountFrom, cancellationToken).ConfigureAwait(false);
                await _shared.SeedAsync(keys[r.UnseededIndex], spent).ConfigureAwait(false);
                LogSeeded(_logger, s.Budget.Id, spent, _shared.Name);
                r = await _shared.TryReserveAsync(keys, worstCaseUsd, cancellationToken).ConfigureAwait(false);
            }
            if (r.UnseededIndex >= 0) throw new InvalidOperationException($"the period of budget '{matching[r.UnseededIndex].Budget.Id}' could not be seeded");
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Interlocked.Increment(ref _sharedFailures);
            WarnDown("a reservation", e);
            if (_options.WhenSharedCountersDown == SharedCountersDownPolicy.LocalCounters)
                return TryReserveLocal(subject, worstCaseUsd, out var lr, out var lrefusal) ? new BudgetDecision(true, lr, null) : new BudgetDecision(false, lr, lrefusal);
            var b = matching[0];
            return new BudgetDecision(false, BudgetReservation.None, new BudgetRefusal(b.Budget, 0, 0, worstCaseUsd, b.WindowEnd)
            {
                Unavailable = $"Budgets cannot be checked: the shared budget counters ({_shared!.Name}) are unreachable ({Short(e)}). Calls that budgets apply to are refused until they are back (Bursar:Budgets:WhenSharedCountersDown = FailClosed; LocalCounters counts in each instance instead).",
            });
        }
        if (!r.Held)
        {
            var b = matching[r.RefusedIndex];
            return new BudgetDecision(false, BudgetReservation.None, new BudgetRefusal(b.Budget, r.SpentUsd, r.ReservedUsd, worstCaseUsd, b.WindowEnd));
        }
        return new BudgetDecision(true, new BudgetReservation([.. matching], worstCaseUsd, shared: true), null);
    }

    /// <summary>The first sentence of a store client's error (StackExchange.Redis appends pages of diagnostics).</summary>
    private static string Short(Exception e)
    {
        var m = e.Message;
        var cut = m.IndexOf(" - ", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(", command=", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).TrimEnd('.');
    }

    private void WarnDown(string what, Exception e)
    {
        // at most one warning a minute: a store outage under load must not flood the log
        var now = _time.GetTimestamp();
        var last = Interlocked.Read(ref _lastDownWarning);
        if (last != 0 && _time.GetElapsedTime(last, now) < TimeSpan.FromMinutes(1)) return;
        if (Interlocked.CompareExchange(ref _lastDownWarning, now, last) != last) return;
        LogSharedDown(_logger, _shared!.Name, what + (_options.WhenSharedCountersDown == SharedCountersDownPolicy.LocalCounters ? " (counting in this process meanwhile)" : " (refusing budgeted calls meanwhile)"), e.Message);
    }

    /// <summary>
    /// Applies shared settles in the order they were made, off the caller's path (a settle never waits for the store).
    /// While the store is unreachable a settle is retried until it lands; its hold stays counted meanwhile, so the
    /// counters err on the side of less spending, never more.
    /// </summary>
    private async Task SettleLoopAsync()
    {
        var reader = _settles.Reader;
        try
        {
            while (await reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false))
            {
                while (reader.TryPeek(out var item))
                {
                    if (!await SettleSharedAsync(item.Reservation, item.Actual).ConfigureAwait(false))
                    {
                        await Task.Delay(TimeSpan.FromMilliseconds(250), _time, _stop.Token).ConfigureAwait(false);
                        continue;
                    }
                    reader.TryRead(out _);
                    Interlocked.Decrement(ref _pendingSettles);
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // stopping: what is left was logged by the last failure; the holds expire in the store
        }
    }

    /// <summary>Shared settles not yet applied (their store is slow or unreachable).</summary>
    public long PendingSettles => Interlocked.Read(ref _pendingSettles);

    /// <summary>Waits until every shared settle made so far has landed (or <paramref name="timeout"/> passes); true when none is left.</summary>
    public async Task<bool> FlushSettlesAsync(TimeSpan timeout)
    {
        var until = _time.GetTimestamp();
        while (PendingSettles > 0)
        {
            if (_time.GetElapsedTime(until) > timeout) return false;
            await Task.Delay(10).ConfigureAwait(false);
        }
        return true;
    }

    private async ValueTask<bool> SettleSharedAsync(BudgetReservation reservation, decimal actualUsd)
    {
        var now = _time.GetUtcNow();
        var keys = new SharedBudget[reservation.Holds.Length];
        lock (_lock)
        {
            for (var i = 0; i < keys.Length; i++)
            {
                Roll(reservation.Holds[i], now); // a late settle counts in the period it lands in, as in process
                keys[i] = Shared(reservation.Holds[i]);
            }
        }
        try
        {
            var spent = await _shared!.SettleAsync(keys, reservation.Amount, actualUsd).ConfigureAwait(false);
            AlertShared(reservation, spent);
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Interlocked.Increment(ref _sharedFailures);
            WarnDown("a settle", e);
            return false;
        }
    }

    /// <summary>Stops the settle loop, after giving what is queued a few seconds to land.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_settler is null) return;
        await FlushSettlesAsync(TimeSpan.FromSeconds(3)).ConfigureAwait(false);
        await _stop.CancelAsync().ConfigureAwait(false);
        await _settler.ConfigureAwait(false);
        _stop.Dispose();
    }

    /// <summary>Adds money already spent (a call made for Bursar's own purposes, such as the LLM routing classifier) to every budget it falls under; no limit check.</summary>
    public void Charge(in BudgetSubject subject, decimal actualUsd)
    {
        var states = _states;
        if (states.Length == 0 || actualUsd <= 0) return;
        var matching = new List<State>();
        foreach (var s in states)
            if (subject.Matches(s.Budget)) matching.Add(s);
        var holds = matching.ToArray();
        if (holds.Length > 0) Settle(new BudgetReservation(holds, 0m, shared: _shared is not null), actualUsd);
    }

    /// <summary>Replaces the reservation by the actual cost (0 for a call that never reached the provider). Idempotent.</summary>
    public void Settle(BudgetReservation reservation, decimal actualUsd)
    {
        // read before the reservation is marked settled: from then on it may be reused for another hold (TryReuse)
        var (holds, amount) = (reservation.Holds, reservation.Amount);
        if (holds.Length == 0 || Interlocked.Exchange(ref reservation.Settled, 1) == 1) return;
        if (reservation.Shared)
        {
            Interlocked.Increment(ref _pendingSettles);
            _settles.Writer.TryWrite((reservation, actualUsd));
            return;
        }
        var now = _time.GetUtcNow();
        List<BudgetStatus>? alerts = null;
        lock (_lock)
        {
            foreach (var s in holds)
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
        if (reservation.Holds.Length == 0) return;
        if (reservation.Shared)
        {
            Settle(reservation, 0m); // the shared hold is released in the store, nothing added to the spend
            return;
        }
        var (holds, amount) = (reservation.Holds, reservation.Amount); // before it is marked settled (and may be reused)
        if (Interlocked.Exchange(ref reservation.Settled, 1) == 1) return;
        lock (_lock)
        {
            foreach (var s in holds) s.Reserved = Math.Max(0, s.Reserved - amount);
        }
    }

    /// <summary>Every budget's period, spend and holds (with shared counters: as the store has them; this instance's own view when it is unreachable).</summary>
    public IReadOnlyList<BudgetStatus> Snapshot() => _shared is null ? LocalSnapshot() : SnapshotAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask<IReadOnlyList<BudgetStatus>> SnapshotAsync()
    {
        var local = LocalSnapshot();
        if (_shared is null) return local;
        var states = _states;
        for (var i = 0; i < local.Length && i < states.Length; i++)
        {
            try
            {
                var (spent, reserved) = await _shared.ReadAsync(Shared(states[i])).ConfigureAwait(false);
                local[i] = local[i] with { SpentUsd = spent, ReservedUsd = reserved, SoftLimitReached = spent >= states[i].Budget.SoftLimitUsd };
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                WarnDown("reading the budgets", e); // this instance's own view stands in
                break;
            }
        }
        return local;
    }

    private BudgetStatus[] LocalSnapshot()
    {
        var now = _time.GetUtcNow();
        lock (_lock) return _states.Select(s => { Roll(s, now); return Status(s); }).ToArray();
    }

    /// <summary>The soft-limit alert for shared counters: raised by the instance whose settle crossed it, once per period per instance.</summary>
    private void AlertShared(BudgetReservation reservation, decimal[] spentAfter)
    {
        var now = _time.GetUtcNow();
        for (var i = 0; i < reservation.Holds.Length && i < spentAfter.Length; i++)
        {
            var s = reservation.Holds[i];
            var spent = spentAfter[i];
            if (s.AlertedWindow == s.WindowStart || spent < s.Budget.SoftLimitUsd) continue;
            lock (_lock)
            {
                Roll(s, now);
                if (s.AlertedWindow == s.WindowStart) continue;
                s.AlertedWindow = s.WindowStart;
            }
            var status = Status(s) with { SpentUsd = spent, SoftLimitReached = true };
            LogSoftLimit(_logger, s.Budget.Describe(), s.Budget.Id, spent, s.Budget.LimitUsd, s.Budget.SoftLimitFraction);
            _alerts.SoftLimitReached(status);
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

    [LoggerMessage(Level = LogLevel.Information, Message = "Budget {BudgetId}'s period seeded in {Store} from the ledger: ${Spent} spent")]
    private static partial void LogSeeded(ILogger logger, string budgetId, decimal spent, string store);

    [LoggerMessage(Level = LogLevel.Error, Message = "The shared budget counters ({Store}) are unreachable during {What}: {Error}")]
    private static partial void LogSharedDown(ILogger logger, string store, string what, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Soft limit reached: {Budget} ({BudgetId}) has spent ${Spent} of ${Limit} (alert at {Fraction:P0})")]
    private static partial void LogSoftLimit(ILogger logger, string budget, string budgetId, decimal spent, decimal limit, decimal fraction);
}
