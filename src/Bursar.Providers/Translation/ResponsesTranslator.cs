using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Metering;
using Bursar.Core.Usage;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;

namespace Bursar.Providers.Translation;

/// <summary>
/// A Responses caller served by a Claude model: the Responses body (with the conversation Bursar kept for
/// <c>previous_response_id</c>) becomes a Messages body, and the Message (JSON or stream) becomes a Responses object and
/// its typed events. What Claude cannot run or express is refused with a 400 naming the field: built-in tools (web search,
/// file search, code interpreter, ...), file ids, <c>json_object</c>, reasoning effort, a conversation held upstream.
/// </summary>
public static class ResponsesTranslator
{
    private static RequestTranslator.TranslationException Cannot(string field, string why) =>
        new(ProviderError.BadRequest($"'{field}' cannot be sent to a Claude model: {why}", field));

    private static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    /// <summary>Fields a Messages call has no use for: Bursar keeps the state (<c>store</c>), or they only concern OpenAI's service.</summary>
    private static readonly HashSet<string> Ignored = ["store", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "service_tier", "metadata", "user", "safety_identifier", "truncation", "include", "stream_options", "background", "previous_response_id", "parallel_tool_calls", "top_logprobs"];

    /// <summary>
    /// The Messages body for <paramref name="body"/>; <paramref name="history"/> is the stored conversation a chained call
    /// continues (input and output items of every earlier response), <paramref name="input"/> this call's input items as stored.
    /// </summary>
    public static JsonObject ToMessages(JsonObject body, JsonArray? history, out JsonArray input)
    {
        var a = new JsonObject { ["model"] = body["model"]?.DeepClone() };
        foreach (var (name, value) in body)
        {
            switch (name)
            {
                case "model" or "input" or "instructions" or "max_output_tokens" or "temperature" or "top_p" or "tools" or "tool_choice" or "stream" or "text":
                    break;
                case "reasoning" when Str(value?["effort"]) is null or "none":
                    break;
                case "reasoning":
                    throw Cannot("reasoning.effort", "use a Claude model's extended thinking through the Messages API instead.");
                case "conversation":
                    throw Cannot("conversation", "its items are stored by OpenAI; send them as input, or chain with previous_response_id through Bursar.");
                default:
                    if (!Ignored.Contains(name)) throw Cannot(name, "the Anthropic Messages API has no such field.");
                    break;
            }
        }
        a["max_tokens"] = body["max_output_tokens"] is JsonValue mv && mv.TryGetValue<long>(out var m) ? m : RequestTranslator.DefaultClaudeMaxTokens;
        if (body["temperature"] is JsonValue tv && tv.TryGetValue<double>(out var t))
        {
            if (t > 1) throw Cannot("temperature", $"{t} is above Claude's maximum of 1.");
            a["temperature"] = t;
        }
        if (body["top_p"] is { } tp) a["top_p"] = tp.DeepClone();
        if (body["stream"] is JsonValue st && st.TryGetValue<bool>(out var stream) && stream) a["stream"] = true;
        switch (Str(body["text"]?["format"]?["type"]))
        {
            case null or "text": break;
            case "json_schema":
                a["output_config"] = new JsonObject { ["format"] = new JsonObject { ["type"] = "json_schema", ["schema"] = body["text"]!["format"]!["schema"]?.DeepClone() } };
                break;
            default: throw Cannot("text.format.type", "Claude has no json_object mode; send a json_schema format.");
        }
        if (body["tools"] is JsonArray tools)
        {
            var at = new JsonArray();
            for (var i = 0; i < tools.Count; i++)
            {
                var tool = tools[i] as JsonObject ?? throw Cannot($"tools[{i}]", "expected an object.");
                var type = Str(tool["type"]);
                if (type != "function") throw Cannot($"tools[{i}].type", $"'{type}' is an OpenAI built-in tool that Claude cannot run here; only function tools can be sent.");
                var t2 = new JsonObject { ["name"] = tool["name"]?.DeepClone() };
                if (tool["description"] is { } desc) t2["description"] = desc.DeepClone();
                t2["input_schema"] = tool["parameters"]?.DeepClone() ?? new JsonObject { ["type"] = "object", ["properties"] = new JsonObject() };
                at.Add(t2);
            }
            a["tools"] = at;
        }
        var disableParallel = body["parallel_tool_calls"] is JsonValue pt && pt.TryGetValue<bool>(out var ptb) && !ptb;
        JsonObject? choice = body["tool_choice"] switch
        {
            null => disableParallel ? new JsonObject { ["type"] = "auto" } : null,
            JsonValue cv => Str(cv) switch
            {
                "none" => new JsonObject { ["type"] = "none" },
                "auto" => new JsonObject { ["type"] = "auto" },
                "required" => new JsonObject { ["type"] = "any" },
                var mode => throw Cannot("tool_choice", $"unknown mode '{mode}'."),
            },
            JsonObject co when Str(co["type"]) == "function" && Str(co["name"]) is { } fname => new JsonObject { ["type"] = "tool", ["name"] = fname },
            JsonObject co => throw Cannot("tool_choice", $"'{Str(co["type"])}' names a tool Claude cannot run here; use none, auto, required or a function."),
            _ => throw Cannot("tool_choice", "expected none, auto, required or {type:function,name}."),
        };
        if (choice is not null)
        {
            if (disableParallel && Str(choice["type"]) != "none") choice["disable_parallel_tool_use"] = true;
            a["tool_choice"] = choice;
        }

        input = Items(body["input"]);
        var system = new JsonArray();
        if (Str(body["instructions"]) is { Length: > 0 } instructions) system.Add(new JsonObject { ["type"] = "text", ["text"] = instructions });
        var messages = new JsonArray();
        var offset = history?.Count ?? 0;
        var all = new List<JsonNode?>();
        if (history is not null) all.AddRange(history);
        all.AddRange(input);
        for (var i = 0; i < all.Count; i++)
        {
            var field = i < offset ? $"previous_response_id (stored item {i})" : $"input[{i - offset}]";
            var item = all[i] as JsonObject ?? throw Cannot(field, "expected an object.");
            switch (Str(item["type"]) ?? "message")
            {
                case "message":
                    var role = Str(item["role"]);
                    switch (role)
                    {
                        case "system" or "developer":
                            foreach (var text in Texts(item["content"], field)) system.Add(new JsonObject { ["type"] = "text", ["text"] = text });
                            break;
                        case "user":
                            Append(messages, "user", UserBlocks(item["content"], field));
                            break;
                        case "assistant":
                            var blocks = new JsonArray();
                            foreach (var text in Texts(item["content"], field)) if (text.Length > 0) blocks.Add(new JsonObject { ["type"] = "text", ["text"] = text });
                            if (blocks.Count > 0) Append(messages, "assistant", blocks);
                            break;
                        default:
                            throw Cannot($"{field}.role", $"role '{role}' has no Claude equivalent.");
                    }
                    break;
                case "function_call":
                    JsonNode? args;
                    try { args = JsonNode.Parse(Str(item["arguments"]) is { Length: > 0 } s ? s : "{}"); }
                    catch (JsonException) { throw Cannot($"{field}.arguments", "it is not valid JSON, and Claude needs the tool input as a JSON object."); }
                    Append(messages, "assistant", [new JsonObject { ["type"] = "tool_use", ["id"] = item["call_id"]?.DeepClone(), ["name"] = item["name"]?.DeepClone(), ["input"] = args }]);
                    break;
                case "function_call_output":
                    var output = item["output"] switch
                    {
                        JsonValue ov when Str(ov) is { } os => os,
                        JsonArray parts => string.Concat(parts.Select(p => Str(p?["text"]) ?? throw Cannot($"{field}.output", "only text output parts can be sent to Claude."))),
                        _ => throw Cannot($"{field}.output", "expected a string or text parts."),
                    };
                    Append(messages, "user", [new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = item["call_id"]?.DeepClone(), ["content"] = output }]);
                    break;
                case "reasoning":
                    break; // the model's own earlier reasoning: OpenAI's encrypted summary means nothing to Claude, and bills nothing
                default:
                    throw Cannot($"{field}.type", $"input item type '{Str(item["type"])}' cannot be sent to Claude (messages, function_call and function_call_output can).");
            }
        }
        if (system.Count > 0) a["system"] = system;
        a["messages"] = messages;
        return a;
    }

    /// <summary>This call's input as items: a string is one user message.</summary>
    private static JsonArray Items(JsonNode? input) => input switch
    {
        null => [],
        JsonValue v when Str(v) is { } s => [new JsonObject { ["type"] = "message", ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "input_text", ["text"] = s }) }],
        JsonArray items => (JsonArray)items.DeepClone(),
        _ => throw Cannot("input", "expected a string or an array of items."),
    };

    private static void Append(JsonArray messages, string role, JsonArray blocks)
    {
        if (messages.Count > 0 && Str(messages[^1]!["role"]) == role && messages[^1]!["content"] is JsonArray prev)
        {
            foreach (var b in blocks.ToArray())
            {
                blocks.Remove(b);
                prev.Add(b);
            }
            return;
        }
        messages.Add(new JsonObject { ["role"] = role, ["content"] = blocks });
    }

    private static IEnumerable<string> Texts(JsonNode? content, string field)
    {
        switch (content)
        {
            case JsonValue v when Str(v) is { } s: yield return s; break;
            case JsonArray parts:
                for (var i = 0; i < parts.Count; i++)
                {
                    var type = Str(parts[i]?["type"]);
                    if (type is "input_text" or "output_text") yield return Str(parts[i]?["text"]) ?? "";
                    else if (type == "refusal") yield return Str(parts[i]?["refusal"]) ?? "";
                    else throw Cannot($"{field}.content[{i}]", $"a '{type}' part cannot be in this message (text can).");
                }
                break;
            default: throw Cannot($"{field}.content", "expected a string or an array of content parts.");
        }
    }

    private static JsonArray UserBlocks(JsonNode? content, string field)
    {
        var blocks = new JsonArray();
        if (content is JsonValue v && Str(v) is { } s)
        {
            blocks.Add(new JsonObject { ["type"] = "text", ["text"] = s });
            return blocks;
        }
        if (content is not JsonArray parts) throw Cannot($"{field}.content", "expected a string or an array of content parts.");
        for (var i = 0; i < parts.Count; i++)
        {
            var p = parts[i];
            switch (Str(p?["type"]))
            {
                case "input_text" or "output_text":
                    blocks.Add(new JsonObject { ["type"] = "text", ["text"] = Str(p!["text"]) ?? "" });
                    break;
                case "input_image" when Str(p!["image_url"]) is { } url:
                    blocks.Add(new JsonObject { ["type"] = "image", ["source"] = ImageSource(url, $"{field}.content[{i}].image_url") });
                    break;
                case "input_image":
                    throw Cannot($"{field}.content[{i}].file_id", "an image stored as an OpenAI file cannot be read by Claude; send it as image_url.");
                case "input_file" when Str(p!["file_data"]) is { } data && data.StartsWith("data:application/pdf;base64,", StringComparison.Ordinal):
                    blocks.Add(new JsonObject { ["type"] = "document", ["source"] = new JsonObject { ["type"] = "base64", ["media_type"] = "application/pdf", ["data"] = data[28..] } });
                    break;
                case "input_file":
                    throw Cannot($"{field}.content[{i}]", "only a PDF sent inline as file_data (data:application/pdf;base64,...) can be read by Claude.");
                default:
                    throw Cannot($"{field}.content[{i}].type", $"content part type '{Str(p?["type"])}' cannot be sent to Claude (input_text, input_image and PDF input_file can).");
            }
        }
        return blocks;
    }

    private static JsonObject ImageSource(string url, string field)
    {
        if (url.StartsWith("data:", StringComparison.Ordinal))
        {
            var comma = url.IndexOf(',');
            var meta = comma > 5 ? url[5..comma] : "";
            if (comma < 0 || !meta.EndsWith(";base64", StringComparison.Ordinal)) throw Cannot(field, "data URLs must be base64 encoded.");
            var media = meta[..^7];
            if (media is not ("image/jpeg" or "image/png" or "image/gif" or "image/webp")) throw Cannot(field, $"Claude accepts jpeg, png, gif and webp images, not '{media}'.");
            return new JsonObject { ["type"] = "base64", ["media_type"] = media, ["data"] = url[(comma + 1)..] };
        }
        if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            return new JsonObject { ["type"] = "url", ["url"] = url };
        throw Cannot(field, "expected a data: or https: URL.");
    }

    // ------------------------------------------------------------------ Message -> Responses

    /// <summary>The caller's view of Claude's usage: every input class inside <c>input_tokens</c>, cache reads as <c>cached_tokens</c>.</summary>
    public static JsonObject Usage(TokenUsage u) => new()
    {
        ["input_tokens"] = u.TotalInputTokens,
        ["input_tokens_details"] = new JsonObject { ["cached_tokens"] = u.CacheReadTokens },
        ["output_tokens"] = u.OutputTokens,
        ["output_tokens_details"] = new JsonObject { ["reasoning_tokens"] = 0 },
        ["total_tokens"] = u.TotalInputTokens + u.OutputTokens,
    };

    /// <summary>A Responses object, with the request's parameters echoed as OpenAI does.</summary>
    public static JsonObject ResponseObject(JsonObject request, string id, long createdAt, string model, string status, JsonArray output, JsonObject? usage)
    {
        return new JsonObject
        {
            ["id"] = id,
            ["object"] = "response",
            ["created_at"] = createdAt,
            ["status"] = status,
            ["background"] = false,
            ["error"] = null,
            ["incomplete_details"] = status == "incomplete" ? new JsonObject { ["reason"] = "max_output_tokens" } : null,
            ["instructions"] = request["instructions"]?.DeepClone(),
            ["max_output_tokens"] = request["max_output_tokens"]?.DeepClone(),
            ["model"] = model,
            ["output"] = output.DeepClone(),
            ["parallel_tool_calls"] = request["parallel_tool_calls"]?.DeepClone() ?? true,
            ["previous_response_id"] = request["previous_response_id"]?.DeepClone(),
            ["reasoning"] = new JsonObject { ["effort"] = null, ["summary"] = null },
            ["service_tier"] = "default",
            ["store"] = request["store"]?.DeepClone() ?? true,
            ["temperature"] = request["temperature"]?.DeepClone() ?? 1.0,
            ["text"] = new JsonObject { ["format"] = request["text"]?["format"]?.DeepClone() ?? new JsonObject { ["type"] = "text" } },
            ["tool_choice"] = request["tool_choice"]?.DeepClone() ?? "auto",
            ["tools"] = request["tools"]?.DeepClone() ?? new JsonArray(),
            ["top_p"] = request["top_p"]?.DeepClone() ?? 1.0,
            ["truncation"] = request["truncation"]?.DeepClone() ?? "disabled",
            ["usage"] = usage,
            ["user"] = null,
            ["metadata"] = request["metadata"]?.DeepClone() ?? new JsonObject(),
        };
    }

    /// <summary>Claude's Message as a Responses object; <paramref name="output"/> gets its output items (kept for the chain).</summary>
    public static byte[] FromMessage(ReadOnlySpan<byte> message, JsonObject request, string id, long createdAt, TokenUsage usage, out JsonArray output)
    {
        var m = JsonNode.Parse(message) as JsonObject ?? new JsonObject();
        output = [];
        var texts = new JsonArray();
        foreach (var block in m["content"] as JsonArray ?? [])
        {
            switch (Str(block?["type"]))
            {
                case "text":
                    texts.Add(new JsonObject { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["text"] = Str(block!["text"]) ?? "" });
                    break;
                case "tool_use":
                    output.Add(new JsonObject
                    {
                        ["id"] = "fc_" + Str(block!["id"]), ["type"] = "function_call", ["status"] = "completed", ["call_id"] = block["id"]?.DeepClone(),
                        ["name"] = block["name"]?.DeepClone(), ["arguments"] = block["input"]?.ToJsonString() ?? "{}",
                    });
                    break;
            }
        }
        var stop = Str(m["stop_reason"]);
        if (texts.Count > 0)
            output.Insert(0, new JsonObject { ["id"] = "msg_" + id[5..], ["type"] = "message", ["status"] = stop == "max_tokens" ? "incomplete" : "completed", ["role"] = "assistant", ["content"] = texts });
        var status = stop == "max_tokens" ? "incomplete" : "completed";
        var response = ResponseObject(request, id, createdAt, Str(m["model"]) ?? Str(request["model"]) ?? "", status, output, Usage(usage));
        return JsonSerializer.SerializeToUtf8Bytes(response, TranslationJson.Default.JsonObject);
    }
}

