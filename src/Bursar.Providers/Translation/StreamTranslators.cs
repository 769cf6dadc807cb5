using Bursar.Core.Metering;
using System.Buffers;
using System.Text.Json;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;

namespace Bursar.Providers.Translation;

/// <summary>Anthropic Messages events in, OpenAI chat.completion.chunk frames out; metered on the way.</summary>
public sealed class AnthropicToOpenAIStream(CallSummary summary, TimeProvider time, bool includeUsage, long created) : SseStreamHandler(summary, time)
{
    private readonly ArrayBufferWriter<byte> _json = new(512);
    private string _id = "chatcmpl-bursar";
    private string _model = "";
    private int _toolIndex = -1;

    protected override Dialect CallerDialect => Dialect.OpenAI;

    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        // metering reads every event the same way as the pass-through handler (deltas, text, tool calls, usage)
        var kind = AnthropicEvents.Observe(eventName, data, Summary);
        if (data.IsEmpty || kind is AnthropicEventKind.Ping or AnthropicEventKind.Other) return;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(data.ToArray());
        }
        catch (JsonException)
        {
            Summary.ErrorType ??= "malformed_stream";
            return;
        }
        using var _ = doc;
        var root = doc.RootElement;
        switch (kind)
        {
            case AnthropicEventKind.MessageStart:
                _id = "chatcmpl-" + (Summary.ResponseId ?? "bursar");
                _model = Summary.Model ?? "";
                Chunk(output, w => { w.WriteString("role", "assistant"); w.WriteString("content", ""); }, null);
                break;
            case AnthropicEventKind.ContentBlockStart when root.GetProperty("content_block") is var cb && cb.GetProperty("type").GetString() == "tool_use":
                _toolIndex++;
                MarkFirstToken();
                Chunk(output, w =>
                {
                    w.WriteStartArray("tool_calls");
                    w.WriteStartObject();
                    w.WriteNumber("index", _toolIndex);
                    w.WriteString("id", cb.GetProperty("id").GetString());
                    w.WriteString("type", "function");
                    w.WriteStartObject("function");
                    w.WriteString("name", cb.GetProperty("name").GetString());
                    w.WriteString("arguments", "");
                    w.WriteEndObject();
                    w.WriteEndObject();
                    w.WriteEndArray();
                }, null);
                break;
            case AnthropicEventKind.ContentBlockDelta:
                var delta = root.GetProperty("delta");
                MarkFirstToken();
                switch (delta.GetProperty("type").GetString())
                {
                    case "text_delta":
                        Chunk(output, w => w.WriteString("content", delta.GetProperty("text").GetString()), null);
                        break;
                    case "input_json_delta":
                        Chunk(output, w =>
                        {
                            w.WriteStartArray("tool_calls");
                            w.WriteStartObject();
                            w.WriteNumber("index", _toolIndex);
                            w.WriteStartObject("function");
                            w.WriteString("arguments", delta.GetProperty("partial_json").GetString());
                            w.WriteEndObject();
                            w.WriteEndObject();
                            w.WriteEndArray();
                        }, null);
                        break;
                }
                break;
            case AnthropicEventKind.MessageDelta:
                Chunk(output, _ => { }, ResponseTranslator.OpenAIFinishReason(Summary.FinishReason));
                break;
            case AnthropicEventKind.MessageStop:
                Finish(output);
                break;
            case AnthropicEventKind.Error:
                var e = new ProviderError(500, Summary.ErrorMessage ?? "upstream error", ErrorSource.Upstream) { TypeOverride = Summary.ErrorType }.ForDialect(Dialect.OpenAI);
                SseFrames.WriteEvent(output, default, e.ToJson(Dialect.OpenAI));
                Ended = true;
                break;
        }
    }

    public override void OnEnd(IBufferWriter<byte> output)
    {
        if (!Ended && Summary.FinishReason is not null) Finish(output);
    }

    private void Finish(IBufferWriter<byte> output)
    {
        if (Ended) return;
        Ended = true;
        if (includeUsage)
        {
            var u = Summary.Usage;
            Write(output, w =>
            {
                Header(w);
                w.WriteStartArray("choices");
                w.WriteEndArray();
                w.WritePropertyName("usage");
                ResponseTranslator.OpenAIUsage(u.InputTokens, u.CacheReadTokens, u.CacheWriteTokens, u.OutputTokens).WriteTo(w);
            });
        }
        SseFrames.WriteEvent(output, default, "[DONE]"u8);
    }

    private void Header(Utf8JsonWriter w)
    {
        w.WriteString("id", _id);
        w.WriteString("object", "chat.completion.chunk");
        w.WriteNumber("created", created);
        w.WriteString("model", _model);
    }

    private void Chunk(IBufferWriter<byte> output, Action<Utf8JsonWriter> delta, string? finish) => Write(output, w =>
    {
        Header(w);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("delta");
        delta(w);
        w.WriteEndObject();
        w.WriteNull("logprobs");
        if (finish is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
        if (includeUsage) w.WriteNull("usage");
    });

    private void Write(IBufferWriter<byte> output, Action<Utf8JsonWriter> body)
    {
        _json.ResetWrittenCount();
        using (var w = new Utf8JsonWriter(_json))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        SseFrames.WriteEvent(output, default, _json.WrittenSpan);
    }
}

