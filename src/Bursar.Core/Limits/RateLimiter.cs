using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json.Serialization;

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

/// <summary>
/// GCRA (generic cell rate algorithm) limiter: one "theoretical arrival time" per scope and unit, a full minute of
/// burst, exact on a <see cref="TimeProvider"/>. A call is checked against every limit that applies; it is admitted
/// only if all admit it (nothing is consumed otherwise).
/// </summary>
public sealed class RateLimiter(TimeProvider time)
{
    private readonly ConcurrentDictionary<string, StrongBox<long>> _tat = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private RateLimitDefinition[] _limits = [];

    public void Load(IEnumerable<RateLimitDefinition> limits) => _limits = limits.ToArray();

    public bool Any => _limits.Length > 0;

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
        _tat.GetOrAdd($"{(int)l.Scope}:{l.Value}:{(tokens ? 't' : 'r')}", _ => new StrongBox<long>(long.MinValue / 2));
}