/// <summary>
/// A Claude stream re-told as a Responses stream: <c>message_start</c> -> <c>response.created</c>, text blocks -> a
/// message item's <c>output_text</c> events, tool_use blocks -> <c>function_call</c> items and argument deltas,
/// <c>message_stop</c> -> <c>response.completed</c> (or <c>.incomplete</c> at <c>max_tokens</c>) with the whole response
/// and its usage. Metered from Claude's own events.
/// </summary>
public sealed class AnthropicToResponsesStream(CallSummary summary, TimeProvider time, JsonObject request, string id, long createdAt) : SseStreamHandler(summary, time)
{
    private int _sequence;
    private readonly Dictionary<int, (JsonObject Item, System.Text.StringBuilder Text)> _blocks = [];

    protected override Dialect CallerDialect => Dialect.OpenAI;

    /// <summary>The response's output items so far (all of them once the stream ended).</summary>
    public JsonArray Output { get; } = [];

    /// <summary>The final Responses object, once <c>message_stop</c> passed.</summary>
    public byte[]? Response { get; private set; }

    private string Model => Summary.Model ?? Str(request["model"]) ?? "";

    private static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    private void Event(IBufferWriter<byte> output, string type, JsonObject payload)
    {
        var data = new JsonObject { ["type"] = type, ["sequence_number"] = _sequence++ };
        foreach (var (k, v) in payload.ToArray())
        {
            payload.Remove(k);
            data[k] = v;
        }
        SseFrames.WriteEvent(output, System.Text.Encoding.UTF8.GetBytes(type), JsonSerializer.SerializeToUtf8Bytes(data, TranslationJson.Default.JsonObject));
    }

