using System.Text.Json.Nodes;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace Bursar.Core.Context;

/// <summary>What the context lever did to one call: documents compressed, the compaction applied, and the tokens each removed.</summary>
public sealed class ContextReport
{
    /// <summary>Compressed text by original text, for the documents whose compression saves tokens.</summary>
    internal Dictionary<string, string>? Replacements { get; init; }
    internal CompactionPolicy? Compaction { get; init; }
    /// <summary>A summarization checkpoint: the turns its summary replaces and the summary (the same text on every call until the next one).</summary>
    internal (int Turns, string Text, bool Moved)? Summary { get; set; }
    /// <summary>Retrieval: the turns replaced and the older turns kept for their relevance (null: no encoder, so a sliding window).</summary>
    internal RetrievalPlan? Retrieval { get; set; }

    public int CompressedDocuments { get; init; }
    public long CompressionTokensRemoved { get; init; }
    /// <summary>The compaction of the last upstream attempt (null: none applied).</summary>
    public CompactionOutcome? Compacted { get; internal set; }

    public long TokensRemoved => CompressionTokensRemoved + (Compacted?.TokensRemoved ?? 0);

    /// <summary>Tokens the compaction made this call write to the provider cache again (see <see cref="CompactionOutcome.RewrittenTokens"/>).</summary>
    public long RewrittenTokens => Compacted?.RewrittenTokens ?? 0;

    /// <summary>The tokens from the newest assistant message on (see <see cref="CompactionOutcome.TailTokens"/>).</summary>
    public long TailTokens => Compacted?.TailTokens ?? 0;

    /// <summary>What the ledger records: <c>compress</c>, the compaction strategy, or both (<c>compress+prune-tool-results</c>); null when nothing was removed.</summary>
    public string? Strategy => (CompressionTokensRemoved > 0, Compacted) switch
    {
        (true, { } c) => "compress+" + c.Strategy,
        (true, null) => "compress",
        (false, { } c) => c.Strategy,
        _ => null,
    };
}

