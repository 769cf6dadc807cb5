using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json.Serialization;
using Bursar.Core.Budgets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Core.Limits;

[JsonConverter(typeof(JsonStringEnumConverter<RateLimitScope>))]
public enum RateLimitScope { Key, Team, Customer }

/// <summary>Requests and tokens per minute for one key, team or customer. A null limit is no limit.</summary>
public sealed record RateLimitDefinition(RateLimitScope Scope, string Value, int? RequestsPerMinute, long? TokensPerMinute)
{
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Value)) throw new ArgumentException($"A {Scope} rate limit needs a value.");
        if (RequestsPerMinute is < 1) throw new ArgumentException($"requests_per_minute must be at least 1, not {RequestsPerMinute}.");
        if (TokensPerMinute is < 1) throw new ArgumentException($"tokens_per_minute must be at least 1, not {TokensPerMinute}.");
    }
}

public interface IRateLimitStore
{
    Task<IReadOnlyList<RateLimitDefinition>> ListRateLimitsAsync(CancellationToken cancellationToken);
    Task UpsertRateLimitAsync(RateLimitDefinition limit, CancellationToken cancellationToken);
    Task<bool> DeleteRateLimitAsync(RateLimitScope scope, string value, CancellationToken cancellationToken);
}

/// <summary>Why a call was rate limited and when to retry.</summary>
public sealed record RateLimitRefusal(RateLimitDefinition Limit, string Unit, long LimitPerMinute, TimeSpan RetryAfter)
{
    public string Message => $"Rate limit of {LimitPerMinute:N0} {Unit} per minute for {Limit.Scope.ToString().ToLowerInvariant()} '{Limit.Value}' reached; retry in {Math.Ceiling(RetryAfter.TotalSeconds):0} s.";
}

/// <summary>One GCRA cell a call is checked against: its key (scope, value, unit), the limit per minute, what the call costs (1 request, or its tokens).</summary>
public readonly record struct RateLimitCell(string Key, long PerMinute, long Cost);

/// <summary>
/// Rate-limit cells shared by every gateway instance (<c>Bursar:Redis:Configuration</c>), so limits hold across the
/// instances together, not per instance. The same GCRA as <see cref="RateLimiter"/>'s in-process cells: one
/// theoretical arrival time per cell, a full minute of burst, all cells of a call admitted or none (nothing consumed
/// then). Implementations throw when their store is unreachable; <see cref="BudgetOptions.WhenSharedCountersDown"/>
/// says what happens then.
/// </summary>
public interface ISharedRateLimitCells
{
    /// <summary>The store, as messages name it (e.g. <c>Redis at 10.0.0.5:6379</c>).</summary>
    string Name { get; }

    /// <summary>Consumes every cell, or none: the index of the first cell that would pass its limit, with when to retry (-1 when admitted).</summary>
    ValueTask<(int RefusedIndex, TimeSpan RetryAfter)> TryAcquireAsync(RateLimitCell[] cells, CancellationToken cancellationToken);
}

/// <summary>What a rate-limit check decided: admitted (both null), refused (<see cref="Refusal"/>), or not checkable (<see cref="Unavailable"/>: the shared cells are unreachable and the policy fails closed).</summary>
public readonly record struct RateLimitDecision(RateLimitRefusal? Refusal, string? Unavailable)
{
    public bool Admitted => Refusal is null && Unavailable is null;
}

/// <summary>
/// GCRA (generic cell rate algorithm) limiter: one "theoretical arrival time" per scope and unit, a full minute of
/// burst, exact on a <see cref="TimeProvider"/>. A call is checked against every limit that applies; it is admitted
/// only if all admit it (nothing is consumed otherwise). With <see cref="ISharedRateLimitCells"/> the cells live in
/// that store (every instance counts together); while it is unreachable, <see cref="SharedCountersDownPolicy"/> says
/// whether calls a limit applies to are refused (503) or counted in this process with a logged warning.
/// </summary>
public sealed partial class RateLimiter(TimeProvider time, ISharedRateLimitCells? shared = null, SharedCountersDownPolicy whenDown = SharedCountersDownPolicy.FailClosed, ILogger? logger = null)
{
    private readonly ConcurrentDictionary<string, StrongBox<long>> _tat = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private readonly ILogger _logger = logger ?? NullLogger.Instance;
    private RateLimitDefinition[] _limits = [];
    private long _sharedFailures;
    private long _lastDownWarning;

    public void Load(IEnumerable<RateLimitDefinition> limits) => _limits = limits.ToArray();

    public bool Any => _limits.Length > 0;

    /// <summary>The shared cells' store, or null when limits count in this process.</summary>
    public string? SharedCells => shared?.Name;

    /// <summary>Checks that failed because the shared cells could not be reached.</summary>
    public long SharedFailures => Interlocked.Read(ref _sharedFailures);

    /// <summary>
    /// Checks (and consumes) every limit that applies. In process it completes at once; with shared cells it is one
    /// round trip to their store.
    /// </summary>
    public ValueTask<RateLimitDecision> TryAcquireAsync(string? keyId, string? team, string? customer, long tokens, CancellationToken cancellationToken)
    {
        if (shared is null)
            return ValueTask.FromResult(TryAcquire(keyId, team, customer, tokens, out var local) ? default : new RateLimitDecision(local, null));
        var limits = _limits;
        List<(RateLimitDefinition Limit, bool Tokens)>? plan = null;
        List<RateLimitCell>? cells = null;
        foreach (var l in limits)
        {
            var value = l.Scope switch { RateLimitScope.Key => keyId, RateLimitScope.Team => team, _ => customer };
            if (!string.Equals(value, l.Value, StringComparison.Ordinal)) continue;
            plan ??= []; cells ??= [];
            if (l.RequestsPerMinute is { } rpm) { plan.Add((l, false)); cells.Add(new RateLimitCell(CellKey(l, false), rpm, 1)); }
            if (l.TokensPerMinute is { } tpm) { plan.Add((l, true)); cells.Add(new RateLimitCell(CellKey(l, true), tpm, Math.Max(1, tokens))); }
        }
        if (cells is null || cells.Count == 0) return ValueTask.FromResult(default(RateLimitDecision));
        return SharedAsync(plan!, [.. cells], keyId, team, customer, tokens, cancellationToken);
    }