    public override void OnFrame(ReadOnlySpan<byte> raw, ReadOnlySpan<byte> eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        var kind = AnthropicEvents.Observe(eventName, data, Summary);
        if (kind is AnthropicEventKind.Ping) return;
        JsonObject? e;
        try { e = JsonNode.Parse(data) as JsonObject; }
        catch (JsonException) { Summary.ErrorType ??= "malformed_stream"; return; }
        if (e is null || (kind == AnthropicEventKind.Other && Str(e["type"]) != "content_block_stop")) return;
        switch (kind)
        {
            case AnthropicEventKind.MessageStart:
                var started = ResponsesTranslator.ResponseObject(request, id, createdAt, Model, "in_progress", [], null);
                Event(output, "response.created", new JsonObject { ["response"] = started });
                Event(output, "response.in_progress", new JsonObject { ["response"] = started.DeepClone() });
                break;
            case AnthropicEventKind.ContentBlockStart:
            {
                var index = e["index"] is JsonValue iv && iv.TryGetValue<int>(out var i) ? i : 0;
                var block = e["content_block"];
                JsonObject item;
                if (Str(block?["type"]) == "tool_use")
                {
                    item = new JsonObject
                    {
                        ["id"] = "fc_" + Str(block!["id"]), ["type"] = "function_call", ["status"] = "in_progress", ["call_id"] = block["id"]?.DeepClone(),
                        ["name"] = block["name"]?.DeepClone(), ["arguments"] = "",
                    };
                }
                else if (Str(block?["type"]) == "text")
                {
                    item = new JsonObject { ["id"] = $"msg_{id[5..]}_{index}", ["type"] = "message", ["status"] = "in_progress", ["role"] = "assistant", ["content"] = new JsonArray() };
                }
                else return; // thinking and server blocks are not part of a Responses answer
                _blocks[index] = (item, new System.Text.StringBuilder());
                Output.Add(item.DeepClone());
                var at = Output.Count - 1;
                Event(output, "response.output_item.added", new JsonObject { ["output_index"] = at, ["item"] = item.DeepClone() });
                if (Str(item["type"]) == "message")
                    Event(output, "response.content_part.added", new JsonObject { ["item_id"] = Str(item["id"]), ["output_index"] = at, ["content_index"] = 0, ["part"] = Part("") });
                break;
            }
            case AnthropicEventKind.ContentBlockDelta:
            {
                MarkFirstToken();
                var index = e["index"] is JsonValue iv && iv.TryGetValue<int>(out var i) ? i : 0;
                if (!_blocks.TryGetValue(index, out var b)) return;
                var at = IndexOf(b.Item);
                var delta = e["delta"];
                if (Str(delta?["type"]) == "text_delta" && Str(delta!["text"]) is { } text)
                {
                    b.Text.Append(text);
                    Event(output, "response.output_text.delta", new JsonObject { ["item_id"] = Str(b.Item["id"]), ["output_index"] = at, ["content_index"] = 0, ["delta"] = text, ["logprobs"] = new JsonArray() });
                }
                else if (Str(delta?["type"]) == "input_json_delta" && Str(delta!["partial_json"]) is { } json)
                {
                    b.Text.Append(json);
                    Event(output, "response.function_call_arguments.delta", new JsonObject { ["item_id"] = Str(b.Item["id"]), ["output_index"] = at, ["delta"] = json });
                }
                break;
            }
            case AnthropicEventKind.MessageStop:
                Finish(output);
                Ended = true;
                break;
            case AnthropicEventKind.Error:
                var err = e["error"];
                Event(output, "error", new JsonObject { ["code"] = Str(err?["type"]) ?? "server_error", ["message"] = Str(err?["message"]) ?? "The upstream stream failed.", ["param"] = null });
                Ended = true;
                break;
        }
        if (Str(e["type"]) == "content_block_stop" && e["index"] is JsonValue sv && sv.TryGetValue<int>(out var stopped) && _blocks.Remove(stopped, out var done)) Close(output, done.Item, done.Text.ToString());
    }

