using System.Buffers;
using System.Text.Json;
using Bursar.Core.Metering;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Sse;

/// <summary>
/// An OpenAI Responses stream passed through unchanged (PROVIDER_API.md section 8): text and argument deltas counted
/// as they pass (read with a reader, no DOM), tool calls from <c>response.output_item.added</c>, and the exact usage
/// from the terminal event (<c>response.completed</c>, <c>.incomplete</c> or <c>.failed</c>, which carry the whole
/// response). An <c>error</c> event is read flat or nested under <c>error</c>, as production sends it. A stream cut
/// before its terminal event gets a Responses <c>error</c> event, and the call the estimate chat streams get.
/// </summary>
public sealed class ResponsesMeteringHandler(CallSummary summary, TimeProvider time) : SseStreamHandler(summary, time)
{
    private long _lastSequence = -1;

    protected override Dialect CallerDialect => Dialect.OpenAI;

    /// <summary>The Responses stream's last events: each carries the full response with its usage.</summary>
    public static bool IsTerminal(ReadOnlySpan<byte> type) =>
        type.SequenceEqual("response.completed"u8) || type.SequenceEqual("response.incomplete"u8) || type.SequenceEqual("response.failed"u8);

    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        output.Write(raw);
        if (data.IsEmpty || data.SequenceEqual("[DONE]"u8))
        {
            if (!data.IsEmpty) Ended = true;
            return;
        }
        var type = eventName;
        byte[]? owned = null;
        if (type.IsEmpty)
        {
            owned = TypeOf(data);
            type = owned;
        }
        if (type.SequenceEqual("response.output_text.delta"u8) || type.SequenceEqual("response.refusal.delta"u8))
        {
            MarkFirstToken();
            Summary.Deltas++;
            Summary.OutputChars += data.Length;
            ReadDelta(data, text: true);
        }
        else if (type.SequenceEqual("response.function_call_arguments.delta"u8))
        {
            MarkFirstToken();
            Summary.Deltas++;
            Summary.OutputChars += data.Length;
            ReadDelta(data, text: false);
        }
        else if (type.SequenceEqual("response.output_item.added"u8))
        {
            if (!EventJson.TryRead(data, Summary, static (root, s) =>
                {
                    if (root.TryGetProperty("item", out var item) && UsageReader.Str(item, "type") == "function_call") s.ToolCalls++;
                })) Summary.ErrorType ??= "malformed_stream";
        }
        else if (type.SequenceEqual("response.created"u8))
        {
            if (!EventJson.TryRead(data, Summary, static (root, s) =>
                {
                    if (root.TryGetProperty("response", out var r) && r.ValueKind == JsonValueKind.Object) UsageReader.ReadResponseObject(r, s, output: false);
                })) Summary.ErrorType ??= "malformed_stream";
        }
        else if (IsTerminal(type))
        {
            var failed = type.SequenceEqual("response.failed"u8);
            if (!EventJson.TryRead(data, Summary, (root, s) =>
                {
                    if (!root.TryGetProperty("response", out var r) || r.ValueKind != JsonValueKind.Object) return;
                    var calls = s.ToolCalls;
                    s.ToolCalls = 0;
                    var text = s.Text;
                    s.Text = null; // the deltas already collected the text
                    UsageReader.ReadResponseObject(r, s, output: false);
                    s.Text = text;
                    s.ToolCalls = calls;
                    if (calls > 0 && s.FinishReason == "stop") s.FinishReason = "tool_calls";
                    if (failed && r.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.Object)
                    {
                        s.ErrorType = UsageReader.Str(e, "code") ?? "server_error";
                        s.ErrorMessage = UsageReader.Str(e, "message");
                    }
                })) Summary.ErrorType ??= "malformed_stream";
            Ended = true;
        }
        else if (type.SequenceEqual("error"u8))
        {
            EventJson.TryRead(data, Summary, static (root, s) =>
            {
                var e = root.TryGetProperty("error", out var nested) && nested.ValueKind == JsonValueKind.Object ? nested : root;
                s.ErrorType = UsageReader.Str(e, "code") ?? (UsageReader.Str(e, "type") is { } t && t != "error" ? t : "server_error");
                s.ErrorMessage = UsageReader.Str(e, "message");
            });
            Summary.ErrorType ??= "server_error";
            Ended = true;
        }
        TrackSequence(data);
    }

    /// <summary>Bursar's own error event after the upstream broke off: flat, as documented, numbered after the last event.</summary>
    protected override void WriteError(IBufferWriter<byte> output, ProviderError error)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("type", "error");
            w.WriteString("code", "server_error");
            w.WriteString("message", error.Message);
            w.WriteNull("param");
            w.WriteNumber("sequence_number", _lastSequence + 1);
            w.WriteEndObject();
        }
        SseFrames.WriteEvent(output, "error"u8, buffer.WrittenSpan);
    }

    private void TrackSequence(ReadOnlySpan<byte> data)
    {
        // sequence_number sits near the start of each payload; a cheap scan keeps the error event's number in order
        var at = data.IndexOf("\"sequence_number\":"u8);
        if (at < 0) return;
        var rest = data[(at + 18)..].TrimStart(" "u8);
        long n = 0;
        var digits = 0;
        while (digits < rest.Length && rest[digits] is >= (byte)'0' and <= (byte)'9') n = n * 10 + (rest[digits++] - '0');
        if (digits > 0 && n > _lastSequence) _lastSequence = n;
    }

    private static byte[] TypeOf(ReadOnlySpan<byte> data)
    {
        try
        {
            var r = new Utf8JsonReader(data);
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return [];
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                if (r.ValueTextEquals("type"u8))
                {
                    r.Read();
                    return r.TokenType == JsonTokenType.String ? System.Text.Encoding.UTF8.GetBytes(r.GetString()!) : [];
                }
                EventJson.SkipValue(ref r);
            }
        }
        catch (JsonException)
        {
        }
        return [];
    }

    private void ReadDelta(ReadOnlySpan<byte> data, bool text)
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
                if (r.TokenType == JsonTokenType.String) EventJson.AppendString(ref r, Summary, text);
                else r.Skip();
            }
        }
        catch (JsonException)
        {
            Summary.ErrorType ??= "malformed_stream";
        }
    }
}
