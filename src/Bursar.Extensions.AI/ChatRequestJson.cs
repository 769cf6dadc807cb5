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
    [ThreadStatic] private static Utf8JsonWriter? t_writer;
    /// <summary>What an idle writer points at (never written to): not the last call's buffer.</summary>
    private static readonly ArrayBufferWriter<byte> Detached = new(1);

    /// <summary>Writes the call's body into <paramref name="buffer"/> (emptied first).</summary>
    public static void Write(IList<ChatMessage> messages, ChatOptions? options, string model, bool stream, ArrayBufferWriter<byte> buffer)
    {
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
                w.WriteString("role", "system");
                w.WriteString("content", instructions);
                w.WriteEndObject();
            }
            else w.WriteStartArray("messages");
            for (var i = 0; i < messages.Count; i++) WriteMessage(w, messages[i]);
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
    }

    private static void WriteMessage(Utf8JsonWriter w, ChatMessage m)
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
            for (var i = 0; i < contents.Count; i++)
            {
                switch (contents[i])
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
            for (var i = 0; i < contents.Count; i++)
            {
                if (contents[i] is not FunctionCallContent call) continue;
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