    private static JsonObject Part(string text) => new() { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray(), ["text"] = text };

    private int IndexOf(JsonObject item)
    {
        var itemId = Str(item["id"]);
        for (var i = 0; i < Output.Count; i++) if (Str(Output[i]?["id"]) == itemId) return i;
        return Output.Count - 1;
    }

    private void Close(IBufferWriter<byte> output, JsonObject item, string text)
    {
        var at = IndexOf(item);
        var itemId = Str(item["id"]);
        if (Str(item["type"]) == "function_call")
        {
            var args = text.Length == 0 ? "{}" : text;
            Event(output, "response.function_call_arguments.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = at, ["name"] = item["name"]?.DeepClone(), ["arguments"] = args });
            item["arguments"] = args;
        }
        else
        {
            Event(output, "response.output_text.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = at, ["content_index"] = 0, ["text"] = text, ["logprobs"] = new JsonArray() });
            Event(output, "response.content_part.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = at, ["content_index"] = 0, ["part"] = Part(text) });
            item["content"] = new JsonArray(Part(text));
        }
        item["status"] = "completed";
        Output[at] = item.DeepClone();
        Event(output, "response.output_item.done", new JsonObject { ["output_index"] = at, ["item"] = item.DeepClone() });
    }

    private void Finish(IBufferWriter<byte> output)
    {
        foreach (var (index, b) in _blocks.ToArray())
        {
            _blocks.Remove(index);
            Close(output, b.Item, b.Text.ToString());
        }
        var status = Summary.FinishReason == "max_tokens" ? "incomplete" : "completed";
        var final = ResponsesTranslator.ResponseObject(request, id, createdAt, Model, status, Output, ResponsesTranslator.Usage(Summary.Usage));
        Response = JsonSerializer.SerializeToUtf8Bytes(final, TranslationJson.Default.JsonObject);
        Event(output, status == "incomplete" ? "response.incomplete" : "response.completed", new JsonObject { ["response"] = final });
    }

    protected override void WriteError(IBufferWriter<byte> output, ProviderError error) =>
        Event(output, "error", new JsonObject { ["code"] = "server_error", ["message"] = error.Message, ["param"] = null });
}

[System.Text.Json.Serialization.JsonSerializable(typeof(JsonObject))]
internal sealed partial class TranslationJson : System.Text.Json.Serialization.JsonSerializerContext;
