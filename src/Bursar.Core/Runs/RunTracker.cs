using System.Collections.Concurrent;
using System.Text.RegularExpressions;

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

/// <summary>
/// Tracks agent runs: turns, tool calls and spend per run id (scoped by key), refuses calls once a cap trips or a
/// done-condition is met, and forgets runs idle for <see cref="RunCapOptions.IdleExpiry"/>.
/// </summary>
public sealed class RunTracker(RunCapOptions options, TimeProvider time)
{
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

    private static RunRefusal Ended(string runId, RunState s) =>
        new(runId, s.EndReason!, $"Run '{runId}' has ended: {s.EndReason}, after {s.Turns} turns, {s.ToolCalls} tool calls and ${s.SpentUsd} spent. Start a new run id to continue.");

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
                refusal = new RunRefusal(runId, $"max_turns ({mt2})", $"Run '{runId}' has {s.InFlight} calls in flight and {s.Turns} finished: one more would pass its cap of {mt2} turns.");
                return false;
            }
            if (s.EndReason is not null)
            {
                refusal = Ended(runId, s);
                return false;
            }
            if (options.MaxSpendUsd is { } max && s.SpentUsd + s.HeldUsd + worstCaseUsd > max)
            {
                refusal = new RunRefusal(runId, $"max_spend (${max})", $"Run '{runId}' would exceed its spend cap of ${max}: ${s.SpentUsd} spent, ${s.HeldUsd} held by calls in flight, this call could cost up to ${worstCaseUsd}.");
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
            else if (options.StopMarker is { } marker && turn.Text?.Contains(marker, StringComparison.Ordinal) == true) s.EndReason = "done: stop marker";
            else if (_pattern is not null && turn.Text is not null && SafeMatch(_pattern, turn.Text)) s.EndReason = "done: text matched the done pattern";
            else if (options.DoneWhenAnsweredWithoutTools && turn.ToolCalls == 0 && turn.FinishReason is not null) s.EndReason = "done: answered without a tool call";
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