/// <summary>
/// OpenAI chat.completion.chunk frames in, Anthropic Messages events out; metered on the way.
/// OpenAI reports usage only at the end of a stream, while Anthropic's <c>message_start</c> carries the input count:
/// there Bursar writes its pre-call estimate (<paramref name="estimatedInputTokens"/>, from the request's size);
/// the provider's exact counts follow in the final <c>message_delta</c> usage, which the ledger bills.
/// </summary>
public sealed class OpenAIToAnthropicStream(CallSummary summary, TimeProvider time, long estimatedInputTokens = 0) : SseStreamHandler(summary, time)
{
    private readonly ArrayBufferWriter<byte> _json = new(512);
    private bool _started;
    private int _index = -1;
    private string? _open; // "text" or "tool_use"

    protected override Dialect CallerDialect => Dialect.Anthropic;

    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        if (data.IsEmpty) return;
        var chunk = OpenAIChunks.Observe(data, Summary, wantContent: true);
        if (chunk.Done)
        {
            Finish(output);
            return;
        }
        if (chunk.Error)
        {
            var e = new ProviderError(500, Summary.ErrorMessage ?? "upstream error", ErrorSource.Upstream) { TypeOverride = Summary.ErrorType }.ForDialect(Dialect.Anthropic);
            Event(output, "error", w => { w.WriteString("type", "error"); w.WriteStartObject("error"); w.WriteString("type", e.AnthropicType); w.WriteString("message", e.Message); w.WriteEndObject(); });
            Ended = true;
            return;
        }
        if (Summary.ErrorType == "malformed_stream") return;
        EnsureStarted(output);
        if (chunk.Content is { Length: > 0 } text)
        {
            MarkFirstToken();
            if (_open != "text") Open(output, "text", w => { w.WriteString("type", "text"); w.WriteString("text", ""); });
            Event(output, "content_block_delta", w =>
            {
                w.WriteString("type", "content_block_delta");
                w.WriteNumber("index", _index);
                w.WriteStartObject("delta");
                w.WriteString("type", "text_delta");
                w.WriteString("text", text);
                w.WriteEndObject();
            });
        }
        if (chunk.ToolCalls) TranslateToolCalls(data, output);
        if (chunk.FinishReason is not null) Close(output);
    }

    /// <summary>Tool-call pieces are rare next to text: they are read from a DOM.</summary>
    private void TranslateToolCalls(ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        using var doc = JsonDocument.Parse(data.ToArray());
        if (!doc.RootElement.TryGetProperty("choices", out var choices) || choices.ValueKind != JsonValueKind.Array || choices.GetArrayLength() == 0) return;
        var choice = choices[0];
        if (choice.TryGetProperty("delta", out var delta) && delta.ValueKind == JsonValueKind.Object)
        {
            if (delta.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
            {
                foreach (var call in calls.EnumerateArray())
                {
                    MarkFirstToken();
                    if (call.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String)
                    {
                        var name = call.GetProperty("function").GetProperty("name").GetString();
                        var toolId = id.GetString();
                        Open(output, "tool_use", w => { w.WriteString("type", "tool_use"); w.WriteString("id", toolId); w.WriteString("name", name); w.WriteStartObject("input"); w.WriteEndObject(); });
                    }
                    if (call.TryGetProperty("function", out var fn) && fn.TryGetProperty("arguments", out var args) && args.GetString() is { Length: > 0 } piece)
                    {
                        Event(output, "content_block_delta", w =>
                        {
                            w.WriteString("type", "content_block_delta");
                            w.WriteNumber("index", _index);
                            w.WriteStartObject("delta");
                            w.WriteString("type", "input_json_delta");
                            w.WriteString("partial_json", piece);
                            w.WriteEndObject();
                        });
                    }
                }
            }
        }
    }

    public override void OnEnd(IBufferWriter<byte> output)
    {
        // a server that finishes its choice but never writes [DONE] still gave a whole answer
        if (!Ended && Summary.ErrorType is null && Summary.FinishReason is not null) Finish(output);
    }

    private void EnsureStarted(IBufferWriter<byte> output)
    {
        if (_started) return;
        _started = true;
        Event(output, "message_start", w =>
        {
            w.WriteString("type", "message_start");
            w.WriteStartObject("message");
            w.WriteString("id", "msg_" + (Summary.ResponseId ?? "bursar"));
            w.WriteString("type", "message");
            w.WriteString("role", "assistant");
            w.WriteString("model", Summary.Model ?? "");
            w.WriteStartArray("content");
            w.WriteEndArray();
            w.WriteNull("stop_reason");
            w.WriteNull("stop_sequence");
            w.WritePropertyName("usage");
            // an estimate: OpenAI reports usage only at the end (the exact counts follow in message_delta)
            ResponseTranslator.AnthropicUsage(estimatedInputTokens, 0, 0).WriteTo(w);
            w.WriteEndObject();
        });
    }

    private void Open(IBufferWriter<byte> output, string kind, Action<Utf8JsonWriter> block)
    {
        Close(output);
        _index++;
        _open = kind;
        Event(output, "content_block_start", w =>
        {
            w.WriteString("type", "content_block_start");
            w.WriteNumber("index", _index);
            w.WriteStartObject("content_block");
            block(w);
            w.WriteEndObject();
        });
    }

    private void Close(IBufferWriter<byte> output)
    {
        if (_open is null) return;
        _open = null;
        Event(output, "content_block_stop", w => { w.WriteString("type", "content_block_stop"); w.WriteNumber("index", _index); });
    }

    private void Finish(IBufferWriter<byte> output)
    {
        if (Ended) return;
        Ended = true;
        EnsureStarted(output);
        Close(output);
        var u = Summary.Usage;
        Event(output, "message_delta", w =>
        {
            w.WriteString("type", "message_delta");
            w.WriteStartObject("delta");
            w.WriteString("stop_reason", ResponseTranslator.AnthropicStopReason(Summary.FinishReason));
            w.WriteNull("stop_sequence");
            w.WriteEndObject();
            w.WritePropertyName("usage");
            ResponseTranslator.AnthropicUsage(u.InputTokens + u.CacheWriteTokens, u.CacheReadTokens, u.OutputTokens).WriteTo(w);
        });
        Event(output, "message_stop", w => w.WriteString("type", "message_stop"));
    }

    private void Event(IBufferWriter<byte> output, string name, Action<Utf8JsonWriter> body)
    {
        _json.ResetWrittenCount();
        using (var w = new Utf8JsonWriter(_json))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        SseFrames.WriteEvent(output, System.Text.Encoding.ASCII.GetBytes(name), _json.WrittenSpan);
    }
}
