using System.Collections.Concurrent;
using Bursar.Core.Ledger;

namespace Bursar.Core.Routing;

/// <summary>A route's learned output cap and how it got there.</summary>
public sealed record LearnedCap(string Route, int Cap, int Calls, long P95, double TruncationRate, int Floor, DateTimeOffset Since, string Why);

/// <summary>
/// Learned output caps (<see cref="RoutePolicy.LearnMaxTokens"/>): per route, p95 of observed output tokens + 10%, recomputed from the ledger.
/// A cap that cuts off more than the route's <see cref="RoutePolicy.MaxTruncationRate"/> of calls is raised by half and never learned
/// below that again, so a cap cannot lock itself in by truncating the data it learns from.
/// </summary>
public sealed class OutputCapLearner(Func<RoutingOptions> routing, TimeProvider time)
{
    /// <summary>Calls a route needs before its cap is learned (fewer: the route's fixed <see cref="RoutePolicy.MaxTokens"/> applies).</summary>
    public const int MinCalls = 20;
    public const double Margin = 0.10;
    public const double RaiseFactor = 1.5;

    private readonly ConcurrentDictionary<string, LearnedCap> _caps = new(StringComparer.Ordinal);

    public OutputCapLearner(RoutingOptions routing, TimeProvider time) : this(() => routing, time) { }

    /// <summary>The cap to apply on the route now: the learned one, else its fixed <see cref="RoutePolicy.MaxTokens"/>.</summary>
    public int? CapFor(RoutePolicy route) => route.LearnMaxTokens && _caps.TryGetValue(route.Name, out var c) ? c.Cap : route.MaxTokens;

    public IReadOnlyCollection<LearnedCap> Caps => _caps.Values.ToArray();

    /// <summary>Recomputes every learning route's cap from its recent ledger records (ok calls with output).</summary>
    public IReadOnlyList<LearnedCap> Recompute(IEnumerable<LedgerRecord> recent)
    {
        var byRoute = recent.Where(r => r.Route is not null && r.Outcome == "ok" && r.OutputTokens > 0).GroupBy(r => r.Route!, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
        var changed = new List<LearnedCap>();
        var now = time.GetUtcNow();
        foreach (var route in routing().Routes.Where(r => r.LearnMaxTokens))
        {
            if (!byRoute.TryGetValue(route.Name, out var rows) || rows.Length < MinCalls) continue;
            _caps.TryGetValue(route.Name, out var current);
            // the truncation rate under the cap in force: calls since it was set that stopped at the limit
            var since = current?.Since ?? DateTimeOffset.MinValue;
            var underCap = rows.Where(r => r.Timestamp >= since).ToArray();
            var truncated = underCap.Length == 0 ? 0 : underCap.Count(r => r.FinishReason is "length" or "max_tokens") / (double)underCap.Length;
            var p95 = OutputCaps.Percentile(rows.Select(r => r.OutputTokens), 0.95);
            var learned = OutputCaps.CapFrom(p95, Margin);
            LearnedCap next;
            if (current is not null && underCap.Length >= MinCalls && truncated > route.MaxTruncationRate)
            {
                var raised = (int)Math.Ceiling(current.Cap * RaiseFactor);
                next = new LearnedCap(route.Name, raised, rows.Length, p95, truncated, raised, now,
                    $"raised from {current.Cap}: {truncated:P1} of {underCap.Length} calls were cut off (limit {route.MaxTruncationRate:P0})");
            }
            else
            {
                var floor = current?.Floor ?? 0;
                var cap = Math.Max(learned, floor);
                if (current is not null && current.Cap == cap) continue;
                next = new LearnedCap(route.Name, cap, rows.Length, p95, truncated, floor, now,
                    cap == learned ? $"p95 {p95} + {Margin:P0} over {rows.Length} calls" : $"floor {floor} from an earlier raise (p95 {p95} + {Margin:P0} = {learned})");
            }
            _caps[route.Name] = next;
            changed.Add(next);
        }
        return changed;
    }
}
