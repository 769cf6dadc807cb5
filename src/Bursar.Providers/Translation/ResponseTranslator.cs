using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Translation;

/// <summary>Translates whole (non-streamed) responses between the dialects, usage included.</summary>
public static class ResponseTranslator
{
    public static string OpenAIFinishReason(string? anthropicStop) => anthropicStop switch
    {
        "max_tokens" or "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    };

    public static string AnthropicStopReason(string? openAIFinish) => openAIFinish switch
    {
        "length" => "max_tokens",
        "tool_calls" or "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    };

    public static byte[] Translate(Dialect upstream, Dialect caller, ReadOnlySpan<byte> body, long createdUnix)
    {
        var node = JsonNode.Parse(body) as JsonObject ?? throw new JsonException("The upstream response is not a JSON object.");
        var result = (upstream, caller) switch
        {
            (Dialect.Anthropic, Dialect.OpenAI) => AnthropicToOpenAI(node, createdUnix),
            (Dialect.OpenAI, Dialect.Anthropic) => OpenAIToAnthropic(node),
            _ => node,
        };
        var buf = new ArrayBufferWriter<byte>(body.Length + 256);
        using (var w = new Utf8JsonWriter(buf)) result.WriteTo(w);
        return buf.WrittenSpan.ToArray();
    }

    private static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    private static long Long(JsonNode? n) => n is JsonValue v && v.TryGetValue<long>(out var l) ? l : 0;

    public static JsonObject AnthropicToOpenAI(JsonObject m, long created)
    {
        string? text = null;
        var calls = new JsonArray();
        if (m["content"] is JsonArray blocks)
        {
            foreach (var b in blocks)
            {
                switch (Str(b?["type"]))
                {
                    case "text": text = (text ?? "") + Str(b!["text"]); break;
                    case "tool_use":
                        calls.Add(new JsonObject
                        {
                            ["id"] = b!["id"]?.DeepClone(),
                            ["type"] = "function",
                            ["function"] = new JsonObject { ["name"] = b["name"]?.DeepClone(), ["arguments"] = (b["input"] ?? new JsonObject()).ToJsonString() },
                        });
                        break;
                }
            }
        }
        var message = new JsonObject { ["role"] = "assistant", ["content"] = text, ["refusal"] = null };
        if (calls.Count > 0) message["tool_calls"] = calls;
        message["annotations"] = new JsonArray();
        var u = m["usage"];
        long input = Long(u?["input_tokens"]), read = Long(u?["cache_read_input_tokens"]), write = Long(u?["cache_creation_input_tokens"]), output = Long(u?["output_tokens"]);
        return new JsonObject
        {
            ["id"] = "chatcmpl-" + Str(m["id"]),
            ["object"] = "chat.completion",
            ["created"] = created,
            ["model"] = m["model"]?.DeepClone(),
            ["choices"] = new JsonArray(new JsonObject
            {
                ["index"] = 0,
                ["message"] = message,
                ["logprobs"] = null,
                ["finish_reason"] = OpenAIFinishReason(Str(m["stop_reason"])),
            }),
            ["usage"] = OpenAIUsage(input, read, write, output),
        };
    }

    internal static JsonObject OpenAIUsage(long input, long read, long write, long output) => new()
    {
        ["prompt_tokens"] = input + read + write,
        ["completion_tokens"] = output,
        ["total_tokens"] = input + read + write + output,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = read, ["cache_write_tokens"] = write },
        ["completion_tokens_details"] = new JsonObject { ["reasoning_tokens"] = 0 },
    };

    public static JsonObject OpenAIToAnthropic(JsonObject c)
    {
        var content = new JsonArray();
        var choice = (c["choices"] as JsonArray)?.FirstOrDefault();
        var msg = choice?["message"];
        if (Str(msg?["content"]) is { Length: > 0 } text) content.Add(new JsonObject { ["type"] = "text", ["text"] = text });
        if (msg?["tool_calls"] is JsonArray calls)
        {
            foreach (var call in calls)
            {
                JsonNode? input;
                try { input = JsonNode.Parse(Str(call?["function"]?["arguments"]) is { Length: > 0 } a ? a : "{}"); }
                catch (JsonException) { input = new JsonObject { ["_raw_arguments"] = Str(call?["function"]?["arguments"]) }; }
                content.Add(new JsonObject { ["type"] = "tool_use", ["id"] = call?["id"]?.DeepClone(), ["name"] = call?["function"]?["name"]?.DeepClone(), ["input"] = input });
            }
        }
        var u = c["usage"];
        var prompt = Long(u?["prompt_tokens"]);
        var cached = Long(u?["prompt_tokens_details"]?["cached_tokens"]);
        return new JsonObject
        {
            ["id"] = "msg_" + Str(c["id"]),
            ["type"] = "message",
            ["role"] = "assistant",
            ["model"] = c["model"]?.DeepClone(),
            ["content"] = content,
            ["stop_reason"] = AnthropicStopReason(Str(choice?["finish_reason"])),
            ["stop_sequence"] = null,
            ["usage"] = AnthropicUsage(prompt - cached, cached, Long(u?["completion_tokens"])),
        };
    }

    internal static JsonObject AnthropicUsage(long input, long read, long output) => new()
    {
        ["input_tokens"] = input,
        ["cache_creation_input_tokens"] = 0,
        ["cache_read_input_tokens"] = read,
        ["output_tokens"] = output,
    };
}
