using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Bursar.Core.Budgets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Core.Runs;

/// <summary>Caps for agent runs (calls sharing <c>x-bursar-run</c>). The <c>Bursar:Runs</c> section; validated at start.</summary>
public sealed class RunCapOptions
{
    public const string Section = "Bursar:Runs";

    /// <summary>Most calls (turns) in one run. Default 50.</summary>
    public int? MaxTurns { get; set; } = 50;
    /// <summary>Most tool calls the model may make in one run. Default 200.</summary>
    public int? MaxToolCalls { get; set; } = 200;
    /// <summary>Most spend in one run, USD. Default none.</summary>
    public decimal? MaxSpendUsd { get; set; }
    /// <summary>The run is done once the assistant answers without calling a tool. Default false.</summary>
    public bool DoneWhenAnsweredWithoutTools { get; set; }
    /// <summary>The run is done when the assistant's text matches this regular expression.</summary>
    public string? DonePattern { get; set; }
    /// <summary>The run is done when the assistant's text contains this marker.</summary>
    public string? StopMarker { get; set; }
    /// <summary>A run with no call for this long is forgotten. Default 1 hour.</summary>
    public TimeSpan IdleExpiry { get; set; } = TimeSpan.FromHours(1);

    public bool NeedsText => DonePattern is not null || StopMarker is not null;

    public void Validate()
    {
        if (MaxTurns is < 1) throw new InvalidOperationException($"Bursar:Runs:MaxTurns must be at least 1, not {MaxTurns}.");
        if (MaxToolCalls is < 0) throw new InvalidOperationException($"Bursar:Runs:MaxToolCalls must be 0 or more, not {MaxToolCalls}.");
        if (MaxSpendUsd is < 0) throw new InvalidOperationException($"Bursar:Runs:MaxSpendUsd must be 0 or more, not {MaxSpendUsd}.");
        if (IdleExpiry <= TimeSpan.Zero) throw new InvalidOperationException("Bursar:Runs:IdleExpiry must be positive.");
        if (DonePattern is not null)
        {
            try { _ = new Regex(DonePattern, RegexOptions.None, TimeSpan.FromMilliseconds(50)); }
            catch (ArgumentException e) { throw new InvalidOperationException($"Bursar:Runs:DonePattern is not a valid regular expression: {e.Message}", e); }
        }
    }
}

/// <summary>A refused call of an ended run: which cap or done-condition ended it.</summary>
public sealed record RunRefusal(string RunId, string Reason, string Message);

/// <summary>What one finished call of a run did.</summary>
public readonly record struct RunTurn(int ToolCalls, decimal CostUsd, string? FinishReason, string? Text);

/// <summary>What starting a call of a run decided: admitted (both null), refused by a cap, or not checkable (the shared run state is unreachable and the policy fails closed). <see cref="Local"/>: held in this process (the shared state was down and the policy counts locally).</summary>
public readonly record struct RunStart(RunRefusal? Refusal, string? Unavailable, bool Local = false)
{
    public bool Started => Refusal is null && Unavailable is null;
}

/// <summary>
/// Run state shared by every gateway instance (<c>Bursar:Redis:Configuration</c>): a run's turns, tool calls, spend and
/// end, and what its calls in flight on each instance hold, so the caps hold across instances together. The holds of
/// an instance expire a while after it dies (<c>Bursar:Redis:RunHoldTtl</c>), so a killed instance never leaves a run
/// stuck. The caps and messages are <see cref="RunTracker"/>'s. Implementations throw when their store is unreachable.
/// </summary>
public interface ISharedRunState
{
    /// <summary>The store, as messages name it (e.g. <c>Redis at 10.0.0.5:6379</c>).</summary>
    string Name { get; }

    /// <summary>The refusal of an ended run (not gone idle since), or null.</summary>
    ValueTask<RunRefusal?> EndedAsync(string? keyId, string runId, CancellationToken cancellationToken);

    /// <summary>Admits the next call of a run (holding its worst case and a turn) or refuses it naming the cap.</summary>
    ValueTask<RunRefusal?> TryStartAsync(string? keyId, string runId, decimal worstCaseUsd, CancellationToken cancellationToken);

    /// <summary>Gives back what <see cref="TryStartAsync"/> held for a call that will not run.</summary>
    ValueTask ReleaseAsync(string? keyId, string runId, decimal heldUsd);

