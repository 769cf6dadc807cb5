using Bursar.Core.Metering;
using System.Buffers;
using System.Text.Json;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Sse;

/// <summary>Anthropic stream passed through unchanged; usage from <c>message_start</c> overridden by cumulative <c>message_delta</c>.</summary>
public sealed class AnthropicMeteringHandler(CallSummary summary, TimeProvider time) : SseStreamHandler(summary, time)
{
    protected override Dialect CallerDialect => Dialect.Anthropic;

    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        switch (AnthropicEvents.Observe(eventName, data, Summary))
        {
            case AnthropicEventKind.ContentBlockDelta:
                MarkFirstToken();
                break;
            case AnthropicEventKind.MessageStop:
            case AnthropicEventKind.Error:
                Ended = true;
                break;
        }
        output.Write(raw);
    }
}

internal enum AnthropicEventKind { Other, MessageStart, ContentBlockStart, ContentBlockDelta, MessageDelta, MessageStop, Error, Ping }

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

    /// <summary>Appends the JSON string the reader is on to the summary's output (and its text when <paramref name="text"/>), without a string allocation.</summary>
    public static void AppendString(ref Utf8JsonReader r, CallSummary summary, bool text)
    {
        var max = r.HasValueSequence ? checked((int)r.ValueSequence.Length) : r.ValueSpan.Length;
        if (max == 0) return;
        var rented = ArrayPool<char>.Shared.Rent(max);
        try
        {
            var n = r.CopyString(rented);
            if (text) summary.AppendText(rented.AsSpan(0, n));
            else summary.AppendOutput(rented.AsSpan(0, n));
        }
        finally
        {
            ArrayPool<char>.Shared.Return(rented);
        }
    }

    /// <summary>Moves past the value of the property the reader is on.</summary>
    public static void SkipValue(ref Utf8JsonReader r)
    {
        r.Read();
        r.Skip();
    }
}

/// <summary>
/// Reads Anthropic events with a JSON reader: whatever the spacing, key order or escaping, and whether or not the
/// frame has an <c>event:</c> line (the data's <c>type</c> decides). Content deltas, the hot path, build no DOM.
/// </summary>
internal static class AnthropicEvents
{
    public static AnthropicEventKind Kind(ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data)
    {
        if (!eventName.IsEmpty) return KindOf(eventName);
        try
        {
            var r = new Utf8JsonReader(data);
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return AnthropicEventKind.Other;
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueTextEquals("type"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.String) return AnthropicEventKind.Other;
                    return KindOf(r.HasValueSequence || r.ValueIsEscaped ? System.Text.Encoding.UTF8.GetBytes(r.GetString()!) : r.ValueSpan);
                }
                EventJson.SkipValue(ref r);
            }
        }
        catch (JsonException)
        {
        }
        return AnthropicEventKind.Other;
    }

    private static AnthropicEventKind KindOf(ReadOnlySpan<byte> name) => name switch
    {
        _ when name.SequenceEqual("content_block_delta"u8) => AnthropicEventKind.ContentBlockDelta,
        _ when name.SequenceEqual("content_block_start"u8) => AnthropicEventKind.ContentBlockStart,
        _ when name.SequenceEqual("message_start"u8) => AnthropicEventKind.MessageStart,
        _ when name.SequenceEqual("message_delta"u8) => AnthropicEventKind.MessageDelta,
        _ when name.SequenceEqual("message_stop"u8) => AnthropicEventKind.MessageStop,
        _ when name.SequenceEqual("error"u8) => AnthropicEventKind.Error,
        _ when name.SequenceEqual("ping"u8) => AnthropicEventKind.Ping,
        _ => AnthropicEventKind.Other,
    };

    /// <summary>Meters one event into <paramref name="summary"/>; returns its kind.</summary>
    public static AnthropicEventKind Observe(ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, CallSummary summary)
    {
        var kind = Kind(eventName, data);
        switch (kind)
        {
            case AnthropicEventKind.ContentBlockDelta:
                summary.Deltas++;
                summary.OutputChars += data.Length;
                ReadDelta(data, summary);
                break;
            case AnthropicEventKind.ContentBlockStart:
                if (IsToolUseStart(data)) summary.ToolCalls++;
                break;
            case AnthropicEventKind.MessageStart or AnthropicEventKind.MessageDelta or AnthropicEventKind.Error:
                if (!EventJson.TryRead(data, summary, Read)) summary.ErrorType ??= "malformed_stream";
                break;
        }
        return kind;
    }

    /// <summary>Text, tool-input JSON or thinking of a <c>content_block_delta</c>, read with a reader (no DOM).</summary>
    private static void ReadDelta(ReadOnlySpan<byte> data, CallSummary summary)
    {
        try
        {
            var r = new Utf8JsonReader(data);
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) throw new JsonException();
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (!r.ValueTextEquals("delta"u8))
                {
                    EventJson.SkipValue(ref r);
                    continue;
                }
                r.Read();
                if (r.TokenType != JsonTokenType.StartObject)
                {
                    r.Skip();
                    continue;
                }
                while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                {
                    var text = r.ValueTextEquals("text"u8);
                    if (text || r.ValueTextEquals("partial_json"u8) || r.ValueTextEquals("thinking"u8))
                    {
                        r.Read();
                        if (r.TokenType == JsonTokenType.String) EventJson.AppendString(ref r, summary, text);
                        else r.Skip();
                    }
                    else EventJson.SkipValue(ref r);
                }
            }
        }
        catch (JsonException)
        {
            summary.ErrorType ??= "malformed_stream";
        }
    }

    private static bool IsToolUseStart(ReadOnlySpan<byte> data)
    {
        try
        {
            var r = new Utf8JsonReader(data);
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return false;
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (!r.ValueTextEquals("content_block"u8))
                {
                    EventJson.SkipValue(ref r);
                    continue;
                }
                r.Read();
                if (r.TokenType != JsonTokenType.StartObject) return false;
                while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                {
                    if (r.ValueTextEquals("type"u8))
                    {
                        r.Read();
                        return r.TokenType == JsonTokenType.String && (r.ValueTextEquals("tool_use"u8) || r.ValueTextEquals("server_tool_use"u8));
                    }
                    EventJson.SkipValue(ref r);
                }
                return false;
            }
        }
        catch (JsonException)
        {
        }
        return false;
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
            case "error":
                var e = root.TryGetProperty("error", out var ee) ? ee : default;
                summary.ErrorType = (e.ValueKind == JsonValueKind.Object ? UsageReader.Str(e, "type") : null) ?? "api_error";
                summary.ErrorMessage = e.ValueKind == JsonValueKind.Object ? UsageReader.Str(e, "message") : null;
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
    protected override Dialect CallerDialect => Dialect.OpenAI;

    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        var chunk = OpenAIChunks.Observe(data, Summary, wantContent: false);
        if (chunk.Delta) MarkFirstToken();
        if (chunk.Done || chunk.Error) Ended = true;
        if (chunk.UsageOnly && dropUsageChunk) return;
        output.Write(raw);
    }

    public override void OnEnd(IBufferWriter<byte> output)
    {
        // a server that finishes its choice but never writes [DONE] still gave a whole answer
        if (!Ended && Summary.FinishReason is not null) Ended = true;
    }
}

