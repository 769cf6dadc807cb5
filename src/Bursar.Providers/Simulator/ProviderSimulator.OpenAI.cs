using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Tokens;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Simulator;

public sealed partial class ProviderSimulator
{
    private static bool RejectsMaxTokens(string model) =>
        model.StartsWith("o1", StringComparison.Ordinal) || model.StartsWith("o3", StringComparison.Ordinal) || model.StartsWith("o4", StringComparison.Ordinal)
        || model.StartsWith("gpt-5", StringComparison.Ordinal);

    private async Task ChatAsync(SimulatorExchange x, CancellationToken ct)
    {
        const Dialect d = Dialect.OpenAI;
        var body = ParseBody(x, d);
        var auth = x.Header("authorization");
        if (string.IsNullOrEmpty(auth) || !auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            throw new SimulatorRequestException(d, ProviderError.Unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth."));
        if (body["model"] is not JsonValue mv || !mv.TryGetValue<string>(out var model) || string.IsNullOrWhiteSpace(model))
            throw Bad(d, "you must provide a model parameter", "model");
        if (body["messages"] is not JsonArray messages) throw Bad(d, "Missing required parameter: 'messages'.", "messages");
        if (messages.Count == 0) throw Bad(d, "[] is too short - 'messages'", "messages");
        if (!Knows(d, model))
            throw new SimulatorRequestException(d, new ProviderError(404, $"The model `{model}` does not exist or you do not have access to it.") { Code = "model_not_found" });
        if (body.ContainsKey("max_tokens") && RejectsMaxTokens(model))
            throw new SimulatorRequestException(d, new ProviderError(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.") { Param = "max_tokens", Code = "unsupported_parameter" });
        long maxTokens = long.MaxValue;
        foreach (var field in new[] { "max_completion_tokens", "max_tokens" })
        {
            if (body[field] is null) continue;
            if (body[field] is not JsonValue v || !v.TryGetValue<long>(out var m) || m < 1) throw Bad(d, $"Invalid '{field}': expected an integer of at least 1.", field);
            maxTokens = m;
        }
        var n = 1;
        if (body["n"] is { } nn && (nn is not JsonValue nv || !nv.TryGetValue(out n) || n is < 1 or > 128)) throw Bad(d, "Invalid 'n': expected an integer from 1 to 128.", "n");
        if (body["temperature"] is { } tt && (tt is not JsonValue tv || !tv.TryGetValue<double>(out var temp) || temp is < 0 or > 2))
            throw Bad(d, "Invalid 'temperature': expected a number from 0 to 2.", "temperature");
        var stream = false;
        if (body["stream"] is { } sn && (sn is not JsonValue sv || !sv.TryGetValue(out stream))) throw Bad(d, "Invalid 'stream': expected a boolean.", "stream");
        var includeUsage = stream && body["stream_options"]?["include_usage"] is JsonValue iu && iu.TryGetValue<bool>(out var inc) && inc;
        string[] stops = body["stop"] switch
        {
            null => [],
            JsonValue s when s.TryGetValue<string>(out var one) => [one],
            JsonArray a when a.Count <= 4 && a.All(e => e is JsonValue ev && ev.TryGetValue<string>(out _)) => a.Select(e => e!.GetValue<string>()).ToArray(),
            _ => throw Bad(d, "Invalid 'stop': expected a string or an array of at most 4 strings.", "stop"),
        };

        // the prompt as the model sees it, for token counts and the automatic prompt cache
        var prompt = new StringBuilder();
        if (body["tools"] is { } toolsNode)
        {
            if (toolsNode is not JsonArray) throw Bad(d, "Invalid 'tools': expected an array.", "tools");
            prompt.Append(toolsNode.ToJsonString()).Append('\n');
        }
        var lastUser = "";
        var lastIsTool = false;
        string? toolText = null;
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not JsonObject msg) throw Bad(d, $"Invalid type for 'messages[{i}]': expected an object.", $"messages[{i}]");
            var role = msg["role"] is JsonValue rv && rv.TryGetValue<string>(out var r) ? r : null;
            if (role is not ("system" or "developer" or "user" or "assistant" or "tool" or "function"))
                throw Bad(d, $"Invalid value for 'messages[{i}].role': expected one of system, developer, user, assistant, tool.", $"messages[{i}].role");
            string text = msg["content"] switch
            {
                null when role == "assistant" => "",
                JsonValue cv when cv.TryGetValue<string>(out var s) => s,
                JsonArray parts => string.Concat(parts.Select(p => p?["type"]?.GetValue<string>() == "text" ? p["text"]?.GetValue<string>() : p?.ToJsonString())),
                _ => throw Bad(d, $"Invalid type for 'messages[{i}].content': expected a string or an array of content parts.", $"messages[{i}].content"),
            };
            if (role == "tool" && msg["tool_call_id"] is not JsonValue)
                throw Bad(d, $"Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.", $"messages[{i}].tool_call_id");
            prompt.Append(role).Append(": ").Append(text);
            if (msg["tool_calls"] is { } tc) prompt.Append(tc.ToJsonString());
            prompt.Append('\n');
            if (role == "user") lastUser = text;
            if (i == messages.Count - 1)
            {
                lastIsTool = role == "tool";
                if (lastIsTool) toolText = text;
            }
        }
        var allText = prompt.ToString();
        var structured = ReadStructuredFormat(body, d, allText, x);
        var fault = TakeFault(allText);
        if (fault is { MidStream: false }) throw new SimulatorRequestException(d, FaultError(fault));

        var ids = TokenCounter.Encode(model, allText);
        var promptTokens = ids.Count + TokenCounter.OpenAIMessageOverhead * messages.Count + 3;
        var cacheKey = body["prompt_cache_key"] is JsonValue pk && pk.TryGetValue<string>(out var k) ? k : "";
        var cached = Cache.OpenAI(model, cacheKey, ids, _options.OpenAICacheTtl);

        JsonObject? toolCall = null;
        var tools = body["tools"] as JsonArray;
        // tool_choice: "none" | "auto" | "required" | {"type":"function","function":{"name"}} (the SDKs send all four)
        string? choiceName = null;
        var choiceMode = body["tool_choice"] switch
        {
            null => "auto",
            JsonValue cv when cv.TryGetValue<string>(out var cm) => cm is "none" or "auto" or "required" ? cm
                : throw Bad(d, $"Invalid value: '{cm}'. Supported values are: 'none', 'auto', and 'required'.", "tool_choice"),
            JsonObject co => (choiceName = co["function"] is JsonObject cf && cf["name"] is JsonValue cn && cn.TryGetValue<string>(out var name) ? name : null) is not null ? "function"
                : throw Bad(d, "Missing required parameter: 'tool_choice.function.name'.", "tool_choice.function.name"),
            _ => throw Bad(d, "Invalid type for 'tool_choice': expected one of 'none', 'auto', 'required', or an object naming a function.", "tool_choice"),
        };
        if (choiceMode is "required" or "function" && tools is not { Count: > 0 })
            throw Bad(d, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", "tool_choice");
        // "auto" calls the first tool unless the last turn is a tool's result; "required" and a named function always call one; "none" never does
        if (tools is { Count: > 0 } && (choiceMode is "required" or "function" || (choiceMode == "auto" && !lastIsTool)))
        {
            var tool = (choiceName is null ? tools[0] : tools.FirstOrDefault(t => t?["function"]?["name"]?.GetValue<string>() == choiceName))
                ?? throw Bad(d, $"Invalid 'tool_choice': no function named '{choiceName}' in tools.", "tool_choice");
            var fn = tool["function"] ?? throw Bad(d, "Invalid 'tools[0]': missing 'function'.", "tools");
            toolCall = new JsonObject
            {
                ["id"] = NextId("call_sim_"),
                ["type"] = "function",
                ["function"] = new JsonObject
                {
                    ["name"] = fn["name"]?.GetValue<string>() ?? "tool",
                    ["arguments"] = ToolArguments(fn["parameters"]).ToJsonString(),
                },
            };
        }
        var reasoning = body["reasoning_effort"]?.GetValue<string>() switch
        {
            "low" => 16,
            "medium" => 64,
            "high" or "xhigh" or "max" => 256,
            _ => 0,
        };
        string text2 = "";
        int outTokens;
        string finish;
        if (toolCall is not null)
        {
            outTokens = _counter.Count(model, toolCall.ToJsonString());
            finish = "tool_calls";
        }
        else if (structured is not null)
        {
            // structured outputs: JSON valid against the schema; cut short (and so invalid) only when max_tokens runs out, as a real model's is
            (text2, outTokens, var truncated) = Structured(model, StructuredAnswer(structured, lastUser), Math.Max(1, maxTokens - reasoning));
            finish = truncated ? "length" : "stop";
        }
        else
        {
            var answer = TextAnswer(model, lastUser, allText, Math.Max(1, maxTokens - reasoning), lastIsTool ? toolText : null, stops);
            (text2, outTokens) = (answer.Text, answer.Tokens);
            finish = answer.Truncated ? "length" : "stop";
        }
        var completion = (long)(outTokens + reasoning) * n;
        var id = NextId("chatcmpl-sim");
        var created = _time.GetUtcNow().ToUnixTimeSeconds();
        x.SetHeader("x-request-id", NextId("req_sim_"));

        void Usage(Utf8JsonWriter w)
        {
            w.WriteStartObject("usage");
            w.WriteNumber("prompt_tokens", promptTokens);
            w.WriteNumber("completion_tokens", completion);
            w.WriteNumber("total_tokens", promptTokens + completion);
            w.WriteStartObject("prompt_tokens_details");
            w.WriteNumber("cached_tokens", cached);
            w.WriteNumber("audio_tokens", 0);
            w.WriteEndObject();
            w.WriteStartObject("completion_tokens_details");
            w.WriteNumber("reasoning_tokens", reasoning * n);
            w.WriteNumber("audio_tokens", 0);
            w.WriteNumber("accepted_prediction_tokens", 0);
            w.WriteNumber("rejected_prediction_tokens", 0);
            w.WriteEndObject();
            w.WriteEndObject();
        }

        if (!stream)
        {
            await WriteAnswerAsync(x, outTokens, w =>
            {
                w.WriteString("id", id);
                w.WriteString("object", "chat.completion");
                w.WriteNumber("created", created);
                w.WriteString("model", model);
                w.WriteStartArray("choices");
                for (var c = 0; c < n; c++)
                {
                    w.WriteStartObject();
                    w.WriteNumber("index", c);
                    w.WriteStartObject("message");
                    w.WriteString("role", "assistant");
                    if (toolCall is null) w.WriteString("content", text2); else w.WriteNull("content");
                    w.WriteNull("refusal");
                    if (toolCall is not null)
                    {
                        w.WriteStartArray("tool_calls");
                        toolCall.WriteTo(w);
                        w.WriteEndArray();
                    }
                    w.WriteStartArray("annotations");
                    w.WriteEndArray();
                    w.WriteEndObject();
                    w.WriteNull("logprobs");
                    w.WriteString("finish_reason", finish);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                Usage(w);
                w.WriteString("service_tier", "default");
                w.WriteString("system_fingerprint", "fp_bursar_sim");
            }, ct).ConfigureAwait(false);
            return;
        }

        StartStream(x);

        async Task Chunk(Action<Utf8JsonWriter> choices, bool usageChunk = false)
        {
            var json = Json(w =>
            {
                w.WriteStartObject();
                w.WriteString("id", id);
                w.WriteString("object", "chat.completion.chunk");
                w.WriteNumber("created", created);
                w.WriteString("model", model);
                w.WriteString("service_tier", "default");
                w.WriteString("system_fingerprint", "fp_bursar_sim");
                w.WriteStartArray("choices");
                choices(w);
                w.WriteEndArray();
                if (usageChunk) Usage(w);
                else if (includeUsage) w.WriteNull("usage");
                w.WriteEndObject();
            });
            await Data(x, json, ct).ConfigureAwait(false);
        }

        void Choice(Utf8JsonWriter w, int index, Action<Utf8JsonWriter> delta, string? finishReason)
        {
            w.WriteStartObject();
            w.WriteNumber("index", index);
            w.WriteStartObject("delta");
            delta(w);
            w.WriteEndObject();
            w.WriteNull("logprobs");
            if (finishReason is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", finishReason);
            w.WriteEndObject();
        }

        await PaceAsync(first: true, 0, ct).ConfigureAwait(false);
        for (var c = 0; c < n; c++)
        {
            var ci = c;
            await Chunk(w => Choice(w, ci, dw => { dw.WriteString("role", "assistant"); dw.WriteString("content", ""); dw.WriteNull("refusal"); }, null)).ConfigureAwait(false);
            if (toolCall is not null)
            {
                var args = toolCall["function"]!["arguments"]!.GetValue<string>();
                await Chunk(w => Choice(w, ci, dw =>
                {
                    dw.WriteStartArray("tool_calls");
                    dw.WriteStartObject();
                    dw.WriteNumber("index", 0);
                    dw.WriteString("id", toolCall["id"]!.GetValue<string>());
                    dw.WriteString("type", "function");
                    dw.WriteStartObject("function");
                    dw.WriteString("name", toolCall["function"]!["name"]!.GetValue<string>());
                    dw.WriteString("arguments", "");
                    dw.WriteEndObject();
                    dw.WriteEndObject();
                    dw.WriteEndArray();
                }, null)).ConfigureAwait(false);
                foreach (var piece in SplitJson(args))
                {
                    await PaceAsync(false, 1, ct).ConfigureAwait(false);
                    await Chunk(w => Choice(w, ci, dw =>
                    {
                        dw.WriteStartArray("tool_calls");
                        dw.WriteStartObject();
                        dw.WriteNumber("index", 0);
                        dw.WriteStartObject("function");
                        dw.WriteString("arguments", piece);
                        dw.WriteEndObject();
                        dw.WriteEndObject();
                        dw.WriteEndArray();
                    }, null)).ConfigureAwait(false);
                }
            }
            else
            {
                var firstPiece = true;
                foreach (var piece in Chunks(text2))
                {
                    await PaceAsync(false, 1, ct).ConfigureAwait(false);
                    await Chunk(w => Choice(w, ci, dw => dw.WriteString("content", piece), null)).ConfigureAwait(false);
                    if (firstPiece && fault is { MidStream: true })
                    {
                        await Data(x, new ProviderError(500, "The server had an error while processing your request.", ErrorSource.Upstream).ToJson(d), ct).ConfigureAwait(false);
                        return;
                    }
                    firstPiece = false;
                }
            }
            await Chunk(w => Choice(w, ci, _ => { }, finish)).ConfigureAwait(false);
        }
        if (includeUsage) await Chunk(_ => { }, usageChunk: true).ConfigureAwait(false);
        await x.WriteAsync("data: [DONE]\n\n"u8.ToArray(), ct).ConfigureAwait(false);
    }

    private static async Task Data(SimulatorExchange x, byte[] json, CancellationToken ct)
    {
        var frame = new byte[json.Length + 8];
        "data: "u8.CopyTo(frame);
        json.CopyTo(frame, 6);
        frame[^2] = (byte)'\n';
        frame[^1] = (byte)'\n';
        await x.WriteAsync(frame, ct).ConfigureAwait(false);
    }
}
