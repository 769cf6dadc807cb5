using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Translation;

/// <summary>
/// Cross-dialect request translation (OpenAI Chat Completions &lt;-&gt; Anthropic Messages). Translates what both sides can
/// express and refuses, with a 400 that names the field, what they cannot: it never silently drops a tool, an image
/// or a stop sequence.
/// </summary>
public static class RequestTranslator
{
    /// <summary><c>max_tokens</c> sent to Claude when an OpenAI caller sets no limit (Anthropic requires one).</summary>
    public const int DefaultClaudeMaxTokens = 4096;

    public sealed class TranslationException(ProviderError error) : Exception(error.Message)
    {
        public ProviderError Error { get; } = error;
    }

    private static TranslationException Cannot(string field, string why) =>
        new(ProviderError.BadRequest($"'{field}' cannot be translated: {why}", field));

    public static JsonObject Translate(Dialect from, Dialect to, JsonObject body) =>
        (from, to) switch
        {
            (Dialect.OpenAI, Dialect.Anthropic) => OpenAIToAnthropic(body),
            (Dialect.Anthropic, Dialect.OpenAI) => AnthropicToOpenAI(body),
            _ => body,
        };

    private static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    // ------------------------------------------------------------------ OpenAI -> Anthropic

    private static readonly HashSet<string> IgnoredFromOpenAI = ["store", "seed", "stream_options", "prompt_cache_key", "prompt_cache_retention", "service_tier", "metadata", "user", "safety_identifier", "parallel_tool_calls", "logprobs", "n", "reasoning_effort", "frequency_penalty", "presence_penalty"];

