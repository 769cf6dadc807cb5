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
    /// <summary>
    /// A tier relative to the requested model's family (<c>small</c>, <c>mid</c>, <c>top</c>; see <see cref="TierLadders"/>): gpt-4.1 with
    /// <c>small</c> is served by gpt-4.1-nano, claude-sonnet-4-5 by claude-haiku-4-5. Never moves a call up; a model outside every ladder keeps.
    /// </summary>
    public string? Tier { get; set; }

    /// <summary>
    /// A tier ladder, weakest first (e.g. <c>gpt-4.1-nano, gpt-4.1-mini, gpt-4.1</c>): the complexity router scores each request and
    /// picks the rung. Excludes <see cref="Model"/>.
    /// </summary>
    public string[] Ladder { get; set; } = [];
    /// <summary>Who picks the ladder's rung: <c>complexity</c> (the local router, default) or <c>llm</c> (a one-word simple / medium / hard answer from <see cref="ClassifierModel"/>).</summary>
    public string Classifier { get; set; } = "complexity";
    /// <summary>The model the LLM classifier asks; default the ladder's cheapest rung. Its call is metered on the ledger as task <c>routing-classifier</c>.</summary>
    public string? ClassifierModel { get; set; }
    /// <summary>Share of calls the ladder sends to its top rung, calibrated on the router's training scores (default 0.5); the rest are split evenly below.</summary>
    public double StrongShare { get; set; } = 0.5;
    /// <summary>Low confidence: a score this close (in calibrated quantiles, default 0.05) below a rung's boundary goes one rung up.</summary>
    public double ConfidenceMargin { get; set; } = 0.05;
    /// <summary>Models tried in order when the chosen one answers 429, 5xx, 529 or times out (after the client's retries).</summary>
    public string[] Fallbacks { get; set; } = [];
    /// <summary>Output cap: <c>max_tokens</c> is lowered to this when the caller asks for more or sets none. Null: no cap.</summary>
    public int? MaxTokens { get; set; }
    /// <summary>Stop sequences added to the caller's (OpenAI allows 4 in all).</summary>
    public string[] Stop { get; set; } = [];
    /// <summary>Which levers apply on this route: null keeps the global and per-feature settings, true / false turns the lever on / off here.</summary>
    public bool? ResponseCache { get; set; }
    public bool? SemanticCache { get; set; }
    public bool? PromptCache { get; set; }
    /// <summary>
    /// Calls of this route may wait this long (from 1 minute to 24 hours) for their answer: they are queued and sent in a provider batch
    /// at half price, and answered 202 with a job id (<c>GET /v1/bursar/jobs/{id}</c>). Null: calls run now (a caller may still send
    /// <c>x-bursar-defer</c>). Streamed calls and turns of a run always run now.
    /// </summary>
    public TimeSpan? Defer { get; set; }
    /// <summary>Document compression (HTML to text, whitespace, repeated headers and footers, base64 stubs) on this route: null keeps the per-feature setting.</summary>
    public bool? DocumentCompression { get; set; }
    /// <summary>Context compaction on this route (null: none): the strategy and its knobs (<see cref="Context.CompactionPolicy"/>).</summary>
    public Context.CompactionPolicy? Compaction { get; set; }
    /// <summary>Learn the output cap from the ledger: p95 of this route's output tokens + 10%, recomputed periodically; <see cref="MaxTokens"/> is the cap until there is data.</summary>
    public bool LearnMaxTokens { get; set; }
    /// <summary>A learned cap that cuts off more than this share of calls (finish reason length / max_tokens) is raised (default 0.05).</summary>
    public double MaxTruncationRate { get; set; } = 0.05;

    /// <summary>Throws naming <paramref name="where"/> (a configuration path, <c>route 'x'</c>, a CLI option) and the field at fault.</summary>
    public void Validate(string where, Func<string, bool>? isServed = null)
    {
        if (Defer is { } defer && (defer < TimeSpan.FromMinutes(1) || defer > TimeSpan.FromHours(24)))
            throw new InvalidOperationException($"{where}:Defer must be from 00:01:00 to 1.00:00:00 (a provider batch's window is 24 hours), not {defer} (route '{Name}').");
        if (MaxTokens is <= 0) throw new InvalidOperationException($"{where}:MaxTokens must be at least 1 (route '{Name}').");
        if (Stop.Length > 4) throw new InvalidOperationException($"{where}:Stop has {Stop.Length} sequences; providers accept at most 4 (route '{Name}').");
        if (Tier is not null && Array.IndexOf(TierLadders.Tiers, Tier) < 0) throw new InvalidOperationException($"{where}:Tier '{Tier}' (route '{Name}') must be small, mid or top.");
        if (Tier is not null && (Model is not null || Ladder.Length > 0)) throw new InvalidOperationException($"{where}: route '{Name}' sets Tier with Model or Ladder; pick one.");
        if (Model is not null && Ladder.Length > 0) throw new InvalidOperationException($"{where}: route '{Name}' sets both Model and Ladder; a ladder lets the router choose the model.");
        if (Ladder.Length == 1) throw new InvalidOperationException($"{where}:Ladder of route '{Name}' has one rung; give at least two models, weakest first (or use Model).");
        if (Classifier is not ("complexity" or "llm")) throw new InvalidOperationException($"{where}:Classifier '{Classifier}' (route '{Name}') must be 'complexity' or 'llm'.");
        if (StrongShare is < 0 or > 1) throw new InvalidOperationException($"{where}:StrongShare {StrongShare} (route '{Name}') must be between 0 and 1.");
        if (ConfidenceMargin is < 0 or > 0.5) throw new InvalidOperationException($"{where}:ConfidenceMargin {ConfidenceMargin} (route '{Name}') must be between 0 and 0.5.");
        Compaction?.Validate($"{where}:Compaction", Name);
        if (MaxTruncationRate is <= 0 or >= 1) throw new InvalidOperationException($"{where}:MaxTruncationRate {MaxTruncationRate} (route '{Name}') must be between 0 and 1.");
        if (isServed is not null)
            foreach (var (field, m) in new[] { ("Model", Model), ("ClassifierModel", ClassifierModel), ("Compaction:SummaryModel", Compaction?.SummaryModel) }.Concat(Ladder.Select(x => ("Ladder", (string?)x))).Concat(Fallbacks.Select(x => ("Fallbacks", (string?)x))))
                if (m is not null && !isServed(m))
                    throw new InvalidOperationException($"{where}:{field} '{m}' (route '{Name}') is not served by any deployment; add it to Bursar:Providers:Deployments:<name>:Models.");
    }

    /// <summary>
    /// Picks the ladder rung for a router score: the top <see cref="StrongShare"/> of calibrated scores go to the top rung, the rest are split
    /// evenly below; a score within <see cref="ConfidenceMargin"/> under a boundary goes one rung up (low confidence falls back to the stronger model).
    /// </summary>
    public (string Model, bool LowConfidence) Rung(double quantile)
    {
        var n = Ladder.Length;
        var below = 1 - StrongShare;
        int rung;
        if (quantile >= below) rung = n - 1;
        else rung = n == 2 ? 0 : Math.Min(n - 2, (int)(quantile / (below / (n - 1))));
        var boundary = rung == n - 1 ? double.PositiveInfinity : rung == n - 2 ? below : (rung + 1) * below / (n - 1);
        var low = boundary - quantile < ConfidenceMargin;
        if (low) rung++;
        return (Ladder[rung], low);
    }

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

    /// <summary>
    /// Adds LEVERS.md's task table after the configured routes: tasks tagged classification, extraction or summarization to the small tier
    /// of the requested model's family, analysis and code to the middle, hard multi-step reasoning to the top (never up). Default false.
    /// </summary>
    public bool DefaultTierRoutes { get; set; }

    /// <summary>The routes in force from configuration: <see cref="Routes"/>, then the default tier table when it is on.</summary>
    public RoutingOptions WithDefaults()
    {
        if (!DefaultTierRoutes) return this;
        var names = Routes.Select(r => r.Name).ToHashSet(StringComparer.Ordinal);
        var table = TierLadders.DefaultTaskTiers.Where(kv => !names.Contains("tier:" + kv.Key))
            .Select(kv => new RoutePolicy { Name = "tier:" + kv.Key, Task = kv.Key, Tier = kv.Value });
        return new RoutingOptions { Routes = [.. Routes, .. table], RouterModel = RouterModel, Cooldown = Cooldown };
    }

    /// <summary>A model file from <c>bursar train-router</c>; default: the router shipped with Bursar (trained on RouteLLM's MMLU and GSM8K labels).</summary>
    public string? RouterModel { get; set; }

    /// <summary>How long a deployment that failed (429, 5xx, 529, timeout) is skipped by fallback chains (default 30 s).</summary>
    public TimeSpan Cooldown { get; set; } = TimeSpan.FromSeconds(30);

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
            r.Validate(where, isServed);
        }
    }

    public RoutePolicy? Match(CallAttribution a, string requestedModel, long estimatedInputTokens)
    {
        foreach (var r in Routes)
            if (r.Matches(a, requestedModel, estimatedInputTokens)) return r;
        return null;
    }
}

