using System.Text.Json.Nodes;
using Bursar.Core.Attribution;

namespace Bursar.Core.Routing;

/// <summary>
/// One route: which calls it matches (every set field must match; unset fields match anything) and what it does to them:
/// the model to serve, an output cap and stop sequences. Routes are tried in order; the first match wins.
/// </summary>
public sealed class RoutePolicy
{
    /// <summary>The route's name, recorded on every ledger row it touches.</summary>
    public string Name { get; set; } = "";

    // ---- match
    /// <summary>The caller's task tag (<c>x-bursar-task</c>), e.g. <c>classification</c>.</summary>
    public string? Task { get; set; }
    public string? Feature { get; set; }
    public string? Team { get; set; }
    public string? KeyId { get; set; }
    /// <summary>The model the caller asked for; a trailing <c>*</c> matches a prefix (<c>gpt-4.1*</c>).</summary>
    public string? RequestedModel { get; set; }
    /// <summary>Request shape: only prompts of at most this many (estimated) input tokens.</summary>
    public long? MaxInputTokens { get; set; }
    /// <summary>Request shape: only prompts of at least this many (estimated) input tokens.</summary>
    public long? MinInputTokens { get; set; }

    // ---- actions
    /// <summary>The model to serve instead of the requested one (any provider: the gateway translates). Null keeps the requested model.</summary>
    public string? Model { get; set; }
    /// <summary>Output cap: <c>max_tokens</c> is lowered to this when the caller asks for more or sets none. Null: no cap.</summary>
    public int? MaxTokens { get; set; }
    /// <summary>Stop sequences added to the caller's (OpenAI allows 4 in all).</summary>
    public string[] Stop { get; set; } = [];

    public bool Matches(CallAttribution a, string requestedModel, long estimatedInputTokens) =>
        Eq(Task, a.Task) && Eq(Feature, a.Feature) && Eq(Team, a.Team) && Eq(KeyId, a.KeyId)
        && (RequestedModel is null || (RequestedModel.EndsWith('*') ? requestedModel.StartsWith(RequestedModel[..^1], StringComparison.Ordinal) : RequestedModel == requestedModel))
        && (MaxInputTokens is null || estimatedInputTokens <= MaxInputTokens) && (MinInputTokens is null || estimatedInputTokens >= MinInputTokens);

    private static bool Eq(string? want, string? have) => want is null || string.Equals(want, have, StringComparison.Ordinal);
}

/// <summary>Route policies (<c>Bursar:Routing</c>). Defaults: no routes, every call served as asked.</summary>
public sealed class RoutingOptions
{
    public const string Section = "Bursar:Routing";

    public List<RoutePolicy> Routes { get; set; } = [];

    /// <summary>Throws with the route and field at fault; run once at start.</summary>
    public void Validate(Func<string, bool>? isServed = null)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < Routes.Count; i++)
        {
            var r = Routes[i];
            var where = $"Bursar:Routing:Routes:{i}";
            if (string.IsNullOrWhiteSpace(r.Name)) throw new InvalidOperationException($"{where}:Name is required: every route has a name that the ledger records.");
            if (!names.Add(r.Name)) throw new InvalidOperationException($"{where}: route name '{r.Name}' is used twice.");
            if (r.MaxTokens is <= 0) throw new InvalidOperationException($"{where}:MaxTokens must be at least 1 (route '{r.Name}').");
            if (r.Stop.Length > 4) throw new InvalidOperationException($"{where}:Stop has {r.Stop.Length} sequences; providers accept at most 4 (route '{r.Name}').");
            if (r.Model is not null && isServed is not null && !isServed(r.Model))
                throw new InvalidOperationException($"{where}:Model '{r.Model}' (route '{r.Name}') is not served by any deployment; add it to Bursar:Providers:Deployments:<name>:Models.");
        }
    }

    public RoutePolicy? Match(CallAttribution a, string requestedModel, long estimatedInputTokens)
    {
        foreach (var r in Routes)
            if (r.Matches(a, requestedModel, estimatedInputTokens)) return r;
        return null;
    }
}

/// <summary>Applies a route's output cap and stop sequences to a request body in the upstream dialect.</summary>
public static class OutputCaps
{
    /// <summary>Lowers the output limit to <paramref name="cap"/> (never raises the caller's) and adds stop sequences. True when the body changed.</summary>
    public static bool Apply(JsonObject body, bool anthropic, int? cap, IReadOnlyList<string> stop)
    {
        var changed = false;
        if (cap is { } c)
        {
            var field = anthropic ? "max_tokens" : body.ContainsKey("max_completion_tokens") || !body.ContainsKey("max_tokens") ? "max_completion_tokens" : "max_tokens";
            var current = body[field] is JsonValue v && v.TryGetValue<long>(out var n) ? n : (long?)null;
            if (current is null || current > c)
            {
                body[field] = c;
                changed = true;
            }
        }
        if (stop.Count > 0)
        {
            var field = anthropic ? "stop_sequences" : "stop";
            var existing = body[field] switch
            {
                JsonArray a => a.Select(x => x?.GetValue<string>()).OfType<string>().ToList(),
                JsonValue s when s.TryGetValue<string>(out var one) => [one],
                _ => new List<string>(),
            };
            foreach (var s in stop)
                if (!existing.Contains(s) && (anthropic || existing.Count < 4)) existing.Add(s);
            body[field] = new JsonArray(existing.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray());
            changed = true;
        }
        return changed;
    }
}
