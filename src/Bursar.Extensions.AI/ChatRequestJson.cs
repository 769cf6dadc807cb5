using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>
/// A .NET chat call written as the OpenAI Chat Completions body it stands for, so the stages read it exactly as the
/// gateway reads an OpenAI caller's body: the same one-pass scan (estimate, input bound, output limit, choices), the
/// same cache keys, the same prompt text for routing.
/// </summary>
internal static class ChatRequestJson
{
    [ThreadStatic] private static ArrayBufferWriter<byte>? t_buffer;
    [ThreadStatic] private static Utf8JsonWriter? t_writer;

    public static byte[] Write(IEnumerable<ChatMessage> messages, ChatOptions? options, string model, bool stream)
    {
        // one buffer and writer per thread, reused: the call keeps only its own copy of the bytes
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(1024);
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
                w.WriteString("role", "system");
                w.WriteString("content", instructions);
                w.WriteEndObject();
            }
            else w.WriteStartArray("messages");
            foreach (var m in messages) WriteMessage(w, m);
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
        var bytes = buffer.WrittenSpan.ToArray();
        if (buffer.Capacity > 64 * 1024) t_buffer = null; // a huge call does not keep its buffer
        return bytes;
    }

    private static void WriteMessage(Utf8JsonWriter w, ChatMessage m)
    {
        var contents = m.Contents;
        int results = 0, parts = 0, calls = 0;
        TextContent? onlyText = null;
        foreach (var c in contents)
        {
            switch (c)
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
            foreach (var c in contents)
            {
                if (c is not FunctionResultContent r) continue;
                w.WriteStartObject();
                w.WriteString("role", "tool");
                w.WriteString("tool_call_id", r.CallId);
                w.WriteString("content", r.Result switch { null => "", string s => s, JsonElement e => e.GetRawText(), var o => JsonSerializer.Serialize(o, AIJsonUtilities.DefaultOptions.GetTypeInfo(o.GetType())) });
                w.WriteEndObject();
            }
            return;
        }
        w.WriteStartObject();
        w.WriteString("role", m.Role == ChatRole.System ? "system" : m.Role == ChatRole.Assistant ? "assistant" : m.Role == ChatRole.Tool ? "tool" : "user");
        if (parts == 1 && onlyText is not null) w.WriteString("content", onlyText.Text);
        else
        {
            w.WriteStartArray("content");
            foreach (var c in contents)
            {
                switch (c)
                {
                    case TextContent t:
                        w.WriteStartObject();
                        w.WriteString("type", "text");
                        w.WriteString("text", t.Text);
                        w.WriteEndObject();
                        break;
                    case DataContent d:
                        WriteImage(w, d.Uri);
                        break;
                    case UriContent u:
                        WriteImage(w, u.Uri.ToString());
                        break;
                }
            }
            w.WriteEndArray();
        }
        if (calls > 0)
        {
            w.WriteStartArray("tool_calls");
            foreach (var c in contents)
            {
                if (c is not FunctionCallContent call) continue;
                w.WriteStartObject();
                w.WriteString("id", call.CallId);
                w.WriteString("type", "function");
                w.WriteStartObject("function");
                w.WriteString("name", call.Name);
                w.WriteString("arguments", call.Arguments is null ? "{}" : JsonSerializer.Serialize(call.Arguments, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>))));
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    private static void WriteImage(Utf8JsonWriter w, string url)
    {
        w.WriteStartObject();
        w.WriteString("type", "image_url");
        w.WriteStartObject("image_url");
        w.WriteString("url", url);
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
