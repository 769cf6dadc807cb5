using Bursar.Core.Metering;
using System.Text.Json;
using Bursar.Core.Usage;

namespace Bursar.Providers.Dialects;

/// <summary>Reads usage from either dialect's response bodies and stream events.</summary>
public static partial class UsageReader
{
    /// <summary>OpenAI <c>usage</c>: prompt tokens include cached tokens; completion tokens include reasoning tokens.</summary>
    public static TokenUsage ReadOpenAI(JsonElement usage)
    {
        long prompt = Long(usage, "prompt_tokens"), completion = Long(usage, "completion_tokens"), cached = 0, write = 0, reasoning = 0;
        if (usage.TryGetProperty("prompt_tokens_details", out var pd) && pd.ValueKind == JsonValueKind.Object)
        {
            cached = Long(pd, "cached_tokens");
            write = Long(pd, "cache_write_tokens");
        }
        if (usage.TryGetProperty("completion_tokens_details", out var cd) && cd.ValueKind == JsonValueKind.Object)
            reasoning = Long(cd, "reasoning_tokens");
        return TokenUsage.FromOpenAI(prompt, cached, completion, reasoning, write);
    }

    /// <summary>Anthropic <c>usage</c>: three separate input counts, creation split by TTL when <c>cache_creation</c> is present.</summary>
    public static TokenUsage ReadAnthropic(JsonElement usage, TokenUsage? previous = null)
    {
        // compaction (context_management compact_20260112, on-demand compaction) and advisor calls bill in usage.iterations: the top-level
        // counts leave them out, so with entries present the bill is their sum (PROVIDER_API.md section 10's gateway rule)
        if (Iterations(usage) is { } summed) return summed;
        // message_delta usage is cumulative and may omit input counts: keep the message_start values then
        var p = previous ?? default;
        var input = OptLong(usage, "input_tokens") ?? p.InputTokens;
        var read = OptLong(usage, "cache_read_input_tokens") ?? p.CacheReadTokens;
        var output = OptLong(usage, "output_tokens") ?? p.OutputTokens;
        var creation = OptLong(usage, "cache_creation_input_tokens");
        long? e5 = null, e1 = null;
        if (usage.TryGetProperty("cache_creation", out var cc) && cc.ValueKind == JsonValueKind.Object)
        {
            e5 = OptLong(cc, "ephemeral_5m_input_tokens");
            e1 = OptLong(cc, "ephemeral_1h_input_tokens");
        }
        if (creation is null && e5 is null && e1 is null)
            return new TokenUsage(input, read, p.CacheWrite5mTokens, p.CacheWrite1hTokens, output);
        var u = TokenUsage.FromAnthropic(input, creation ?? (e5 ?? 0) + (e1 ?? 0), read, output, e5, e1);
        // a delta with a creation total but no TTL split keeps the split message_start gave
        if (e5 is null && e1 is null && previous is not null && p.CacheWriteTokens == creation)
            u = u with { CacheWrite5mTokens = p.CacheWrite5mTokens, CacheWrite1hTokens = p.CacheWrite1hTokens };
        return u;
    }

    /// <summary>
    /// The sum of a non-empty <c>usage.iterations</c> array (each entry's input, cache reads, cache writes split by TTL, output), or null
    /// when there is none. Entries that name another model (an advisor) are summed too and priced at the served model's rates.
    /// </summary>
    public static TokenUsage? Iterations(JsonElement usage)
    {
        if (!usage.TryGetProperty("iterations", out var its) || its.ValueKind != JsonValueKind.Array || its.GetArrayLength() == 0) return null;
        var total = default(TokenUsage);
        var any = false;
        foreach (var it in its.EnumerateArray())
        {
            if (it.ValueKind != JsonValueKind.Object) continue;
            any = true;
            long? e5 = null, e1 = null;
            if (it.TryGetProperty("cache_creation", out var cc) && cc.ValueKind == JsonValueKind.Object)
            {
                e5 = OptLong(cc, "ephemeral_5m_input_tokens");
                e1 = OptLong(cc, "ephemeral_1h_input_tokens");
            }
            var creation = OptLong(it, "cache_creation_input_tokens") ?? (e5 ?? 0) + (e1 ?? 0);
            var u = TokenUsage.FromAnthropic(Long(it, "input_tokens"), creation, Long(it, "cache_read_input_tokens"), Long(it, "output_tokens"), e5, e1);
            total = new TokenUsage(total.InputTokens + u.InputTokens, total.CacheReadTokens + u.CacheReadTokens, total.CacheWrite5mTokens + u.CacheWrite5mTokens,
                total.CacheWrite1hTokens + u.CacheWrite1hTokens, total.OutputTokens + u.OutputTokens);
        }
        return any ? total : null;
    }

    /// <summary>
    /// Reads a whole non-streamed response body of <paramref name="dialect"/> into <paramref name="summary"/>; false when
    /// the body is not JSON or not a response of that dialect (an Anthropic message has a <c>content</c> array, an OpenAI
    /// chat completion a <c>choices</c> array), e.g. a deployment configured with the wrong dialect.
    /// </summary>
    public static bool TryReadResponse(Dialect dialect, ReadOnlySpan<byte> body, CallSummary summary)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return false;
            if (!root.TryGetProperty(dialect == Dialect.Anthropic ? "content" : "choices", out var shape) || shape.ValueKind != JsonValueKind.Array) return false;
            summary.Model = Str(root, "model") ?? summary.Model;
            summary.ResponseId = Str(root, "id");
            if (dialect == Dialect.Anthropic)
            {
                summary.FinishReason = Str(root, "stop_reason");
                if (root.TryGetProperty("content", out var blocks) && blocks.ValueKind == JsonValueKind.Array)
                {
                    foreach (var b in blocks.EnumerateArray())
                    {
                        var type = Str(b, "type");
                        if (type == "tool_use") summary.ToolCalls++;
                        else if (type == "text") summary.AppendText(Str(b, "text"));
                    }
                }
                if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
                {
                    summary.Usage = ReadAnthropic(u);
                    summary.UsageSeen = summary.UsageFinal = true;
                }
            }
            else
            {
                if (root.TryGetProperty("choices", out var ch) && ch.ValueKind == JsonValueKind.Array && ch.GetArrayLength() > 0)
                {
                    summary.FinishReason = Str(ch[0], "finish_reason");
                    if (ch[0].TryGetProperty("message", out var msg) && msg.ValueKind == JsonValueKind.Object)
                    {
                        if (msg.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array) summary.ToolCalls += calls.GetArrayLength();
                        summary.AppendText(Str(msg, "content"));
                    }
                }
                if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
                {
                    summary.Usage = ReadOpenAI(u);
                    summary.UsageSeen = summary.UsageFinal = true;
                }
            }
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    internal static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long Long(JsonElement e, string name) => OptLong(e, name) ?? 0;

    private static long? OptLong(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var l) ? l : null;
}