    /// <summary>Records a finished call (releasing its hold) and checks the caps, then <paramref name="doneReason"/>; returns the reason the run ended with it, if it did.</summary>
    ValueTask<string?> CompleteAsync(string? keyId, string runId, int toolCalls, decimal costUsd, string? doneReason, decimal heldUsd);
}

/// <summary>
/// Tracks agent runs: turns, tool calls and spend per run id (scoped by key), refuses calls once a cap trips or a
/// done-condition is met, and forgets runs idle for <see cref="RunCapOptions.IdleExpiry"/>. With
/// <see cref="ISharedRunState"/> the runs live in that store (every instance counts together); while it is
/// unreachable, <see cref="SharedCountersDownPolicy"/> says whether run calls are refused (503) or counted here.
/// </summary>
public sealed partial class RunTracker(RunCapOptions options, TimeProvider time, ISharedRunState? shared = null, SharedCountersDownPolicy whenDown = SharedCountersDownPolicy.FailClosed, ILogger? logger = null)
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;
    private long _sharedFailures;
    private long _lastDownWarning;

    /// <summary>The shared run state's store, or null when runs are tracked in this process.</summary>
    public string? SharedState => shared?.Name;

    /// <summary>Operations that failed because the shared run state could not be reached.</summary>
    public long SharedFailures => Interlocked.Read(ref _sharedFailures);

    /// <summary>The refusal of an ended run, wherever its state lives; a shared state that cannot be reached says nothing here (admission applies the policy).</summary>
    public async ValueTask<RunRefusal?> EndedAsync(string? keyId, string runId, CancellationToken cancellationToken)
    {
        if (shared is null) return HasEnded(keyId, runId, out var r) ? r : null;
        try { return await shared.EndedAsync(keyId, runId, cancellationToken).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Down("reading a run", e);
            return HasEnded(keyId, runId, out var r) ? r : null;
        }
    }

    /// <summary>Admits the next call of a run or refuses it; in process at once, with shared state one round trip.</summary>
    public ValueTask<RunStart> TryStartAsync(string? keyId, string runId, decimal worstCaseUsd, CancellationToken cancellationToken)
    {
        if (shared is null) return ValueTask.FromResult(TryStart(keyId, runId, worstCaseUsd, out var r) ? default : new RunStart(r, null));
        return SharedStartAsync(keyId, runId, worstCaseUsd, cancellationToken);
    }

    private async ValueTask<RunStart> SharedStartAsync(string? keyId, string runId, decimal worstCaseUsd, CancellationToken cancellationToken)
    {
        try
        {
            var refusal = await shared!.TryStartAsync(keyId, runId, worstCaseUsd, cancellationToken).ConfigureAwait(false);
            return new RunStart(refusal, null);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Down("starting a run's call", e);
            if (whenDown == SharedCountersDownPolicy.LocalCounters)
                return TryStart(keyId, runId, worstCaseUsd, out var r) ? new RunStart(null, null, Local: true) : new RunStart(r, null, Local: true);
            return new RunStart(null, $"Run caps cannot be checked: the shared run state ({shared!.Name}) is unreachable ({Bursar.Core.Limits.RateLimiter.Short(e)}). Calls of runs are refused until it is back (Bursar:Budgets:WhenSharedCountersDown = FailClosed; LocalCounters counts in each instance instead).");
        }
    }

    /// <summary>Gives back a hold; <paramref name="local"/>: it was taken in this process (see <see cref="RunStart.Local"/>).</summary>
    public void Release(string? keyId, string runId, decimal heldUsd, bool local)
    {
        if (shared is null || local) { Release(keyId, runId, heldUsd); return; }
        _ = ReleaseSharedAsync(keyId, runId, heldUsd);
    }

    private async Task ReleaseSharedAsync(string? keyId, string runId, decimal heldUsd)
    {
        // unreachable: the hold expires with the instance's hold TTL
        try { await shared!.ReleaseAsync(keyId, runId, heldUsd).ConfigureAwait(false); }
        catch (Exception e) { Down("releasing a run's hold", e); }
    }

    /// <summary>Records a finished call wherever the run lives; returns the reason the run ended with it, if it did.</summary>
    public ValueTask<string?> CompleteAsync(string? keyId, string runId, RunTurn turn, decimal heldUsd, bool local)
    {
        if (shared is null || local) return ValueTask.FromResult(Complete(keyId, runId, turn, heldUsd));
        return CompleteSharedAsync(keyId, runId, turn, heldUsd);
    }

    private async ValueTask<string?> CompleteSharedAsync(string? keyId, string runId, RunTurn turn, decimal heldUsd)
    {
        try { return await shared!.CompleteAsync(keyId, runId, turn.ToolCalls, turn.CostUsd, DoneReason(turn), heldUsd).ConfigureAwait(false); }
        catch (Exception e)
        {
            // unreachable: this turn is not counted (its hold expires with the instance's hold TTL); the warning says so
            Down("recording a run's turn", e);
            return null;
        }
    }

    private void Down(string what, Exception e)
    {
        Interlocked.Increment(ref _sharedFailures);
        // at most one warning a minute: an outage under load must not flood the log
        var now = time.GetTimestamp();
        var last = Interlocked.Read(ref _lastDownWarning);
        if (last != 0 && time.GetElapsedTime(last, now) < TimeSpan.FromMinutes(1)) return;
        if (Interlocked.CompareExchange(ref _lastDownWarning, now, last) != last) return;
        LogSharedDown(_logger, shared!.Name, what, whenDown == SharedCountersDownPolicy.LocalCounters ? "counting runs in this process meanwhile" : "refusing calls of runs meanwhile", e.Message);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Shared run state ({Store}) unreachable while {What}, {Policy}: {Error}")]
    private static partial void LogSharedDown(ILogger logger, string store, string what, string policy, string error);

    private readonly ConcurrentDictionary<(string? Key, string Run), RunState> _runs = new();
    private readonly Regex? _pattern = options.DonePattern is null ? null : new Regex(options.DonePattern, RegexOptions.None, TimeSpan.FromMilliseconds(50));
    private long _lastSweep;

    public RunCapOptions Options => options;

    public sealed class RunState
    {
        public int Turns;
        public int ToolCalls;
        public decimal SpentUsd;
        /// <summary>Worst cases held by calls of the run still in flight: parallel calls cannot jointly pass the spend cap.</summary>
        public decimal HeldUsd;
        /// <summary>Calls of the run admitted and not finished: parallel calls cannot jointly pass the turn cap.</summary>
        public int InFlight;
        public string? EndReason;
        public DateTimeOffset LastActivity;
    }

    public int ActiveRuns => _runs.Count;

    public RunState? Find(string? keyId, string runId) => _runs.TryGetValue((keyId, runId), out var s) ? s : null;

    /// <summary>True when the run has ended (a cap or a done-condition was reached, and it has not gone idle since), with the refusal every further call gets.</summary>
    public bool HasEnded(string? keyId, string runId, out RunRefusal? refusal)
    {
        refusal = null;
        if (!_runs.TryGetValue((keyId, runId), out var s)) return false;
        lock (s)
        {
            if (s.EndReason is null || time.GetUtcNow() - s.LastActivity > options.IdleExpiry) return false;
            refusal = Ended(runId, s);
            return true;
        }
    }

    private static RunRefusal Ended(string runId, RunState s) => Ended(runId, s.EndReason!, s.Turns, s.ToolCalls, s.SpentUsd);

    /// <summary>The refusal every call of an ended run gets (the same words wherever the run's state lives).</summary>
    public static RunRefusal Ended(string runId, string reason, long turns, long toolCalls, decimal spentUsd) =>
        new(runId, reason, $"Run '{runId}' has ended: {reason}, after {turns} turns, {toolCalls} tool calls and ${spentUsd} spent. Start a new run id to continue.");

    /// <summary>The refusal of a call that would pass the turn cap together with the run's calls in flight.</summary>
    public static RunRefusal InFlight(string runId, long inFlight, long turns, int maxTurns) =>
        new(runId, $"max_turns ({maxTurns})", $"Run '{runId}' has {inFlight} calls in flight and {turns} finished: one more would pass its cap of {maxTurns} turns.");

    /// <summary>The refusal of a call whose worst case would pass the run's spend cap.</summary>
    public static RunRefusal OverSpend(string runId, decimal max, decimal spentUsd, decimal heldUsd, decimal worstCaseUsd) =>
        new(runId, $"max_spend (${max})", $"Run '{runId}' would exceed its spend cap of ${max}: ${spentUsd} spent, ${heldUsd} held by calls in flight, this call could cost up to ${worstCaseUsd}.");

    /// <summary>The done-condition a finished turn meets (stop marker, done pattern, answered without tools), checked after the caps.</summary>
    public string? DoneReason(in RunTurn turn)
    {
        if (options.StopMarker is { } marker && turn.Text?.Contains(marker, StringComparison.Ordinal) == true) return "done: stop marker";
        if (_pattern is not null && turn.Text is not null && SafeMatch(_pattern, turn.Text)) return "done: text matched the done pattern";
        if (options.DoneWhenAnsweredWithoutTools && turn.ToolCalls == 0 && turn.FinishReason is not null) return "done: answered without a tool call";
        return null;
    }

    /// <summary>Admits the next call of a run, or refuses it naming the cap that ended the run.</summary>
    public bool TryStart(string? keyId, string runId, decimal worstCaseUsd, out RunRefusal? refusal)
    {
        refusal = null;
        Sweep();
        var now = time.GetUtcNow();
        var s = _runs.GetOrAdd((keyId, runId), _ => new RunState { LastActivity = now });
        lock (s)
        {
            if (now - s.LastActivity > options.IdleExpiry)
            {
                s.Turns = 0; s.ToolCalls = 0; s.SpentUsd = 0; s.EndReason = null; s.HeldUsd = 0; s.InFlight = 0;
            }
            s.LastActivity = now;
            if (s.EndReason is null && options.MaxTurns is { } mt && s.Turns >= mt) s.EndReason = $"max_turns ({mt})";
            if (s.EndReason is null && options.MaxTurns is { } mt2 && s.Turns + s.InFlight >= mt2)
            {
                refusal = InFlight(runId, s.InFlight, s.Turns, mt2);
                return false;
            }
            if (s.EndReason is not null)
            {
                refusal = Ended(runId, s);
                return false;
            }
            if (options.MaxSpendUsd is { } max && s.SpentUsd + s.HeldUsd + worstCaseUsd > max)
            {
                refusal = OverSpend(runId, max, s.SpentUsd, s.HeldUsd, worstCaseUsd);
                return false;
            }
            s.HeldUsd += worstCaseUsd;
            s.InFlight++;
            return true;
        }
    }

    /// <summary>Gives back what <see cref="TryStart"/> held for a call that was refused after it (by a budget).</summary>
    public void Release(string? keyId, string runId, decimal heldUsd)
    {
        if (!_runs.TryGetValue((keyId, runId), out var s)) return;
        lock (s) Unhold(s, heldUsd);
    }

    private static void Unhold(RunState s, decimal heldUsd)
    {
        s.HeldUsd = Math.Max(0, s.HeldUsd - heldUsd);
        s.InFlight = Math.Max(0, s.InFlight - 1);
    }

    /// <summary>Records a finished call (and releases the worst case <see cref="TryStart"/> held for it); returns the reason the run ended with it, if it did.</summary>
    public string? Complete(string? keyId, string runId, in RunTurn turn, decimal heldUsd = 0)
    {
        if (!_runs.TryGetValue((keyId, runId), out var s)) return null;
        lock (s)
        {
            Unhold(s, heldUsd);
            s.Turns++;
            s.ToolCalls += turn.ToolCalls;
            s.SpentUsd += turn.CostUsd;
            s.LastActivity = time.GetUtcNow();
            if (s.EndReason is not null) return null;
            if (options.MaxToolCalls is { } mtc && s.ToolCalls >= mtc) s.EndReason = $"max_tool_calls ({mtc})";
            else if (options.MaxSpendUsd is { } ms && s.SpentUsd >= ms) s.EndReason = $"max_spend (${ms})";
            else if (options.MaxTurns is { } mt && s.Turns >= mt) s.EndReason = $"max_turns ({mt})";
            else s.EndReason = DoneReason(turn);
            return s.EndReason;
        }
    }

    private static bool SafeMatch(Regex r, string text)
    {
        try { return r.IsMatch(text); }
        catch (RegexMatchTimeoutException) { return false; }
    }

    private void Sweep()
    {
        var now = time.GetTimestamp();
        var last = Interlocked.Read(ref _lastSweep);
        if (now - last < time.TimestampFrequency * 60 || Interlocked.CompareExchange(ref _lastSweep, now, last) != last) return;
        var cutoff = time.GetUtcNow() - options.IdleExpiry;
        foreach (var (k, s) in _runs)
            if (s.LastActivity < cutoff) _runs.TryRemove(k, out _);
    }
}