/// <summary>What one OpenAI chunk held, as the metering reader saw it.</summary>
internal struct OpenAIChunk
{
    /// <summary>The <c>[DONE]</c> sentinel.</summary>
    public bool Done;
    /// <summary>An <c>{"error": ...}</c> frame.</summary>
    public bool Error;
    /// <summary>A usage object and no choices: the usage chunk <c>stream_options.include_usage</c> asks for.</summary>
    public bool UsageOnly;
    /// <summary>Content or tool-call arguments arrived.</summary>
    public bool Delta;
    /// <summary>The chunk carries tool calls (the translator reads them from a DOM).</summary>
    public bool ToolCalls;
    /// <summary>Choice 0's content, when asked for.</summary>
    public string? Content;
    /// <summary>Choice 0's finish reason, when this chunk has one.</summary>
    public string? FinishReason;
}

/// <summary>
/// Reads OpenAI chunks with a <see cref="Utf8JsonReader"/>: any spacing, newlines, key order or escapes; unknown fields
/// are skipped. Only the rare usage and error objects become a DOM.
/// </summary>
internal static class OpenAIChunks
{
    public static OpenAIChunk Observe(ReadOnlySpan<byte> data, CallSummary summary, bool wantContent)
    {
        var chunk = default(OpenAIChunk);
        if (data.IsEmpty) return chunk;
        if (data.SequenceEqual("[DONE]"u8))
        {
            chunk.Done = true;
            return chunk;
        }
        summary.OutputChars += data.Length;
        bool choices = false, anyChoice = false, usage = false;
        try
        {
            var r = new Utf8JsonReader(data);
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) throw new JsonException("not an object");
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueTextEquals("choices"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.StartArray)
                    {
                        r.Skip();
                        continue;
                    }
                    choices = true;
                    while (r.Read() && r.TokenType == JsonTokenType.StartObject)
                    {
                        anyChoice = true;
                        ReadChoice(ref r, summary, ref chunk, wantContent);
                    }
                }
                else if (r.ValueTextEquals("usage"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.StartObject)
                    {
                        r.Skip();
                        continue;
                    }
                    using var doc = JsonDocument.ParseValue(ref r);
                    summary.Usage = UsageReader.ReadOpenAI(doc.RootElement);
                    summary.UsageSeen = summary.UsageFinal = usage = true;
                }
                else if (r.ValueTextEquals("model"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.String) summary.Model ??= r.GetString();
                    else r.Skip();
                }
                else if (r.ValueTextEquals("id"u8))
                {
                    r.Read();
                    if (r.TokenType == JsonTokenType.String) summary.ResponseId ??= r.GetString();
                    else r.Skip();
                }
                else if (r.ValueTextEquals("error"u8))
                {
                    r.Read();
                    if (r.TokenType != JsonTokenType.StartObject)
                    {
                        r.Skip();
                        continue;
                    }
                    using var doc = JsonDocument.ParseValue(ref r);
                    var e = doc.RootElement;
                    chunk.Error = true;
                    summary.ErrorType = UsageReader.Str(e, "code") ?? UsageReader.Str(e, "type") ?? "server_error";
                    summary.ErrorMessage = UsageReader.Str(e, "message");
                }
                else
                {
                    EventJson.SkipValue(ref r);
                }
            }
        }
        catch (JsonException)
        {
            summary.ErrorType ??= "malformed_stream";
            return chunk;
        }
        chunk.UsageOnly = usage && !anyChoice;
        _ = choices;
        return chunk;
    }

    private static void ReadChoice(ref Utf8JsonReader r, CallSummary summary, ref OpenAIChunk chunk, bool wantContent)
    {
        var first = true; // "index" may come after "delta": choice 0 is assumed until another index is read
        string? content = null;
        string? finish = null;
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            if (r.ValueTextEquals("index"u8))
            {
                r.Read();
                if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var i)) first = i == 0;
                else r.Skip();
            }
            else if (r.ValueTextEquals("delta"u8))
            {
                r.Read();
                if (r.TokenType != JsonTokenType.StartObject)
                {
                    r.Skip();
                    continue;
                }
                while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                {
                    if (r.ValueTextEquals("content"u8) || r.ValueTextEquals("refusal"u8))
                    {
                        r.Read();
                        if (r.TokenType != JsonTokenType.String)
                        {
                            r.Skip();
                            continue;
                        }
                        if (r.ValueSpan.IsEmpty && !r.HasValueSequence) continue;
                        chunk.Delta = true;
                        summary.Deltas++;
                        if (wantContent)
                        {
                            content = r.GetString();
                            summary.AppendText(content);
                        }
                        else EventJson.AppendString(ref r, summary, text: true);
                    }
                    else if (r.ValueTextEquals("tool_calls"u8))
                    {
                        r.Read();
                        if (r.TokenType != JsonTokenType.StartArray)
                        {
                            r.Skip();
                            continue;
                        }
                        chunk.ToolCalls = true;
                        while (r.Read() && r.TokenType == JsonTokenType.StartObject) ReadToolCall(ref r, summary, ref chunk);
                    }
                    else EventJson.SkipValue(ref r);
                }
            }
            else if (r.ValueTextEquals("finish_reason"u8))
            {
                r.Read();
                if (r.TokenType == JsonTokenType.String) finish = r.GetString();
                else r.Skip();
            }
            else EventJson.SkipValue(ref r);
        }
        if (finish is not null)
        {
            if (first || summary.FinishReason is null) summary.FinishReason = finish;
            if (first) chunk.FinishReason = finish;
        }
        if (first && content is not null) chunk.Content = content;
    }

    private static void ReadToolCall(ref Utf8JsonReader r, CallSummary summary, ref OpenAIChunk chunk)
    {
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            if (r.ValueTextEquals("id"u8))
            {
                r.Read();
                if (r.TokenType == JsonTokenType.String) summary.ToolCalls++; // the first chunk of each call carries its id
                else r.Skip();
            }
            else if (r.ValueTextEquals("function"u8))
            {
                r.Read();
                if (r.TokenType != JsonTokenType.StartObject)
                {
                    r.Skip();
                    continue;
                }
                while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
                {
                    var args = r.ValueTextEquals("arguments"u8);
                    if (args || r.ValueTextEquals("name"u8))
                    {
                        r.Read();
                        if (r.TokenType != JsonTokenType.String)
                        {
                            r.Skip();
                            continue;
                        }
                        if (args && (r.ValueSpan.Length > 0 || r.HasValueSequence))
                        {
                            chunk.Delta = true;
                            summary.Deltas++;
                        }
                        EventJson.AppendString(ref r, summary, text: false);
                    }
                    else EventJson.SkipValue(ref r);
                }
            }
            else EventJson.SkipValue(ref r);
        }
    }
}