/// <summary>Output caps: learning one from observed output lengths, and applying one (with stop sequences) to a request body in the upstream dialect.</summary>
public static class OutputCaps
{
    /// <summary>The nearest-rank percentile of <paramref name="values"/> (0 for none).</summary>
    public static long Percentile(IEnumerable<long> values, double p)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return 0;
        var rank = (int)Math.Ceiling(p * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    /// <summary>The learned cap: the <paramref name="percentile"/> of observed output tokens plus <paramref name="margin"/>, rounded up (p95 + 10% by default).</summary>
    public static int Learn(IEnumerable<long> outputTokens, double percentile = 0.95, double margin = 0.10) =>
        CapFrom(Percentile(outputTokens, percentile), margin);

    /// <summary>The cap for an observed percentile: it plus the margin, rounded up.</summary>
    public static int CapFrom(long percentileTokens, double margin = 0.10) => (int)Math.Ceiling(percentileTokens * (1 + margin));

    /// <summary>The smallest <c>max_output_tokens</c> the Responses API accepts.</summary>
    public const int ResponsesMinimumOutputTokens = 16;

    /// <summary>Lowers a Responses body's <c>max_output_tokens</c> to <paramref name="cap"/> (never raises the caller's; never below the API's minimum of 16). True when the body changed.</summary>
    public static bool ApplyResponses(JsonObject body, int? cap)
    {
        if (cap is not { } c) return false;
        c = Math.Max(c, ResponsesMinimumOutputTokens);
        var current = body["max_output_tokens"] is JsonValue v && (v.TryGetValue<long>(out var n) || (v.TryGetValue<int>(out var i) && (n = i) == i)) ? n : (long?)null;
        if (current is not null && current <= c) return false;
        body["max_output_tokens"] = c;
        return true;
    }

    /// <summary>Lowers the output limit to <paramref name="cap"/> (never raises the caller's) and adds stop sequences. True when the body changed.</summary>
    public static bool Apply(JsonObject body, bool anthropic, int? cap, IReadOnlyList<string> stop)
    {
        var changed = false;
        if (cap is { } c)
        {
            var field = anthropic ? "max_tokens" : body.ContainsKey("max_completion_tokens") || !body.ContainsKey("max_tokens") ? "max_completion_tokens" : "max_tokens";
            var current = body[field] is JsonValue v && (v.TryGetValue<long>(out var n) || (v.TryGetValue<int>(out var i) && (n = i) == i)) ? n : (long?)null;
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