    public static JsonObject OpenAIToAnthropic(JsonObject o)
    {
        var a = new JsonObject { ["model"] = o["model"]?.DeepClone() };
        foreach (var (name, value) in o)
        {
            switch (name)
            {
                case "model" or "messages" or "max_tokens" or "max_completion_tokens" or "stop" or "temperature" or "top_p" or "tools" or "tool_choice" or "stream":
                    break;
                case "n" when value is JsonValue nv && nv.TryGetValue<int>(out var n) && n != 1:
                    throw Cannot("n", "Claude returns one choice per request; send n=1.");
                case "logprobs" when value is JsonValue lv && lv.TryGetValue<bool>(out var lp) && lp:
                    throw Cannot("logprobs", "Claude does not return log probabilities.");
                case "frequency_penalty" or "presence_penalty" when value is JsonValue pv && pv.TryGetValue<double>(out var pen) && pen != 0:
                    throw Cannot(name, "Claude has no repetition penalties.");
                case "reasoning_effort" when Str(value) is { } re && re is not ("none" or "minimal"):
                    throw Cannot("reasoning_effort", "use a Claude model's 'thinking' setting through the Messages API instead.");
                case "response_format" when Str(value?["type"]) is "text" or null:
                    break;
                case "response_format" when Str(value?["type"]) == "json_schema":
                    // Claude's structured outputs (GA): output_config.format, a schema with no name and no strict flag (always enforced)
                    if (value!["json_schema"]?["schema"] is not JsonObject schema)
                        throw Cannot("response_format.json_schema.schema", "Claude's structured outputs need the JSON schema as an object.");
                    a["output_config"] = new JsonObject { ["format"] = new JsonObject { ["type"] = "json_schema", ["schema"] = schema.DeepClone() } };
                    break;
                case "response_format" when Str(value?["type"]) == "json_object":
                    throw Cannot("response_format", "json_object (any JSON object) has no Claude equivalent: Claude's structured outputs take a schema; send {\"type\":\"json_schema\",\"json_schema\":{\"name\":...,\"schema\":{...}}}.");
                case "response_format":
                    throw Cannot("response_format", $"type '{Str(value?["type"])}' has no Claude equivalent; Claude takes json_schema (as output_config.format).");
                default:
                    if (!IgnoredFromOpenAI.Contains(name)) throw Cannot(name, "the Anthropic Messages API has no such field.");
                    break;
            }
        }
        var max = o["max_completion_tokens"] ?? o["max_tokens"];
        a["max_tokens"] = max is JsonValue mv && mv.TryGetValue<long>(out var m) ? m : DefaultClaudeMaxTokens;
        switch (o["stop"])
        {
            case null: break;
            case JsonValue sv when Str(sv) is { } one: a["stop_sequences"] = new JsonArray(one); break;
            case JsonArray arr: a["stop_sequences"] = arr.DeepClone(); break;
            default: throw Cannot("stop", "expected a string or an array of strings.");
        }
        if (o["temperature"] is JsonValue tv && tv.TryGetValue<double>(out var t))
        {
            if (t > 1) throw Cannot("temperature", $"{t} is above Claude's maximum of 1.");
            a["temperature"] = t;
        }
        if (o["top_p"] is { } tp) a["top_p"] = tp.DeepClone();
        if (o["stream"] is JsonValue st && st.TryGetValue<bool>(out var stream) && stream) a["stream"] = true;
        if ((Str(o["user"]) ?? Str(o["safety_identifier"])) is { } user) a["metadata"] = new JsonObject { ["user_id"] = user };

        if (o["tools"] is JsonArray tools)
        {
            var at = new JsonArray();
            for (var i = 0; i < tools.Count; i++)
            {
                var tool = tools[i];
                if (Str(tool?["type"]) != "function" || tool?["function"] is not JsonObject fn)
                    throw Cannot($"tools[{i}]", "only function tools can be sent to Claude.");
                var t2 = new JsonObject { ["name"] = fn["name"]?.DeepClone() };
                if (fn["description"] is { } desc) t2["description"] = desc.DeepClone();
                t2["input_schema"] = fn["parameters"]?.DeepClone() ?? new JsonObject { ["type"] = "object", ["properties"] = new JsonObject() };
                at.Add(t2);
            }
            a["tools"] = at;
        }
        var disableParallel = o["parallel_tool_calls"] is JsonValue pt && pt.TryGetValue<bool>(out var ptb) && !ptb;
        switch (o["tool_choice"])
        {
            case null:
                if (disableParallel) a["tool_choice"] = new JsonObject { ["type"] = "auto", ["disable_parallel_tool_use"] = true };
                break;
            case JsonValue cv when Str(cv) is { } mode:
                var tc = mode switch
                {
                    "none" => new JsonObject { ["type"] = "none" },
                    "auto" => new JsonObject { ["type"] = "auto" },
                    "required" => new JsonObject { ["type"] = "any" },
                    _ => throw Cannot("tool_choice", $"unknown mode '{mode}'."),
                };
                if (disableParallel && mode != "none") tc["disable_parallel_tool_use"] = true;
                a["tool_choice"] = tc;
                break;
            case JsonObject co when Str(co["function"]?["name"]) is { } fname:
                a["tool_choice"] = new JsonObject { ["type"] = "tool", ["name"] = fname };
                if (disableParallel) a["tool_choice"]!["disable_parallel_tool_use"] = true;
                break;
            default:
                throw Cannot("tool_choice", "expected none, auto, required or {type:function,function:{name}}.");
        }

        var system = new JsonArray();
        var messages = new JsonArray();
        if (o["messages"] is not JsonArray msgs) throw Cannot("messages", "expected an array.");
        for (var i = 0; i < msgs.Count; i++)
        {
            var msg = msgs[i] as JsonObject ?? throw Cannot($"messages[{i}]", "expected an object.");
            var role = Str(msg["role"]);
            switch (role)
            {
                case "system" or "developer":
                    foreach (var text in TextParts(msg["content"], $"messages[{i}].content")) system.Add(new JsonObject { ["type"] = "text", ["text"] = text });
                    break;
                case "user":
                    Append(messages, "user", UserBlocks(msg["content"], $"messages[{i}].content"));
                    break;
                case "assistant":
                {
                    var blocks = new JsonArray();
                    if (msg["content"] is not null)
                        foreach (var text in TextParts(msg["content"], $"messages[{i}].content"))
                            if (text.Length > 0) blocks.Add(new JsonObject { ["type"] = "text", ["text"] = text });
                    if (msg["tool_calls"] is JsonArray calls)
                    {
                        for (var j = 0; j < calls.Count; j++)
                        {
                            var fn = calls[j]?["function"];
                            JsonNode? input;
                            try { input = JsonNode.Parse(Str(fn?["arguments"]) is { Length: > 0 } args ? args : "{}"); }
                            catch (JsonException) { throw Cannot($"messages[{i}].tool_calls[{j}].function.arguments", "it is not valid JSON, and Claude needs the tool input as a JSON object."); }
                            blocks.Add(new JsonObject { ["type"] = "tool_use", ["id"] = calls[j]?["id"]?.DeepClone(), ["name"] = fn?["name"]?.DeepClone(), ["input"] = input });
                        }
                    }
                    if (blocks.Count > 0) Append(messages, "assistant", blocks);
                    break;
                }
                case "tool":
                {
                    var content = string.Join("", TextParts(msg["content"], $"messages[{i}].content"));
                    Append(messages, "user", [new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = msg["tool_call_id"]?.DeepClone(), ["content"] = content }]);
                    break;
                }
                default:
                    throw Cannot($"messages[{i}].role", $"role '{role}' has no Claude equivalent.");
            }
        }
        if (system.Count > 0) a["system"] = system;
        a["messages"] = messages;
        return a;
    }

    private static void Append(JsonArray messages, string role, JsonArray blocks)
    {
        // Claude merges consecutive same-role turns; do it explicitly so tool results stay together
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

    private static IEnumerable<string> TextParts(JsonNode? content, string field)
    {
        switch (content)
        {
            case null: yield break;
            case JsonValue v when Str(v) is { } s: yield return s; break;
            case JsonArray parts:
                for (var i = 0; i < parts.Count; i++)
                {
                    if (Str(parts[i]?["type"]) != "text") throw Cannot($"{field}[{i}]", "only text parts are allowed in this message.");
                    yield return Str(parts[i]?["text"]) ?? "";
                }
                break;
            default: throw Cannot(field, "expected a string or an array of parts.");
        }
    }

    private static JsonArray UserBlocks(JsonNode? content, string field)
    {
        var blocks = new JsonArray();
        switch (content)
        {
            case JsonValue v when Str(v) is { } s:
                blocks.Add(new JsonObject { ["type"] = "text", ["text"] = s });
                break;
            case JsonArray parts:
                for (var i = 0; i < parts.Count; i++)
                {
                    var p = parts[i];
                    switch (Str(p?["type"]))
                    {
                        case "text":
                            blocks.Add(new JsonObject { ["type"] = "text", ["text"] = p!["text"]?.DeepClone() });
                            break;
                        case "image_url":
                            var url = Str(p!["image_url"]?["url"]) ?? throw Cannot($"{field}[{i}].image_url.url", "missing.");
                            blocks.Add(new JsonObject { ["type"] = "image", ["source"] = ImageSource(url, $"{field}[{i}].image_url.url") });
                            break;
                        default:
                            throw Cannot($"{field}[{i}]", $"content part type '{Str(p?["type"])}' cannot be sent to Claude (text and image_url can).");
                    }
                }
                break;
            default:
                throw Cannot(field, "expected a string or an array of content parts.");
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

    // ------------------------------------------------------------------ Anthropic -> OpenAI

    /// <summary>
    /// Claude's structured outputs as OpenAI's <c>response_format</c>: <c>output_config.format</c> (GA) or the deprecated beta
    /// <c>output_format</c> (not both, as the SDK refuses) becomes a strict <c>json_schema</c> (Claude always enforces its schema).
    /// </summary>
    private static JsonObject ResponseFormat(JsonObject a)
    {
        var config = a["output_config"];
        if (config is not null and not JsonObject) throw Cannot("output_config", "expected an object.");
        if (config?["effort"] is not null) throw Cannot("output_config.effort", "OpenAI Chat Completions has no effort setting for this request.");
        foreach (var (name, _) in config?.AsObject() ?? [])
            if (name is not ("format" or "effort")) throw Cannot("output_config." + name, "the OpenAI Chat Completions API has no such field.");
        var configFormat = config?["format"];
        var beta = a["output_format"];
        if (configFormat is not null && beta is not null) throw Cannot("output_format", "send output_config.format or the deprecated output_format, not both.");
        var field = beta is not null ? "output_format" : "output_config.format";
        var format = (configFormat ?? beta) as JsonObject ?? throw Cannot(field, "expected {\"type\":\"json_schema\",\"schema\":{...}}.");
        if (Str(format["type"]) != "json_schema") throw Cannot(field + ".type", $"'{Str(format["type"])}' has no Chat Completions equivalent; only json_schema does.");
        if (format["schema"] is not JsonObject schema) throw Cannot(field + ".schema", "the JSON schema must be an object.");
        return new JsonObject
        {
            ["type"] = "json_schema",
            ["json_schema"] = new JsonObject { ["name"] = "structured_output", ["schema"] = schema.DeepClone(), ["strict"] = true },
        };
    }

    private static readonly HashSet<string> IgnoredFromAnthropic = ["metadata", "cache_control", "service_tier", "stream"];

    public static JsonObject AnthropicToOpenAI(JsonObject a)
    {
        var o = new JsonObject { ["model"] = a["model"]?.DeepClone() };
        foreach (var (name, value) in a)
        {
            switch (name)
            {
                case "model" or "messages" or "system" or "max_tokens" or "stop_sequences" or "temperature" or "top_p" or "tools" or "tool_choice":
                    break;
                case "thinking" when Str(value?["type"]) is "disabled":
                    break;
                case "thinking":
                    throw Cannot("thinking", "extended thinking has no Chat Completions equivalent; use a reasoning model's reasoning_effort.");
                case "top_k":
                    throw Cannot("top_k", "OpenAI Chat Completions has no top_k.");
                case "output_config" or "output_format":
                    o["response_format"] = ResponseFormat(a);
                    break;
                default:
                    if (!IgnoredFromAnthropic.Contains(name)) throw Cannot(name, "the OpenAI Chat Completions API has no such field.");
                    break;
            }
        }
        var messages = new JsonArray();
        switch (a["system"])
        {
            case null: break;
            case JsonValue sv when Str(sv) is { } s: messages.Add(new JsonObject { ["role"] = "system", ["content"] = s }); break;
            case JsonArray blocks: messages.Add(new JsonObject { ["role"] = "system", ["content"] = string.Join("\n", blocks.Select(b => Str(b?["text"]) ?? "")) }); break;
            default: throw Cannot("system", "expected a string or text blocks.");
        }
        if (a["messages"] is not JsonArray msgs) throw Cannot("messages", "expected an array.");
        for (var i = 0; i < msgs.Count; i++)
        {
            var msg = msgs[i] as JsonObject ?? throw Cannot($"messages.{i}", "expected an object.");
            var role = Str(msg["role"]);
            if (role is not ("user" or "assistant")) throw Cannot($"messages.{i}.role", $"role '{role}' has no Chat Completions equivalent.");
            if (msg["content"] is JsonValue cv && Str(cv) is { } text)
            {
                messages.Add(new JsonObject { ["role"] = role, ["content"] = text });
                continue;
            }
            if (msg["content"] is not JsonArray blocks) throw Cannot($"messages.{i}.content", "expected a string or content blocks.");
            var parts = new JsonArray();
            var toolCalls = new JsonArray();
            for (var j = 0; j < blocks.Count; j++)
            {
                var b = blocks[j];
                var field = $"messages.{i}.content.{j}";
                switch (Str(b?["type"]))
                {
                    case "text":
                        parts.Add(new JsonObject { ["type"] = "text", ["text"] = b!["text"]?.DeepClone() });
                        break;
                    case "image" when role == "user":
                        var src = b!["source"];
                        var url = Str(src?["type"]) switch
                        {
                            "base64" => $"data:{Str(src?["media_type"])};base64,{Str(src?["data"])}",
                            "url" => Str(src?["url"]) ?? throw Cannot(field + ".source.url", "missing."),
                            _ => throw Cannot(field + ".source", "only base64 and url images can be sent to OpenAI."),
                        };
                        parts.Add(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = url } });
                        break;
                    case "tool_use" when role == "assistant":
                        toolCalls.Add(new JsonObject
                        {
                            ["id"] = b!["id"]?.DeepClone(),
                            ["type"] = "function",
                            ["function"] = new JsonObject { ["name"] = b["name"]?.DeepClone(), ["arguments"] = (b["input"] ?? new JsonObject()).ToJsonString() },
                        });
                        break;
                    case "tool_result" when role == "user":
                        var content = b!["content"] switch
                        {
                            null => "",
                            JsonValue rv when Str(rv) is { } s => s,
                            JsonArray rb => string.Join("", rb.Select((x, k) => Str(x?["type"]) == "text" ? Str(x?["text"]) : throw Cannot($"{field}.content.{k}", "only text tool results can be sent to OpenAI."))),
                            _ => throw Cannot(field + ".content", "expected a string or text blocks."),
                        };
                        if (b["is_error"] is JsonValue ie && ie.TryGetValue<bool>(out var isErr) && isErr) content = "Error: " + content;
                        messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = b["tool_use_id"]?.DeepClone(), ["content"] = content });
                        break;
                    case "thinking" or "redacted_thinking" when role == "assistant":
                        break; // earlier reasoning of a Claude model: not input to another model
                    default:
                        throw Cannot(field, $"a '{Str(b?["type"])}' block in a {role} turn cannot be sent to an OpenAI model.");
                }
            }
            if (role == "assistant")
            {
                var m = new JsonObject { ["role"] = "assistant", ["content"] = parts.Count == 0 ? null : string.Join("", parts.Select(p => Str(p?["text"]))) };
                if (toolCalls.Count > 0) m["tool_calls"] = toolCalls;
                messages.Add(m);
            }
            else if (parts.Count > 0)
            {
                messages.Add(new JsonObject { ["role"] = "user", ["content"] = parts });
            }
        }
        o["messages"] = messages;
        if (a["max_tokens"] is { } mt) o["max_completion_tokens"] = mt.DeepClone();
        if (a["stop_sequences"] is JsonArray stops)
        {
            if (stops.Count > 4) throw Cannot("stop_sequences", $"OpenAI accepts at most 4 stop sequences, not {stops.Count}.");
            if (stops.Count > 0) o["stop"] = stops.DeepClone();
        }
        if (a["temperature"] is { } t) o["temperature"] = t.DeepClone();
        if (a["top_p"] is { } tp) o["top_p"] = tp.DeepClone();
        if (Str(a["metadata"]?["user_id"]) is { } uid) o["safety_identifier"] = uid;
        if (a["stream"] is JsonValue st && st.TryGetValue<bool>(out var stream) && stream)
        {
            o["stream"] = true;
            o["stream_options"] = new JsonObject { ["include_usage"] = true };
        }
        if (a["tools"] is JsonArray tools)
        {
            var ot = new JsonArray();
            for (var i = 0; i < tools.Count; i++)
            {
                var tool = tools[i];
                if (Str(tool?["type"]) is { } tt && tt != "custom") throw Cannot($"tools.{i}", $"server tool '{tt}' runs only on Anthropic.");
                var fn = new JsonObject { ["name"] = tool?["name"]?.DeepClone() };
                if (tool?["description"] is { } d) fn["description"] = d.DeepClone();
                fn["parameters"] = tool?["input_schema"]?.DeepClone() ?? new JsonObject { ["type"] = "object" };
                ot.Add(new JsonObject { ["type"] = "function", ["function"] = fn });
            }
            o["tools"] = ot;
        }
        if (a["tool_choice"] is JsonObject tc)
        {
            o["tool_choice"] = Str(tc["type"]) switch
            {
                "auto" => "auto",
                "any" => "required",
                "none" => "none",
                "tool" => new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = tc["name"]?.DeepClone() } },
                var x => throw Cannot("tool_choice.type", $"unknown type '{x}'."),
            };
            if (tc["disable_parallel_tool_use"] is JsonValue dp && dp.TryGetValue<bool>(out var dpb) && dpb) o["parallel_tool_calls"] = false;
        }
        return o;
    }
}