/// <summary>
/// The context lever (pipeline slot <c>context</c>), off unless a route or feature opts in. Document compression
/// (<see cref="DocumentCompressor"/>; <see cref="DocumentCompressionOptions"/> or a route's <c>DocumentCompression</c>) turns the
/// documents of user turns and tool results into compact text, decided once per call on the caller's body; compaction (a route's
/// <c>Compaction</c>, <see cref="Compactor"/>) trims the conversation once it is past the route's trigger, in the upstream's
/// wire format. Both are edits: a call below every trigger, or whose documents do not shrink, goes upstream byte for byte.
/// </summary>
public sealed partial class ContextStage(DocumentCompressor compressor, Compactor compactor, TokenCounter counter, PriceCatalog catalog,
    IConversationSummarizer summarizer, SummaryStore summaries, ILogger<ContextStage> logger, TurnEmbeddings? embeddings = null)
    : ILeverStage, IRequestEdit
{
    public string Name => "context";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var compress = call.Policy?.DocumentCompression ?? compressor.Options.AppliesTo(call.Attribution.Feature);
        var compaction = call.Policy?.Compaction is { } p && call.Request.EstimatedInputTokens >= p.TriggerTokens ? p : null;
        if (compress || compaction is not null) Plan(call, compress, compaction, cancellationToken);
        return (compaction?.Strategy, call.Context) switch
        {
            (CompactionPolicy.Summarize, { } report) => SummarizeThenNextAsync(call, report, compaction!, next, cancellationToken),
            (CompactionPolicy.Retrieval, { } report) when embeddings is not null => RetrieveThenNextAsync(call, report, compaction!, embeddings, next, cancellationToken),
            _ => next(call, cancellationToken),
        };
    }

    /// <summary>
    /// Retrieval: the older turns embedded with the semantic cache's encoder and the most relevant chosen before the edit (the edit itself
    /// is synchronous); then the rest of the pipeline. No encoder, or it failed: the route's sliding window.
    /// </summary>
    private async ValueTask RetrieveThenNextAsync(LeverCall call, ContextReport report, CompactionPolicy policy, TurnEmbeddings turns, LeverNext next, CancellationToken ct)
    {
        try
        {
            var anthropic = call.Dialect == "anthropic";
            if (call.Request.TryBody(out var body) && body["messages"] is JsonArray messages)
                report.Retrieval = await Compactor.PlanRetrievalAsync(messages, anthropic, policy, CacheRates.Of(catalog.Find(call.Model).Price?.Rates, anthropic), turns, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (CallRequest.IsBadJson(e)) { report.Retrieval = null; }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // the encoder failed (a model error, an embeddings endpoint down): the call is compacted as a sliding window, never refused
            report.Retrieval = null;
            LogNoRetrieval(logger, call.Id, e.Message);
        }
        await next(call, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// A summarization checkpoint: the turns the checkpoint replaces (cache-aware), their summary from the store or, the first time, from
    /// the summary model (its own ledger row); then the rest of the pipeline. No summary (the call failed, no summarizer here): no compaction.
    /// </summary>
    private async ValueTask SummarizeThenNextAsync(LeverCall call, ContextReport report, CompactionPolicy policy, LeverNext next, CancellationToken ct)
    {
        try
        {
            var anthropic = call.Dialect == "anthropic";
            if (call.Request.TryBody(out var body) && body["messages"] is System.Text.Json.Nodes.JsonArray messages && Conversation.Read(messages, anthropic) is { } conv)
            {
                var model = SummaryModel(policy, call.Model);
                var served = catalog.Find(call.Model).Price?.Rates;
                var rates = CacheRates.Of(served, anthropic);
                var sum = catalog.Find(model).Price?.Rates;
                double inShare = served is { Input: > 0 } && sum is not null ? (double)(sum.Input / served.Input) : 1, outShare = served is { Input: > 0 } && sum is not null ? (double)(sum.Output / served.Input) : 4;
                var (turns, previous) = Compactor.SummaryTurns(conv, policy, rates, inShare, outShare);
                if (turns > 0)
                {
                    var transcript = conv.Transcript(conv.FirstConversational, conv.TurnStarts[turns]);
                    var key = SummaryStore.KeyOf(call.Key.Id, transcript);
                    if (!summaries.TryGet(key, out var summary))
                    {
                        summary = await summarizer.SummarizeAsync(call, model, SummaryCall.Shown(transcript), policy.SummaryMaxTokens, ct).ConfigureAwait(false) ?? "";
                        if (summary.Length > 0) summaries.Add(key, summary);
                        else LogNoSummary(logger, call.Id, model);
                    }
                    if (summary.Length > 0) report.Summary = (turns, summary, Compactor.SummaryMoved(conv, previous, turns));
                }
            }
        }
        catch (Exception e) when (CallRequest.IsBadJson(e)) { report.Summary = null; }
        await next(call, ct).ConfigureAwait(false);
    }

    /// <summary>The summary model: the route's, else the small tier of the served model's family, else the served model.</summary>
    public static string SummaryModel(CompactionPolicy policy, string served) => policy.SummaryModel ?? Routing.TierLadders.Rung(served, "small") ?? served;

    private void Plan(LeverCall call, bool compress, CompactionPolicy? compaction, CancellationToken ct)
    {
        Dictionary<string, string>? replacements = null;
        long removed = 0;
        if (compress && call.Request.TryBody(out var body))
        {
            try { (replacements, removed) = Compress(body, call.Model, ct); }
            catch (Exception e) when (CallRequest.IsBadJson(e)) { replacements = null; }
        }
        if (replacements is null && compaction is null) return;
        call.Context = new ContextReport { Replacements = replacements, CompressedDocuments = replacements?.Count ?? 0, CompressionTokensRemoved = removed, Compaction = compaction };
        call.Edits.Add(this);
        if (removed > 0) LogCompressed(logger, call.Id, replacements!.Count, removed);
    }

    /// <summary>The documents of <paramref name="body"/> that compress to fewer tokens, and the tokens removed in all.</summary>
    internal (Dictionary<string, string>? Replacements, long Removed) Compress(JsonObject body, string model, CancellationToken ct)
    {
        var slots = DocumentSlots.Find(body);
        if (slots.Count == 0) return (null, 0);
        var compressed = new string[slots.Count];
        for (var i = 0; i < slots.Count; i++) compressed[i] = compressor.Compress(slots[i].Text, ct);
        var edged = DocumentCompressor.RemoveRepeatedEdges(compressed, compressor.Options.RepeatedEdgeLines);
        Dictionary<string, string>? map = null;
        long removed = 0;
        for (var i = 0; i < slots.Count; i++)
        {
            var original = slots[i].Text;
            if (ReferenceEquals(edged[i], original) || edged[i] == original || (map?.ContainsKey(original) ?? false)) continue;
            var saved = counter.Count(model, original, ct) - counter.Count(model, edged[i], ct);
            if (saved <= 0) continue;
            (map ??= new Dictionary<string, string>(StringComparer.Ordinal))[original] = edged[i];
            removed += saved;
        }
        return (map, removed);
    }

    public bool Apply(JsonObject body, in EditTarget target)
    {
        if (target.Call.Context is not { } report) return false;
        var changed = false;
        if (report.Replacements is { } map)
        {
            foreach (var slot in DocumentSlots.Find(body))
            {
                if (!map.TryGetValue(slot.Text, out var text)) continue;
                slot.Owner[slot.Property] = text;
                changed = true;
            }
        }
        // a caller that asked Anthropic for its own context management (clearing, compaction) gets it untouched: Bursar does not compact under it
        if (report.Compaction is { } policy && !(target.Anthropic && body.ContainsKey("context_management")))
            changed |= Compact(body, target.Anthropic, policy, report, target);
        return changed;
    }

    /// <summary>Compacts <paramref name="body"/> as the call's plan says (its summary, its retrieved turns, or the policy's strategy); true when it changed.</summary>
    private bool Compact(JsonObject body, bool anthropic, CompactionPolicy policy, ContextReport report, in EditTarget target)
    {
        var rates = CacheRates.Of(catalog.Find(target.Model).Price?.Rates, target.Anthropic);
        report.Compacted = (report.Summary, report.Retrieval) switch
        {
            ({ } s, _) => compactor.ApplySummary(body, anthropic, s.Turns, s.Text, target.Model, s.Moved),
            (_, { } r) => compactor.ApplyRetrieval(body, anthropic, r, target.Model),
            _ => compactor.Compact(body, anthropic, policy, target.Model, rates, target.CancellationToken),
        };
        if (report.Compacted is not { } c) return false;
        LogCompacted(logger, target.Call.Id, c.Strategy, c.CompactedTurns, c.TokensRemoved);
        return true;
    }

    /// <summary>
    /// A .NET chat call: the compressed documents replace the text of user turns and string tool results; then a route's compaction, on the
    /// messages (<see cref="ChatCompaction"/>: the same compactor as the gateway's, read in content blocks whatever the provider).
    /// </summary>
    public void Apply(ChatCallEdit call, in EditTarget target)
    {
        if (target.Call.Context is not { } report) return;
        Compress(call, report);
        if (report.Compaction is not { } policy) return;
        var body = ChatCompaction.Body(call.Messages);
        if (Compact(body, anthropic: true, policy, report, target)) ChatCompaction.MapBack(body, call.Messages);
    }

    private static void Compress(ChatCallEdit call, ContextReport report)
    {
        if (report.Replacements is not { } map) return;
        for (var i = 0; i < call.Messages.Count; i++)
        {
            var m = call.Messages[i];
            if (m.Role != ChatRole.User && m.Role != ChatRole.Tool) continue;
            List<AIContent>? contents = null;
            for (var j = 0; j < m.Contents.Count; j++)
            {
                AIContent? replaced = m.Contents[j] switch
                {
                    TextContent t when map.TryGetValue(t.Text, out var text) => new TextContent(text) { AdditionalProperties = t.AdditionalProperties },
                    FunctionResultContent r when r.Result is string s && map.TryGetValue(s, out var text) => new FunctionResultContent(r.CallId, text) { AdditionalProperties = r.AdditionalProperties },
                    _ => null,
                };
                if (replaced is null) continue;
                contents ??= [.. m.Contents];
                contents[j] = replaced;
            }
            if (contents is not null) call.Messages[i] = new ChatMessage(m.Role, contents) { AuthorName = m.AuthorName, AdditionalProperties = m.AdditionalProperties };
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call {CallId}: retrieval could not embed the turns ({Reason}); the call is compacted as a sliding window")]
    private static partial void LogNoRetrieval(ILogger logger, string callId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Call {CallId}: the summary model {Model} gave no summary; the call goes uncompacted")]
    private static partial void LogNoSummary(ILogger logger, string callId, string model);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Call {CallId}: {Documents} documents compressed, {Tokens} tokens removed")]
    private static partial void LogCompressed(ILogger logger, string callId, int documents, long tokens);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Call {CallId}: {Strategy} compacted {Turns} turns, {Tokens} tokens removed")]
    private static partial void LogCompacted(ILogger logger, string callId, string strategy, int turns, long tokens);
}

public static class ContextStageExtensions
{
    /// <summary>Document compression and context compaction, for the routes and features that opt in (options: <see cref="DocumentCompressionOptions"/>, a route's <c>Compaction</c>).</summary>
    public static LeverPipelineBuilder UseContext(this LeverPipelineBuilder builder) => builder.Use<ContextStage>();
}