    private async ValueTask<RateLimitDecision> SharedAsync(List<(RateLimitDefinition Limit, bool Tokens)> plan, RateLimitCell[] cells, string? keyId, string? team, string? customer, long tokens, CancellationToken cancellationToken)
    {
        try
        {
            var (index, retry) = await shared!.TryAcquireAsync(cells, cancellationToken).ConfigureAwait(false);
            if (index < 0) return default;
            var (l, isTokens) = plan[index];
            return new RateLimitDecision(new RateLimitRefusal(l, isTokens ? "tokens" : "requests", cells[index].PerMinute, retry), null);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Interlocked.Increment(ref _sharedFailures);
            WarnDown(e);
            if (whenDown == SharedCountersDownPolicy.LocalCounters)
                return TryAcquire(keyId, team, customer, tokens, out var local) ? default : new RateLimitDecision(local, null);
            return new RateLimitDecision(null, $"Rate limits cannot be checked: the shared rate-limit cells ({shared!.Name}) are unreachable ({Short(e)}). Calls that rate limits apply to are refused until they are back (Bursar:Budgets:WhenSharedCountersDown = FailClosed; LocalCounters counts in each instance instead).");
        }
    }

    private void WarnDown(Exception e)
    {
        // at most one warning a minute: an outage under load must not flood the log
        var now = time.GetTimestamp();
        var last = Interlocked.Read(ref _lastDownWarning);
        if (last != 0 && time.GetElapsedTime(last, now) < TimeSpan.FromMinutes(1)) return;
        if (Interlocked.CompareExchange(ref _lastDownWarning, now, last) != last) return;
        LogSharedDown(_logger, shared!.Name, whenDown == SharedCountersDownPolicy.LocalCounters ? "counting rate limits in this process meanwhile" : "refusing rate-limited calls meanwhile", e.Message);
    }

    /// <summary>The first sentence of a store client's error (StackExchange.Redis appends pages of diagnostics).</summary>
    internal static string Short(Exception e)
    {
        var m = e.Message;
        var cut = m.IndexOf(" - ", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(", command=", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).TrimEnd('.');
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Shared rate-limit cells ({Store}) unreachable, {What}: {Error}")]
    private static partial void LogSharedDown(ILogger logger, string store, string what, string error);

    /// <summary>A cell's key: scope, value, unit (<c>r</c> requests, <c>t</c> tokens).</summary>
    public static string CellKey(RateLimitDefinition l, bool tokens) => $"{(int)l.Scope}:{l.Value}:{(tokens ? 't' : 'r')}";

    public IReadOnlyList<RateLimitDefinition> Limits => _limits;

    public bool TryAcquire(string? keyId, string? team, string? customer, long tokens, out RateLimitRefusal? refusal)
    {
        refusal = null;
        var limits = _limits;
        if (limits.Length == 0) return true;
        var now = time.GetTimestamp();
        var freq = time.TimestampFrequency;
        Span<(int Index, bool Tokens, long NewTat)> plan = stackalloc (int, bool, long)[8];
        var n = 0;
        lock (_lock)
        {
            for (var i = 0; i < limits.Length; i++)
            {
                var l = limits[i];
                var value = l.Scope switch { RateLimitScope.Key => keyId, RateLimitScope.Team => team, _ => customer };
                if (!string.Equals(value, l.Value, StringComparison.Ordinal)) continue;
                if (l.RequestsPerMinute is { } rpm && !Check(i, l, false, rpm, 1, now, freq, ref plan, ref n, out refusal)) return false;
                if (l.TokensPerMinute is { } tpm && !Check(i, l, true, tpm, Math.Max(1, tokens), now, freq, ref plan, ref n, out refusal)) return false;
            }
            for (var i = 0; i < n; i++)
            {
                var l = limits[plan[i].Index];

                Cell(l, plan[i].Tokens).Value = plan[i].NewTat;
            }
        }
        return true;

        bool Check(int index, RateLimitDefinition l, bool isTokens, long perMinute, long cost, long now, long freq, ref Span<(int, bool, long)> plan, ref int n, out RateLimitRefusal? refusal)
        {
            refusal = null;
            var minute = 60 * freq;
            var interval = (double)minute / perMinute;
            var tat = Math.Max(Cell(l, isTokens).Value, now);
            var newTat = tat + (long)Math.Ceiling(interval * cost);
            if (newTat - now > minute)
            {
                refusal = new RateLimitRefusal(l, isTokens ? "tokens" : "requests", perMinute, TimeSpan.FromSeconds((newTat - now - minute) / (double)freq));
                return false;
            }
            if (n < plan.Length) plan[n++] = (index, isTokens, newTat);
            return true;
        }
    }

    private StrongBox<long> Cell(RateLimitDefinition l, bool tokens) =>
        _tat.GetOrAdd(CellKey(l, tokens), _ => new StrongBox<long>(long.MinValue / 2));
}
