using System.Buffers;
using System.Text.Json;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>
/// A .NET chat call written as the OpenAI Chat Completions body it stands for, so the stages read it exactly as the
/// gateway reads an OpenAI caller's body: the same one-pass scan (estimate, input bound, output limit, choices), the
/// same cache keys, the same prompt text for routing. The writer measures each string as it writes it, so the scan's
/// counts come with the body instead of from a second pass over it (a call with tools is scanned: its schemas are
/// written whole).
/// </summary>
internal static class ChatRequestJson
{
    [ThreadStatic] private static Utf8JsonWriter? t_writer;
    /// <summary>What an idle writer points at (never written to): not the last call's buffer.</summary>
    private static readonly ArrayBufferWriter<byte> Detached = new(1);

    /// <summary>
    /// Writes the call's body into <paramref name="buffer"/> (emptied first) and returns what
    /// <see cref="RequestScan.Run"/> reads from it: the same estimate, input bound, output limit and determinism.
    /// </summary>
    public static RequestScan Write(IList<ChatMessage> messages, ChatOptions? options, string model, bool stream, ArrayBufferWriter<byte> buffer)
    {
        var c = new RequestScan.PromptCounts();
        // one writer per thread, reused
        buffer.ResetWrittenCount();
        var w = t_writer;
        if (w is null) t_writer = w = new Utf8JsonWriter(buffer);
        else w.Reset(buffer);
        {
            w.WriteStartObject();
            w.WriteString("model", model);
            if (options?.Instructions is { } instructions)
            {
                w.WriteStartArray("messages");
                w.WriteStartObject();
                c.Messages++;
                Text(w, "role"u8, "system", ref c);
                Text(w, "content"u8, instructions, ref c);
                w.WriteEndObject();
            }
            else w.WriteStartArray("messages");
            for (var i = 0; i < messages.Count; i++) WriteMessage(w, messages[i], ref c);
            w.WriteEndArray();
            if (stream) w.WriteBoolean("stream", true);
            if (options is not null)
            {
                if (options.Temperature is { } t) w.WriteNumber("temperature", t);
                if (options.TopP is { } p) w.WriteNumber("top_p", p);
                if (options.TopK is { } k) w.WriteNumber("top_k", k);
                if (options.Seed is { } seed) w.WriteNumber("seed", seed);
                if (options.MaxOutputTokens is { } max) w.WriteNumber("max_completion_tokens", max);
                if (options.StopSequences is { Count: > 0 } stop)
                {
                    w.WriteStartArray("stop");
                    foreach (var s in stop) w.WriteStringValue(s);
                    w.WriteEndArray();
                }
                if (options.Tools is { Count: > 0 } tools)
                {
                    w.WriteStartArray("tools");
                    foreach (var tool in tools)
                    {
                        w.WriteStartObject();
                        w.WriteString("type", "function");
                        w.WriteStartObject("function");
                        w.WriteString("name", tool.Name);
                        if (!string.IsNullOrEmpty(tool.Description)) w.WriteString("description", tool.Description);
                        if (tool is AIFunctionDeclaration f)
                        {
                            w.WritePropertyName("parameters");
                            f.JsonSchema.WriteTo(w);
                        }
                        w.WriteEndObject();
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                }
                if (options.ResponseFormat is ChatResponseFormatJson json)
                {
                    w.WriteStartObject("response_format");
                    w.WriteString("type", json.Schema is null ? "json_object" : "json_schema");
                    if (json.Schema is { } schema)
                    {
                        w.WriteStartObject("json_schema");
                        w.WriteString("name", json.SchemaName ?? "response");
                        w.WritePropertyName("schema");
                        schema.WriteTo(w);
                        w.WriteEndObject();
                    }
                    w.WriteEndObject();
                }
            }
            w.WriteEndObject();
            w.Flush();
        }
        w.Reset(Detached); // the writer keeps no reference to the call's buffer
        var maxOutput = options?.MaxOutputTokens;
        if (options?.Tools is { Count: > 0 } || maxOutput < 0 || model.Length is 0 or > 256)
            return RequestScan.Run(buffer.WrittenSpan, Dialect.OpenAI); // tool schemas counted by the scan; a bad value is its to report
        return new RequestScan
        {
            Model = model,
            Stream = stream,
            MaxTokens = maxOutput,
            Choices = 1,
            Deterministic = options is not null && (options.Temperature == 0 || options.TopK == 1),
            EstimatedInputTokens = c.Estimate,
            InputTokenBound = c.Bound,
        };
    }

    /// <summary>Writes a string property of a message, counting its value's bytes as they stand in the body (escapes included), as the scan does.</summary>
    private static void Text(Utf8JsonWriter w, ReadOnlySpan<byte> name, string? value, ref RequestScan.PromptCounts c)
    {
        if (value is null)
        {
            w.WriteNull(name);
            return;
        }
        w.WritePropertyName(name);
        var at = w.BytesCommitted + w.BytesPending;
        w.WriteStringValue(value);
        c.TextBytes += w.BytesCommitted + w.BytesPending - at - 2; // less the quotes
    }

    private static void WriteMessage(Utf8JsonWriter w, ChatMessage m, ref RequestScan.PromptCounts c)
    {
        var contents = m.Contents;
        int results = 0, parts = 0, calls = 0;
        TextContent? onlyText = null;
        for (var i = 0; i < contents.Count; i++)
        {
            switch (contents[i])
            {
                case FunctionResultContent: results++; break;
                case FunctionCallContent: calls++; break;
                case TextContent t: parts++; onlyText = t; break;
                case DataContent or UriContent: parts++; onlyText = null; break;
            }
        }
        if (results > 0)
        {
            // each tool result is its own OpenAI message
            for (var i = 0; i < contents.Count; i++)
            {
                if (contents[i] is not FunctionResultContent r) continue;
                w.WriteStartObject();
                c.Messages++;
                Text(w, "role"u8, "tool", ref c);
                Text(w, "tool_call_id"u8, r.CallId, ref c);
                Text(w, "content"u8, r.Result switch { null => "", string s => s, JsonElement e => e.GetRawText(), var o => JsonSerializer.Serialize(o, AIJsonUtilities.DefaultOptions.GetTypeInfo(o.GetType())) }, ref c);
                w.WriteEndObject();
            }
            return;
        }
        w.WriteStartObject();
        c.Messages++;
        Text(w, "role"u8, m.Role == ChatRole.System ? "system" : m.Role == ChatRole.Assistant ? "assistant" : m.Role == ChatRole.Tool ? "tool" : "user", ref c);
        if (parts == 1 && onlyText is not null) Text(w, "content"u8, onlyText.Text, ref c);
        else
        {
            w.WriteStartArray("content");
            for (var i = 0; i < contents.Count; i++)
            {
                switch (contents[i])
                {
                    case TextContent t:
                        w.WriteStartObject();
                        Text(w, "type"u8, "text", ref c);
                        Text(w, "text"u8, t.Text, ref c);
                        w.WriteEndObject();
                        break;
                    case DataContent d:
                        WriteImage(w, d.Uri, ref c);
                        break;
                    case UriContent u:
                        WriteImage(w, u.Uri.ToString(), ref c);
                        break;
                }
            }
            w.WriteEndArray();
        }
        if (calls > 0)
        {
            w.WriteStartArray("tool_calls");
            for (var i = 0; i < contents.Count; i++)
            {
                if (contents[i] is not FunctionCallContent call) continue;
                w.WriteStartObject();
                Text(w, "id"u8, call.CallId, ref c);
                Text(w, "type"u8, "function", ref c);
                w.WriteStartObject("function");
                Text(w, "name"u8, call.Name, ref c);
                Text(w, "arguments"u8, call.Arguments is null ? "{}" : JsonSerializer.Serialize(call.Arguments, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>))), ref c);
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    /// <summary>An image part; its URL counts as the scan counts it: inline data by its bytes, a fetched URL by the image bound.</summary>
    private static void WriteImage(Utf8JsonWriter w, string url, ref RequestScan.PromptCounts c)
    {
        w.WriteStartObject();
        Text(w, "type"u8, "image_url", ref c);
        w.WriteStartObject("image_url");
        w.WritePropertyName("url"u8);
        var at = w.BytesCommitted + w.BytesPending;
        w.WriteStringValue(url);
        var bytes = w.BytesCommitted + w.BytesPending - at - 2;
        c.Images++;
        if (bytes > 5 && url.StartsWith("data:", StringComparison.Ordinal)) c.DataBytes += bytes;
        else c.ImageUrls++;
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
