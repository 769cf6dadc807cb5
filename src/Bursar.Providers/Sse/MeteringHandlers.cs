using System.Buffers;
using System.Text.Json;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Sse;

/// <summary>Anthropic stream passed through unchanged; usage from <c>message_start</c> overridden by cumulative <c>message_delta</c>.</summary>
public sealed class AnthropicMeteringHandler(CallSummary summary, TimeProvider time) : SseStreamHandler(summary, time)
{
    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        Observe(eventName, data);
        output.Write(raw);
    }

    internal void Observe(ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data)
    {
        if (eventName.SequenceEqual("content_block_delta"u8))
        {
            MarkFirstToken();
            Summary.OutputChars += data.Length;
            Summary.Deltas++;
            if (Summary.Text is not null) AnthropicEvents.AppendDeltaText(data, Summary);
            return;
        }
        if (eventName.SequenceEqual("content_block_start"u8))
        {
            if (data.IndexOf("\"type\":\"tool_use\""u8) >= 0) Summary.ToolCalls++;
            return;
        }
        if (eventName.SequenceEqual("message_start"u8) || eventName.SequenceEqual("message_delta"u8) || eventName.SequenceEqual("error"u8))
            AnthropicEvents.Observe(data, Summary);
    }
}

/// <summary>One place that parses an event's JSON data for the metering handlers.</summary>
internal static class EventJson
{
    /// <summary>Hands the root of <paramref name="data"/> to <paramref name="read"/>; false when the data is not JSON.</summary>
    public static bool TryRead(ReadOnlySpan<byte> data, CallSummary summary, Action<JsonElement, CallSummary> read)
    {
        try
        {
            var reader = new Utf8JsonReader(data);
            using var doc = JsonDocument.ParseValue(ref reader);
            read(doc.RootElement, summary);
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}

internal static class AnthropicEvents
{
    public static void AppendDeltaText(ReadOnlySpan<byte> data, CallSummary summary) =>
        EventJson.TryRead(data, summary, static (root, s) =>
        {
            if (root.TryGetProperty("delta", out var d)) s.AppendText(UsageReader.Str(d, "text"));
        });

    public static void Observe(ReadOnlySpan<byte> data, CallSummary summary)
    {
        if (!EventJson.TryRead(data, summary, Read)) summary.ErrorType ??= "malformed_stream";
    }

    private static void Read(JsonElement root, CallSummary summary)
    {
        switch (UsageReader.Str(root, "type"))
        {
            case "message_start" when root.TryGetProperty("message", out var m):
                summary.Model = UsageReader.Str(m, "model") ?? summary.Model;
                summary.ResponseId = UsageReader.Str(m, "id");
                if (m.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
                {
                    summary.Usage = UsageReader.ReadAnthropic(u);
                    summary.UsageSeen = true;
                }
                break;
            case "message_delta":
                if (root.TryGetProperty("delta", out var d)) summary.FinishReason = UsageReader.Str(d, "stop_reason") ?? summary.FinishReason;
                if (root.TryGetProperty("usage", out var du) && du.ValueKind == JsonValueKind.Object)
                {
                    summary.Usage = UsageReader.ReadAnthropic(du, summary.Usage);
                    summary.UsageSeen = summary.UsageFinal = true;
                }
                break;
            case "error" when root.TryGetProperty("error", out var e):
                summary.ErrorType = UsageReader.Str(e, "type") ?? "api_error";
                summary.ErrorMessage = UsageReader.Str(e, "message");
                break;
        }
    }
}

/// <summary>
/// OpenAI stream passed through; usage from the final usage chunk. When Bursar asked for usage on the caller's
/// behalf (<paramref name="dropUsageChunk"/>), that extra chunk is removed before the caller sees it.
/// </summary>
public sealed class OpenAIMeteringHandler(CallSummary summary, TimeProvider time, bool dropUsageChunk) : SseStreamHandler(summary, time)
{
    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        if (OpenAIChunks.Observe(data, Summary, this) && dropUsageChunk) return;
        output.Write(raw);
    }

    internal void FirstToken() => MarkFirstToken();
}

internal static class OpenAIChunks
{
    private static ReadOnlySpan<byte> UsageObject => "\"usage\":{"u8;
    private static ReadOnlySpan<byte> EmptyChoices => "\"choices\":[]"u8;

    /// <summary>Meters one chunk; true when it is the usage-only chunk (no choices).</summary>
    public static bool Observe(ReadOnlySpan<byte> data, CallSummary summary, OpenAIMeteringHandler? handler)
    {
        if (data.IsEmpty || data.SequenceEqual("[DONE]"u8)) return false;
        if (data.StartsWith("{\"error\""u8))
        {
            ReadError(data, summary);
            return false;
        }
        if (summary.Model is null || data.IndexOf("\"finish_reason\":\""u8) >= 0)
            ReadHeader(data, summary);
        if (data.IndexOf("\"delta\":{\""u8) >= 0)
        {
            summary.Deltas++;
            if (summary.FirstTokenTimestamp is null) handler?.FirstToken();
        }
        summary.OutputChars += data.Length;
        if (data.IndexOf("\"tool_calls\""u8) >= 0) summary.ToolCalls += Count(data, "\"type\":\"function\""u8);
        if (summary.Text is not null && data.IndexOf("\"content\":\""u8) >= 0) AppendContent(data, summary);
        var ui = data.IndexOf(UsageObject);
        if (ui < 0) return false;
        var parsed = EventJson.TryRead(data, summary, static (root, s) =>
        {
            if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
            {
                s.Usage = UsageReader.ReadOpenAI(u);
                s.UsageSeen = s.UsageFinal = true;
            }
        });
        return parsed && data.IndexOf(EmptyChoices) >= 0;
    }

    private static int Count(ReadOnlySpan<byte> data, ReadOnlySpan<byte> what)
    {
        var n = 0;
        int i;
        while ((i = data.IndexOf(what)) >= 0)
        {
            n++;
            data = data[(i + what.Length)..];
        }
        return n;
    }

    private static void AppendContent(ReadOnlySpan<byte> data, CallSummary summary) =>
        EventJson.TryRead(data, summary, static (root, s) =>
        {
            if (root.TryGetProperty("choices", out var ch) && ch.ValueKind == JsonValueKind.Array && ch.GetArrayLength() > 0 && ch[0].TryGetProperty("delta", out var d))
                s.AppendText(UsageReader.Str(d, "content"));
        });

    private static void ReadHeader(ReadOnlySpan<byte> data, CallSummary summary)
    {
        var ok = EventJson.TryRead(data, summary, static (root, s) =>
        {
            s.Model ??= UsageReader.Str(root, "model");
            s.ResponseId ??= UsageReader.Str(root, "id");
            if (root.TryGetProperty("choices", out var ch) && ch.ValueKind == JsonValueKind.Array && ch.GetArrayLength() > 0)
                s.FinishReason = UsageReader.Str(ch[0], "finish_reason") ?? s.FinishReason;
        });
        if (!ok) summary.ErrorType ??= "malformed_stream";
    }

    private static void ReadError(ReadOnlySpan<byte> data, CallSummary summary)
    {
        var e = ProviderError.TryParse(500, data);
        summary.ErrorType = e?.TypeOverride ?? "server_error";
        summary.ErrorMessage = e?.Message;
    }
}
