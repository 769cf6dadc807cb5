using System.Text.Json.Nodes;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Bursar.Core.Caching;

/// <summary>
/// Provider prompt caching, for prompts of at least 1,024 tokens: fingerprints the system prefix for the advisor,
/// and edits what goes upstream so the provider can cache the stable prefix: Anthropic breakpoints placed on it
/// (<see cref="PromptCachePlacer"/>), OpenAI's <c>prompt_cache_key</c> set per route and tenant, volatile values
/// (timestamps, ids) moved after the prefix for features that opt in, and a warning when a volatile prefix defeats
/// the cache. Options: <see cref="PromptCacheOptions"/>; a route's <c>PromptCache</c> switches it per route.
/// </summary>
public sealed partial class PromptCacheStage(PromptCacheOptions options, PromptCachePlacer placer, VolatilePrefixDetector volatility, PrefixFingerprint prefixes, PriceCatalog catalog, TimeProvider time, ILogger<PromptCacheStage> logger)
    : ILeverStage, IRequestEdit
{
    /// <summary>OpenAI caches prompts of at least this many tokens; below it no provider caches anything.</summary>
    public const int ModelMinimumTokens = 1024;

    /// <summary>How often the same route's volatile-prefix warning is logged.</summary>
    public static readonly TimeSpan WarningInterval = TimeSpan.FromMinutes(10);

    public string Name => "prompt-cache";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var req = call.Request;
        if (req.EstimatedInputTokens >= ModelMinimumTokens)
        {
            if (req.TryBody(out var body))
            {
                try { call.Prefix = prefixes.Of(call.Model, PromptCachePlacer.SystemText(body), cancellationToken); }
                catch (Exception e) when (CallRequest.IsBadJson(e)) { /* the provider call names the fault */ }
            }
            if ((call.Policy?.PromptCache ?? options.AppliesTo(call.Attribution.Feature)) && req.Api != WireApi.Embeddings) call.Edits.Add(this);
        }
        return next(call, cancellationToken);
    }

    public bool Apply(JsonObject body, in EditTarget target)
    {
        var call = target.Call;
        var estimate = call.Request.EstimatedInputTokens;
        var feature = call.Attribution.Feature;
        var price = catalog.Find(target.Model).Price;
        var minimum = price?.PromptCacheMinTokens ?? options.DefaultMinimumTokens;
        var route = (feature ?? "-") + "|" + target.Model;
        var changed = false;
        if (options.MovesVolatile(feature) && PromptCachePlacer.MoveVolatileToEnd(body))
        {
            // opted in: volatile values always travel after the stable prefix, so the prefix stays cacheable
            changed = true;
            call.VolatilePrefix = "moved: volatile system-prompt values (timestamps, ids) were moved into the newest user turn";
        }
        var systemText = PromptCachePlacer.SystemText(body);
        if (systemText.Length > 0 && volatility.Observe(route, systemText, estimate) is { } vol)
        {
            var perCall = price is null ? (decimal?)null : vol.PrefixTokens * (price.Rates.Input - (price.Rates.CacheRead ?? price.Rates.Input)) / 1_000_000m;
            call.VolatilePrefix = vol.Describe(perCall);
            if (volatility.ShouldWarn(route, time, WarningInterval)) LogVolatile(logger, feature, call.VolatilePrefix);
        }
        if (target.Anthropic && options.PlaceBreakpoints && estimate >= minimum)
        {
            var placed = placer.Place(body, target.Model, route, minimum, target.CancellationToken);
            if (placed.Placed > 0)
            {
                changed = true;
                call.PromptCachePlaced = placed.CallerBreakpoints == 0;
            }
        }
        else if (!target.Anthropic && options.SetOpenAIPromptCacheKey && body["prompt_cache_key"] is null)
        {
            body["prompt_cache_key"] = PromptCachePlacer.OpenAIPromptCacheKey(feature, call.Attribution.Team ?? call.Attribution.KeyId ?? "-");
            changed = true;
        }
        return changed;
    }

    /// <summary>
    /// A .NET chat call to an Anthropic client that can mark breakpoints: the system prompt (the stable prefix every
    /// turn re-sends) gets one, unless the caller placed its own; below the model's cacheable minimum nothing changes.
    /// </summary>
    public void Apply(ChatCallEdit call, in EditTarget target)
    {
        if (!target.Anthropic || call.MarkBreakpoint is null || !options.PlaceBreakpoints) return;
        var lc = target.Call;
        var minimum = catalog.Find(target.Model).Price?.PromptCacheMinTokens ?? options.DefaultMinimumTokens;
        if (lc.Request.EstimatedInputTokens < minimum) return;
        var lastSystem = -1;
        for (var i = 0; i < call.Messages.Count; i++)
        {
            var m = call.Messages[i];
            foreach (var c in m.Contents)
                if (c.AdditionalProperties is { } p && p.Keys.Any(k => k.EndsWith("cache_control", StringComparison.Ordinal))) return; // the caller's own breakpoints
            if (m.Role == ChatRole.System && m.Contents.Count > 0) lastSystem = i;
        }
        if (lastSystem < 0) return;
        var system = call.Messages[lastSystem];
        var contents = new List<AIContent>(system.Contents);
        var marked = call.MarkBreakpoint(contents[^1]);
        if (ReferenceEquals(marked, contents[^1])) return; // a content the client cannot mark
        contents[^1] = marked;
        call.Messages[lastSystem] = new ChatMessage(system.Role, contents) { AuthorName = system.AuthorName, AdditionalProperties = system.AdditionalProperties };
        lc.PromptCachePlaced = true;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Prompt caching is defeated on feature {Feature}: {Detail}")]
    private static partial void LogVolatile(ILogger logger, string? feature, string detail);
}

public static class PromptCacheStageExtensions
{
    /// <summary>Anthropic breakpoints, OpenAI prompt_cache_key, volatile-prefix checks (options: <see cref="PromptCacheOptions"/>).</summary>
    public static LeverPipelineBuilder UsePromptCaching(this LeverPipelineBuilder builder) => builder.Use<PromptCacheStage>();
}
