using System.Text.Json;
using Bursar.Core.Metering;
using Bursar.Core.Usage;

namespace Bursar.Providers.Dialects;

/// <summary>Usage of OpenAI's Responses objects and embedding lists (PROVIDER_API.md sections 8 and 9).</summary>
public static partial class UsageReader
{
    /// <summary>
    /// Responses <c>usage</c>: <c>input_tokens</c> include <c>input_tokens_details.cached_tokens</c> (and, with a chain, the
    /// stored context re-billed); <c>output_tokens</c> include <c>output_tokens_details.reasoning_tokens</c>.
    /// </summary>
    public static TokenUsage ReadResponsesUsage(JsonElement usage)
    {
        long input = Long(usage, "input_tokens"), output = Long(usage, "output_tokens"), cached = 0, write = 0, reasoning = 0;
        if (usage.TryGetProperty("input_tokens_details", out var id) && id.ValueKind == JsonValueKind.Object)
        {
            cached = Long(id, "cached_tokens");
            write = Long(id, "cache_write_tokens");
        }
        if (usage.TryGetProperty("output_tokens_details", out var od) && od.ValueKind == JsonValueKind.Object)
            reasoning = Long(od, "reasoning_tokens");
        return TokenUsage.FromOpenAI(input, cached, output, reasoning, write);
    }

    /// <summary>
    /// A Responses object (the JSON answer, or the <c>response</c> of a terminal stream event) into <paramref name="summary"/>:
    /// model, id, status (the finish reason: <c>length</c> when cut at <c>max_output_tokens</c>), text, tool calls, usage.
    /// </summary>
    public static void ReadResponseObject(JsonElement root, CallSummary summary, bool output = true)
    {
        summary.Model = Str(root, "model") ?? summary.Model;
        summary.ResponseId = Str(root, "id") ?? summary.ResponseId;
        var status = Str(root, "status");
        var reason = root.TryGetProperty("incomplete_details", out var inc) && inc.ValueKind == JsonValueKind.Object ? Str(inc, "reason") : null;
        summary.FinishReason = status switch
        {
            "incomplete" when reason == "max_output_tokens" => "length",
            "incomplete" => reason ?? "incomplete",
            "completed" => "stop",
            null => summary.FinishReason,
            _ => status,
        };
        if (output && root.TryGetProperty("output", out var items) && items.ValueKind == JsonValueKind.Array)
        {
            var calls = 0;
            foreach (var item in items.EnumerateArray())
            {
                var type = Str(item, "type");
                if (type == "function_call")
                {
                    calls++;
                    summary.AppendOutput(Str(item, "arguments"));
                }
                else if (type == "message" && item.TryGetProperty("content", out var parts) && parts.ValueKind == JsonValueKind.Array)
                {
                    foreach (var p in parts.EnumerateArray()) summary.AppendText(Str(p, "text") ?? Str(p, "refusal"));
                }
            }
            if (calls > 0 && summary.FinishReason == "stop") summary.FinishReason = "tool_calls";
            summary.ToolCalls = Math.Max(summary.ToolCalls, calls);
        }
        if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
        {
            summary.Usage = ReadResponsesUsage(u);
            summary.UsageSeen = summary.UsageFinal = true;
        }
    }

    /// <summary>A whole Responses answer; false when it is not one (no <c>output</c> array), e.g. a deployment with the wrong BaseUrl.</summary>
    public static bool TryReadResponsesBody(ReadOnlySpan<byte> body, CallSummary summary)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("output", out var o) || o.ValueKind != JsonValueKind.Array) return false;
            ReadResponseObject(root, summary);
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>An embeddings list: <c>usage.prompt_tokens</c> is all there is to bill (no output); false when it is not one.</summary>
    public static bool TryReadEmbeddingsBody(ReadOnlySpan<byte> body, CallSummary summary)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("data", out var d) || d.ValueKind != JsonValueKind.Array) return false;
            summary.Model = Str(root, "model") ?? summary.Model;
            summary.FinishReason = "stop";
            if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
            {
                summary.Usage = TokenUsage.FromOpenAI(Long(u, "prompt_tokens"), 0, 0);
                summary.UsageSeen = summary.UsageFinal = true;
            }
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
