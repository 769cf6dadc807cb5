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
    /// A .NET chat call to an Anthropic client that can mark breakpoints, placed as the gateway places them in a body:
    /// on the system prompt (the stable prefix every turn re-sends; the tools before it are cached with it) and on the
    /// turn just before the newest user message (the conversation so far, read back on the next turn), each only where
    /// the prefix up to it reaches the model's cacheable minimum; nothing when the caller placed breakpoints of its own.
    /// The caller's messages are never changed: a marked message is a copy.
    /// </summary>
    public void Apply(ChatCallEdit call, in EditTarget target)
    {
        if (!target.Anthropic || call.MarkBreakpoint is null || !options.PlaceBreakpoints) return;
        var lc = target.Call;
        var minimum = catalog.Find(target.Model).Price?.PromptCacheMinTokens ?? options.DefaultMinimumTokens;
        if (lc.Request.EstimatedInputTokens < minimum) return;
        var messages = call.Messages;
        int lastSystem = -1, lastUser = -1;
        for (var i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            foreach (var c in m.Contents)
                if (c.AdditionalProperties is { } p && p.Keys.Any(k => k.EndsWith("cache_control", StringComparison.Ordinal))) return; // the caller's own breakpoints
            if (m.Role == ChatRole.System && m.Contents.Count > 0) lastSystem = i;
            if (m.Role == ChatRole.User || m.Role == ChatRole.Tool) lastUser = i; // tool results travel as user turns
        }
        // Anthropic's prefix order: tools, system, then the messages; system messages are sent first whatever their place
        long tokens = 0;
        var systemTokens = 0L;
        for (var i = 0; i < messages.Count; i++)
            if (messages[i].Role == ChatRole.System) systemTokens += Tokens(messages[i], target);
        if (lastSystem >= 0 && systemTokens >= minimum && Mark(call, lastSystem)) lc.PromptCachePlaced = true;
        tokens = systemTokens;
        var history = lastUser - 1; // the last stable turn: the one just before the newest user message (or tool results)
        if (history < 0 || messages[history].Role == ChatRole.System) return;
        for (var i = 0; i <= history; i++)
            if (messages[i].Role != ChatRole.System) tokens += Tokens(messages[i], target);
        if (tokens >= minimum && Mark(call, history)) lc.PromptCachePlaced = true;
    }

    private long Tokens(ChatMessage m, in EditTarget target)
    {
        long n = 8; // the message's own framing
        foreach (var c in m.Contents)
        {
            var text = c switch
            {
                TextContent t => t.Text,
                FunctionCallContent f => f.Name + (f.Arguments is null ? "" : System.Text.Json.JsonSerializer.Serialize(f.Arguments, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>)))),
                FunctionResultContent r => r.Result as string ?? (r.Result is null ? "" : System.Text.Json.JsonSerializer.Serialize(r.Result, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(object)))),
                _ => "",
            };
            if (text.Length > 0) n += placer.CountTokens(target.Model, text, target.CancellationToken);
        }
        return n;
    }

    /// <summary>A copy of the message whose last markable content carries a breakpoint; false when it has none.</summary>
    private static bool Mark(ChatCallEdit call, int index)
    {
        var m = call.Messages[index];
        var contents = new List<AIContent>(m.Contents);
        for (var j = contents.Count - 1; j >= 0; j--)
        {
            var marked = call.MarkBreakpoint!(contents[j]);
            if (ReferenceEquals(marked, contents[j])) continue; // a content the client cannot mark (a tool call, an image)
            contents[j] = marked;
            call.Messages[index] = new ChatMessage(m.Role, contents) { AuthorName = m.AuthorName, AdditionalProperties = m.AdditionalProperties, MessageId = m.MessageId };
            return true;
        }
        return false;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Prompt caching is defeated on feature {Feature}: {Detail}")]
    private static partial void LogVolatile(ILogger logger, string? feature, string detail);
}

public static class PromptCacheStageExtensions
{
    /// <summary>Anthropic breakpoints, OpenAI prompt_cache_key, volatile-prefix checks (options: <see cref="PromptCacheOptions"/>).</summary>
    public static LeverPipelineBuilder UsePromptCaching(this LeverPipelineBuilder builder) => builder.Use<PromptCacheStage>();
}
