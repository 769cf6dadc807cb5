using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Usage;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>What metering reads from a .NET chat answer: every token class of its <see cref="UsageDetails"/>, the served model, tool calls, text.</summary>
internal static class ChatMetering
{
    /// <summary>
    /// The canonical usage of a <see cref="UsageDetails"/>: <see cref="UsageDetails.InputTokenCount"/> is every input
    /// token (OpenAI's prompt tokens, which include cached ones; Anthropic's input plus cache reads and writes, as the
    /// Anthropic SDK's chat client reports it), <see cref="UsageDetails.CachedInputTokenCount"/> the cache reads, cache
    /// writes come from <see cref="UsageDetails.AdditionalCounts"/> (split 5-minute / 1-hour where the SDK reports the
    /// split), and reasoning tokens are part of the output.
    /// </summary>
    public static TokenUsage ToTokenUsage(UsageDetails u, object? raw = null)
    {
        var input = u.InputTokenCount ?? 0;
        var read = u.CachedInputTokenCount ?? 0;
        var output = u.OutputTokenCount ?? 0;
        var reasoning = u.ReasoningTokenCount ?? 0;
        var w5 = Count(u, "CacheCreationEphemeral5mInputTokens");
        var w1 = Count(u, "CacheCreationEphemeral1hInputTokens");
        if (w5 + w1 == 0 && raw is not null && CacheWriteSplit(raw) is { } split) (w5, w1) = split;
        var writes = Math.Max(Count(u, "CacheCreationInputTokens"), w5 + w1);
        if (writes > w5 + w1) w5 = writes - w1; // no split reported: 5-minute writes, the default TTL
        var uncached = Math.Max(0, input - read - writes);
        return new TokenUsage(uncached, read, w5, w1, output, reasoning);
    }

    /// <summary>
    /// The 5-minute / 1-hour split of cache writes from the provider's own response (the Anthropic SDK's <c>Message</c>
    /// carries <c>usage.cache_creation</c>; its chat client reports only the total), read from its JSON form.
    /// </summary>
    private static (long W5, long W1)? CacheWriteSplit(object raw)
    {
        if (raw.GetType().Namespace?.StartsWith("Anthropic", StringComparison.Ordinal) != true) return null;
        try
        {
            var json = System.Text.Json.JsonSerializer.SerializeToElement(raw, raw.GetType());
            if (json.ValueKind == System.Text.Json.JsonValueKind.Object && json.TryGetProperty("usage", out var usage) && usage.ValueKind == System.Text.Json.JsonValueKind.Object
                && usage.TryGetProperty("cache_creation", out var cc) && cc.ValueKind == System.Text.Json.JsonValueKind.Object)
            {
                long Get(string name) => cc.TryGetProperty(name, out var v) && v.TryGetInt64(out var n) ? n : 0;
                return (Get("ephemeral_5m_input_tokens"), Get("ephemeral_1h_input_tokens"));
            }
        }
        catch (Exception e) when (e is NotSupportedException or InvalidOperationException or System.Text.Json.JsonException)
        {
            // not serializable: the total is billed as 5-minute writes
        }
        return null;
    }

    private static long Count(UsageDetails u, string key) => u.AdditionalCounts is { } counts && counts.TryGetValue(key, out var n) ? n : 0;

    /// <summary>Reads a whole answer into the call's summary.</summary>
    public static void Read(LeverCall call, ChatResponse response)
    {
        var s = call.Summary;
        s.Answered = true;
        s.Model = response.ModelId ?? call.Model;
        s.ResponseId = response.ResponseId;
        s.FinishReason = response.FinishReason?.Value;
        if (response.Usage is { } u) Settle(s, u, response.RawRepresentation);
        var messages = response.Messages;
        for (var i = 0; i < messages.Count; i++) Observe(s, messages[i].Contents);
        call.StatusCode = 200;
    }

    /// <summary>Reads one streamed update: first-token time, text and tool calls, the usage when it comes, the finish reason.</summary>
    public static void Observe(LeverCall call, ChatResponseUpdate update, TimeProvider time)
    {
        var s = call.Summary;
        s.Answered = true;
        if (update.ModelId is { } model) s.Model = model;
        if (update.ResponseId is { } id) s.ResponseId ??= id;
        if (update.FinishReason is { } finish) s.FinishReason = finish.Value;
        var contents = update.Contents;
        for (var i = 0; i < contents.Count; i++)
        {
            var c = contents[i];
            if (c is UsageContent usage) Settle(s, usage.Details, update.RawRepresentation);
            else if (c is TextContent { Text.Length: > 0 } or FunctionCallContent)
            {
                s.FirstTokenTimestamp ??= time.GetTimestamp();
                s.Deltas++;
            }
        }
        Observe(s, update.Contents);
        call.StatusCode = 200;
    }

    private static void Settle(CallSummary s, UsageDetails u, object? raw)
    {
        s.Usage = ToTokenUsage(u, raw);
        s.UsageSeen = true;
        s.UsageFinal = true;
    }

    private static void Observe(CallSummary s, IList<AIContent> contents)
    {
        for (var i = 0; i < contents.Count; i++)
        {
            switch (contents[i])
            {
                case TextContent t: s.AppendText(t.Text); break;
                case FunctionCallContent f:
                    s.ToolCalls++;
                    s.AppendOutput(f.Name);
                    break;
            }
        }
    }
}
