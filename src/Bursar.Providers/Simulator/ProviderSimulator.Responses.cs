using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Tokens;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Simulator;

/// <summary>
/// OpenAI's Responses API (<c>POST /v1/responses</c>, PROVIDER_API.md section 8): input items, <c>instructions</c>, flat
/// function tools and <c>function_call_output</c> items, <c>reasoning</c> (reasoning tokens on reasoning models),
/// <c>text.format</c>, the typed <c>response.*</c> stream ending in <c>response.completed</c> with usage, stored responses
/// (<c>GET</c>, <c>DELETE</c>, <c>input_items</c>) and <c>previous_response_id</c> chains whose stored context is billed again
/// as input, through the same automatic prompt cache as chat.
/// </summary>
public sealed partial class ProviderSimulator
{
    /// <summary>A stored response: the object <c>GET</c> returns, this request's input items, and the conversation a chained call continues.</summary>
    private sealed record StoredResponse(byte[] Json, JsonArray InputItems, JsonArray Context);

    private readonly ConcurrentDictionary<string, StoredResponse> _responses = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _responseOrder = new();

    /// <summary>Most responses kept; the oldest are dropped past it (a long benchmark must not grow the Simulator without bound).</summary>
    public const int MaxStoredResponses = 20_000;

    /// <summary>Responses currently stored (<c>store</c> not false, not deleted).</summary>
    public int StoredResponses => _responses.Count;

    private static bool IsReasoningModel(string model) =>
        model.StartsWith("o1", StringComparison.Ordinal) || model.StartsWith("o3", StringComparison.Ordinal) || model.StartsWith("o4", StringComparison.Ordinal)
        || (model.StartsWith("gpt-5", StringComparison.Ordinal) && !model.Contains("chat", StringComparison.Ordinal));

    private async Task ResponsesRouteAsync(SimulatorExchange x, string path, CancellationToken ct)
    {
        const Dialect d = Dialect.OpenAI;
        var auth = x.Header("authorization");
        if (string.IsNullOrEmpty(auth) || !auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            throw new SimulatorRequestException(d, ProviderError.Unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth."));
        var rest = path["/v1/responses".Length..].TrimStart('/');
        if (rest.Length == 0)
        {
            if (x.Method != "POST") throw new SimulatorRequestException(d, new ProviderError(405, $"Method {x.Method} is not allowed on /v1/responses; use POST."));
            await ResponsesAsync(x, ct).ConfigureAwait(false);
            return;
        }
        var slash = rest.IndexOf('/', StringComparison.Ordinal);
        var id = Uri.UnescapeDataString(slash < 0 ? rest : rest[..slash]);
        var sub = slash < 0 ? "" : rest[(slash + 1)..];
        if (!_responses.TryGetValue(id, out var stored))
            throw new SimulatorRequestException(d, new ProviderError(404, $"Response with id '{Truncate(id, 80)}' not found.") { Param = "response_id" });
        switch (x.Method, sub)
        {
            case ("GET", ""):
                x.SetStatus(200);
                x.SetHeader("content-type", "application/json");
                await x.WriteAsync(stored.Json, ct).ConfigureAwait(false);
                return;
            case ("DELETE", ""):
                _responses.TryRemove(id, out _);
                await WriteObjectAsync(x, w =>
                {
                    w.WriteString("id", id);
                    w.WriteString("object", "response.deleted");
                    w.WriteBoolean("deleted", true);
                }, ct).ConfigureAwait(false);
                return;
            case ("GET", "input_items"):
                await InputItemsAsync(x, stored, ct).ConfigureAwait(false);
                return;
            default:
                throw new SimulatorRequestException(d, new ProviderError(404, $"The Simulator has no endpoint {x.Method} {x.Path}."));
        }
    }

    /// <summary><c>GET /v1/responses/{id}/input_items</c>: a cursor list (<c>order</c> desc by default, <c>limit</c> 1-100, <c>after</c> an item id).</summary>
    private static ValueTask InputItemsAsync(SimulatorExchange x, StoredResponse stored, CancellationToken ct)
    {
        var query = Query(x.Query);
        var order = query.GetValueOrDefault("order", "desc");
        if (order is not ("asc" or "desc")) throw Bad(Dialect.OpenAI, $"Invalid value for 'order': '{Truncate(order, 20)}'. Supported values are: 'asc' and 'desc'.", "order");
        var limit = 20;
        if (query.TryGetValue("limit", out var l) && (!int.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > 100))
            throw Bad(Dialect.OpenAI, "Invalid 'limit': expected an integer from 1 to 100.", "limit");
        var items = stored.InputItems.Select(i => i!).ToList();
        if (order == "desc") items.Reverse();
        if (query.TryGetValue("after", out var after))
        {
            var at = items.FindIndex(i => i["id"]?.GetValue<string>() == after);
            items = at < 0 ? [] : items[(at + 1)..];
        }
        var page = items.Take(limit).ToList();
        return WriteListAsync(x, w => { foreach (var i in page) i.WriteTo(w); }, w =>
        {
            if (page.Count > 0) w.WriteString("first_id", page[0]["id"]!.GetValue<string>()); else w.WriteNull("first_id");
            if (page.Count > 0) w.WriteString("last_id", page[^1]["id"]!.GetValue<string>()); else w.WriteNull("last_id");
            w.WriteBoolean("has_more", items.Count > page.Count);
        }, ct);
    }

    private static Dictionary<string, string> Query(string? query)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (string.IsNullOrEmpty(query)) return map;
        foreach (var part in query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            var k = Uri.UnescapeDataString(eq < 0 ? part : part[..eq]);
            map[k] = eq < 0 ? "" : Uri.UnescapeDataString(part[(eq + 1)..].Replace('+', ' '));
        }
        return map;
    }

    private static string? OptString(JsonObject body, string field)
    {
        return body[field] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            _ => throw Bad(Dialect.OpenAI, $"Invalid type for '{field}': expected a string.", field),
        };
    }

    private async Task ResponsesAsync(SimulatorExchange x, CancellationToken ct)
    {
        const Dialect d = Dialect.OpenAI;
        var body = ParseBody(x, d);
        if (body["model"] is not JsonValue mv || !mv.TryGetValue<string>(out var model) || string.IsNullOrWhiteSpace(model))
            throw Bad(d, "Missing required parameter: 'model'.", "model");
        if (!Knows(d, model))
            throw new SimulatorRequestException(d, new ProviderError(404, $"The model `{model}` does not exist or you do not have access to it.") { Code = "model_not_found" });
        if (body.ContainsKey("messages")) throw Bad(d, "Unsupported parameter: 'messages'. The Responses API takes 'input'.", "messages");
        if (body.ContainsKey("response_format")) throw Bad(d, "Unsupported parameter: 'response_format'. In the Responses API, this parameter has moved to 'text.format'.", "response_format");
        if (body.ContainsKey("max_tokens") || body.ContainsKey("max_completion_tokens"))
            throw Bad(d, $"Unsupported parameter: '{(body.ContainsKey("max_tokens") ? "max_tokens" : "max_completion_tokens")}'. The Responses API takes 'max_output_tokens'.", body.ContainsKey("max_tokens") ? "max_tokens" : "max_completion_tokens");
        var instructions = OptString(body, "instructions");
        var previousId = OptString(body, "previous_response_id");
        if (previousId is not null && body["conversation"] is not null)
            throw Bad(d, "Mutually exclusive parameters: 'previous_response_id' and 'conversation'. Send one of them.", "previous_response_id");
        StoredResponse? previous = null;
        if (previousId is not null && !_responses.TryGetValue(previousId, out previous))
            throw new SimulatorRequestException(d, new ProviderError(400, $"Previous response with id '{Truncate(previousId, 80)}' not found.") { Param = "previous_response_id", Code = "previous_response_not_found" });
        long maxTokens = long.MaxValue;
        if (body["max_output_tokens"] is { } mo)
        {
            if (mo is not JsonValue mov || !mov.TryGetValue<long>(out var m)) throw Bad(d, "Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens");
            if (m < 16) throw Bad(d, $"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {m} instead.", "max_output_tokens");
            maxTokens = m;
        }
        if (body["temperature"] is { } tt && (tt is not JsonValue tv || !tv.TryGetValue<double>(out var temp) || temp is < 0 or > 2))
            throw Bad(d, "Invalid 'temperature': expected a number from 0 to 2.", "temperature");
        var stream = false;
        if (body["stream"] is { } sn && (sn is not JsonValue sv || !sv.TryGetValue(out stream))) throw Bad(d, "Invalid type for 'stream': expected a boolean.", "stream");
        var store = true;
        if (body["store"] is { } st && (st is not JsonValue stv || !stv.TryGetValue(out store))) throw Bad(d, "Invalid type for 'store': expected a boolean.", "store");
        var truncation = OptString(body, "truncation") ?? "disabled";
        if (truncation is not ("disabled" or "auto")) throw Bad(d, $"Invalid value for 'truncation': '{Truncate(truncation, 20)}'. Supported values are: 'auto' and 'disabled'.", "truncation");
        var cacheKey = OptString(body, "prompt_cache_key") ?? "";

        // reasoning: reasoning models think (medium effort unless told); other models reject the parameter, as OpenAI's do
        var reasoningModel = IsReasoningModel(model);
        string? effort = null;
        if (body["reasoning"] is { } rn)
        {
            if (rn is not JsonObject ro) throw Bad(d, "Invalid type for 'reasoning': expected an object.", "reasoning");
            effort = ro["effort"] switch
            {
                null => null,
                JsonValue ev when ev.TryGetValue<string>(out var e) && e is "none" or "minimal" or "low" or "medium" or "high" or "xhigh" or "max" => e,
                _ => throw Bad(d, "Invalid value for 'reasoning.effort': supported values are 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'.", "reasoning.effort"),
            };
            if (!reasoningModel && effort is not null && effort != "none")
                throw Bad(d, $"Unsupported parameter: 'reasoning.effort' is not supported with this model.", "reasoning.effort");
        }
        if (reasoningModel) effort ??= "medium";
        var reasoning = effort switch
        {
            "minimal" => 8,
            "low" => 16,
            "medium" => 64,
            "high" or "xhigh" or "max" => 256,
            _ => 0,
        };

        // text.format: text (default), json_object, json_schema {name, schema}
        var format = "text";
        JsonNode? schema = null;
        JsonObject formatNode = new() { ["type"] = "text" };
        if (body["text"] is { } textNode)
        {
            if (textNode is not JsonObject to) throw Bad(d, "Invalid type for 'text': expected an object.", "text");
            if (to["format"] is { } fn)
            {
                if (fn is not JsonObject fo || fo["type"] is not JsonValue ftv || !ftv.TryGetValue<string>(out var ft) || ft is not ("text" or "json_object" or "json_schema"))
                    throw Bad(d, "Invalid 'text.format': expected an object whose 'type' is 'text', 'json_object' or 'json_schema'.", "text.format.type");
                format = ft;
                if (ft == "json_schema")
                {
                    if (fo["name"] is not JsonValue nv || !nv.TryGetValue<string>(out var fname) || fname.Length is 0 or > 64)
                        throw Bad(d, "Missing required parameter: 'text.format.name'.", "text.format.name");
                    schema = fo["schema"] as JsonObject ?? throw Bad(d, "Missing required parameter: 'text.format.schema'.", "text.format.schema");
                }
                formatNode = (JsonObject)fo.DeepClone();
            }
        }

        // tools: flat function tools; built-in tools are accepted and never called by the Simulator
        var functions = new List<JsonObject>();
        JsonArray? tools = null;
        if (body["tools"] is { } toolsNode)
        {
            tools = toolsNode as JsonArray ?? throw Bad(d, "Invalid type for 'tools': expected an array.", "tools");
            for (var i = 0; i < tools.Count; i++)
            {
                if (tools[i] is not JsonObject t || t["type"] is not JsonValue ttv || !ttv.TryGetValue<string>(out var type))
                    throw Bad(d, $"Missing required parameter: 'tools[{i}].type'.", $"tools[{i}].type");
                if (type != "function") continue;
                if (t["name"] is not JsonValue tn || !tn.TryGetValue<string>(out var tname) || tname.Length == 0)
                    throw Bad(d, $"Missing required parameter: 'tools[{i}].name'.", $"tools[{i}].name");
                if (t.ContainsKey("function")) throw Bad(d, $"Unknown parameter: 'tools[{i}].function'. Function tools are flat in the Responses API: name and parameters sit on the tool.", $"tools[{i}].function");
                functions.Add(t);
            }
        }
        string? choiceName = null;
        var choiceMode = body["tool_choice"] switch
        {
            null => "auto",
            JsonValue cv when cv.TryGetValue<string>(out var cm) => cm is "none" or "auto" or "required" ? cm
                : throw Bad(d, $"Invalid value: '{Truncate(cm, 20)}'. Supported values are: 'none', 'auto', and 'required'.", "tool_choice"),
            JsonObject co when co["type"]?.GetValue<string>() == "function" => (choiceName = co["name"] is JsonValue cn && cn.TryGetValue<string>(out var name) ? name : null) is not null ? "function"
                : throw Bad(d, "Missing required parameter: 'tool_choice.name'.", "tool_choice.name"),
            JsonObject => "auto", // a built-in tool or allowed_tools: the Simulator answers as for auto
            _ => throw Bad(d, "Invalid type for 'tool_choice': expected 'none', 'auto', 'required' or an object.", "tool_choice"),
        };
        if (choiceMode is "required" or "function" && functions.Count == 0 && tools is not { Count: > 0 })
            throw Bad(d, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", "tool_choice");

        // input: a string, or an array of items; each stored item gets an id
        var input = new JsonArray();
        switch (body["input"])
        {
            case null when previous is not null:
                break;
            case null:
                throw Bad(d, "Missing required parameter: 'input'.", "input");
            case JsonValue iv when iv.TryGetValue<string>(out var s):
                input.Add(new JsonObject { ["type"] = "message", ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "input_text", ["text"] = s }) });
                break;
            case JsonArray items:
                for (var i = 0; i < items.Count; i++) input.Add(InputItem(items[i], i));
                break;
            default:
                throw Bad(d, "Invalid type for 'input': expected a string or an array of input items.", "input");
        }
        foreach (var item in input.OfType<JsonObject>())
        {
            var prefix = item["type"]!.GetValue<string>() switch { "function_call" => "fc_", "function_call_output" => "fco_", "reasoning" => "rs_", "item_reference" => "ref_", _ => "msg_" };
            item["id"] ??= NextId(prefix + "sim");
        }

        // the prompt as the model sees it: instructions, tools, the stored conversation, this input
        var prompt = new StringBuilder();
        if (instructions is not null) prompt.Append("instructions: ").Append(instructions).Append('\n');
        if (tools is not null) prompt.Append(tools.ToJsonString()).Append('\n');
        var context = previous is null ? new JsonArray() : (JsonArray)previous.Context.DeepClone();
        foreach (var item in input) context.Add(item!.DeepClone());
        var lastUser = "";
        string? toolResult = null;
        foreach (var item in context.OfType<JsonObject>())
        {
            var type = item["type"]!.GetValue<string>();
            var text = ItemText(item);
            prompt.Append(type == "message" ? item["role"]!.GetValue<string>() : type).Append(": ").Append(text).Append('\n');
            if (type == "message" && item["role"]?.GetValue<string>() == "user") lastUser = text;
        }
        if (context.Count > 0 && context[^1] is JsonObject lastItem && lastItem["type"]!.GetValue<string>() == "function_call_output") toolResult = ItemText(lastItem);
        var allText = prompt.ToString();
        var fault = TakeFault(allText);
        if (fault is { MidStream: false }) throw new SimulatorRequestException(d, FaultError(fault));

        var ids = TokenCounter.Encode(model, allText);
        var inputTokens = ids.Count + TokenCounter.OpenAIMessageOverhead * Math.Max(1, context.Count) + 3;
        var cached = Cache.OpenAI(model, cacheKey, ids, _options.OpenAICacheTtl);

        // the output: a function call, or text (JSON when text.format asks for it)
        var output = new JsonArray();
        if (reasoning > 0) output.Add(new JsonObject { ["id"] = NextId("rs_sim"), ["type"] = "reasoning", ["summary"] = new JsonArray() });
        var callsTool = functions.Count > 0 && (choiceMode is "required" or "function" || (choiceMode == "auto" && toolResult is null));
        int outTokens;
        var truncated = false;
        if (callsTool)
        {
            var tool = (choiceName is null ? functions[0] : functions.FirstOrDefault(t => t["name"]?.GetValue<string>() == choiceName))
                ?? throw Bad(d, $"Invalid 'tool_choice': no function named '{Truncate(choiceName, 64)}' in tools.", "tool_choice.name");
            var args = ToolArguments(tool["parameters"]).ToJsonString();
            output.Add(new JsonObject
            {
                ["id"] = NextId("fc_sim"), ["type"] = "function_call", ["status"] = "completed", ["arguments"] = args,
                ["call_id"] = NextId("call_sim_"), ["name"] = tool["name"]!.GetValue<string>(),
            });
            outTokens = _counter.Count(model, args) + 4;
        }
        else
        {
            var budget = Math.Max(1, maxTokens == long.MaxValue ? long.MaxValue : maxTokens - reasoning);
            string text;
            if (format == "text")
            {
                var answer = TextAnswer(model, lastUser, allText, budget, toolResult, []);
                (text, outTokens, truncated) = (answer.Text, answer.Tokens, answer.Truncated);
            }
            else
            {
                var words = TextAnswer(model, lastUser, allText, 64, toolResult, []).Text;
                text = format == "json_schema" ? ToolArguments(schema).ToJsonString() : new JsonObject { ["answer"] = words }.ToJsonString();
                outTokens = _counter.Count(model, text);
                if (outTokens > budget)
                {
                    truncated = true;
                    var cut = (int)Math.Min(text.Length, budget * 2);
                    text = text[..cut];
                    outTokens = (int)Math.Min(outTokens, budget);
                }
            }
            output.Add(new JsonObject
            {
                ["id"] = NextId("msg_sim"), ["type"] = "message", ["status"] = truncated ? "incomplete" : "completed", ["role"] = "assistant",
                ["content"] = new JsonArray(new JsonObject { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray(), ["text"] = text }),
            });
        }
        var outputTotal = (long)outTokens + reasoning;
        var id = NextId("resp_sim");
        var created = _time.GetUtcNow().ToUnixTimeSeconds();
        x.SetHeader("x-request-id", NextId("req_sim_"));

        JsonObject ResponseObject(string status, bool withOutput, bool withUsage)
        {
            var usage = withUsage
                ? new JsonObject
                {
                    ["input_tokens"] = inputTokens,
                    ["input_tokens_details"] = new JsonObject { ["cached_tokens"] = cached },
                    ["output_tokens"] = outputTotal,
                    ["output_tokens_details"] = new JsonObject { ["reasoning_tokens"] = reasoning },
                    ["total_tokens"] = inputTokens + outputTotal,
                }
                : null;
            return new JsonObject
            {
                ["id"] = id,
                ["object"] = "response",
                ["created_at"] = created,
                ["status"] = status,
                ["background"] = false,
                ["completed_at"] = status is "completed" or "incomplete" ? _time.GetUtcNow().ToUnixTimeSeconds() : null,
                ["error"] = null,
                ["incomplete_details"] = status == "incomplete" ? new JsonObject { ["reason"] = "max_output_tokens" } : null,
                ["instructions"] = instructions,
                ["max_output_tokens"] = maxTokens == long.MaxValue ? null : maxTokens,
                ["model"] = model,
                ["output"] = withOutput ? output.DeepClone() : new JsonArray(),
                ["parallel_tool_calls"] = body["parallel_tool_calls"]?.DeepClone() ?? true,
                ["previous_response_id"] = previousId,
                ["prompt_cache_key"] = cacheKey.Length == 0 ? null : cacheKey,
                ["reasoning"] = new JsonObject { ["effort"] = effort, ["summary"] = null },
                ["service_tier"] = "default",
                ["store"] = store,
                ["temperature"] = body["temperature"]?.DeepClone() ?? 1.0,
                ["text"] = new JsonObject { ["format"] = formatNode.DeepClone(), ["verbosity"] = "medium" },
                ["tool_choice"] = body["tool_choice"]?.DeepClone() ?? "auto",
                ["tools"] = tools?.DeepClone() ?? new JsonArray(),
                ["top_p"] = body["top_p"]?.DeepClone() ?? 1.0,
                ["truncation"] = truncation,
                ["usage"] = usage,
                ["user"] = null,
                ["metadata"] = body["metadata"]?.DeepClone() ?? new JsonObject(),
            };
        }

        var finalStatus = truncated ? "incomplete" : "completed";
        var final = ResponseObject(finalStatus, withOutput: true, withUsage: true);
        if (store) Store(id, final, input, context, output);

        if (!stream)
        {
            await PaceAsync(first: true, outTokens, ct).ConfigureAwait(false);
            x.SetStatus(200);
            x.SetHeader("content-type", "application/json");
            await x.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(final, SimulatorJson.Default.JsonObject), ct).ConfigureAwait(false);
            return;
        }

        StartStream(x);
        var seq = 0;
        async Task Event(string type, JsonObject payload)
        {
            var data = new JsonObject { ["type"] = type, ["sequence_number"] = seq++ };
            foreach (var (k, v) in payload) data[k] = v?.DeepClone();
            var json = JsonSerializer.SerializeToUtf8Bytes(data, SimulatorJson.Default.JsonObject);
            var frame = new byte[7 + Encoding.UTF8.GetByteCount(type) + 7 + json.Length + 2];
            var n = Encoding.UTF8.GetBytes("event: " + type + "\ndata: ", frame);
            json.CopyTo(frame, n);
            frame[^2] = (byte)'\n';
            frame[^1] = (byte)'\n';
            await x.WriteAsync(frame, ct).ConfigureAwait(false);
        }

        await PaceAsync(first: true, 0, ct).ConfigureAwait(false);
        await Event("response.created", new JsonObject { ["response"] = ResponseObject("in_progress", false, false) }).ConfigureAwait(false);
        await Event("response.in_progress", new JsonObject { ["response"] = ResponseObject("in_progress", false, false) }).ConfigureAwait(false);
        for (var oi = 0; oi < output.Count; oi++)
        {
            var item = (JsonObject)output[oi]!;
            var itemId = item["id"]!.GetValue<string>();
            switch (item["type"]!.GetValue<string>())
            {
                case "reasoning":
                    await Event("response.output_item.added", new JsonObject { ["output_index"] = oi, ["item"] = item.DeepClone() }).ConfigureAwait(false);
                    await Event("response.output_item.done", new JsonObject { ["output_index"] = oi, ["item"] = item.DeepClone() }).ConfigureAwait(false);
                    break;
                case "function_call":
                    var args = item["arguments"]!.GetValue<string>();
                    var added = (JsonObject)item.DeepClone();
                    added["arguments"] = "";
                    added["status"] = "in_progress";
                    await Event("response.output_item.added", new JsonObject { ["output_index"] = oi, ["item"] = added }).ConfigureAwait(false);
                    foreach (var piece in SplitJson(args))
                    {
                        await PaceAsync(false, 1, ct).ConfigureAwait(false);
                        await Event("response.function_call_arguments.delta", new JsonObject { ["item_id"] = itemId, ["output_index"] = oi, ["delta"] = piece }).ConfigureAwait(false);
                    }
                    await Event("response.function_call_arguments.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = oi, ["name"] = item["name"]!.DeepClone(), ["arguments"] = args }).ConfigureAwait(false);
                    await Event("response.output_item.done", new JsonObject { ["output_index"] = oi, ["item"] = item.DeepClone() }).ConfigureAwait(false);
                    break;
                default:
                    var text = item["content"]![0]!["text"]!.GetValue<string>();
                    var empty = (JsonObject)item.DeepClone();
                    empty["content"] = new JsonArray();
                    empty["status"] = "in_progress";
                    await Event("response.output_item.added", new JsonObject { ["output_index"] = oi, ["item"] = empty }).ConfigureAwait(false);
                    JsonObject Part(string t) => new() { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray(), ["text"] = t };
                    await Event("response.content_part.added", new JsonObject { ["item_id"] = itemId, ["output_index"] = oi, ["content_index"] = 0, ["part"] = Part("") }).ConfigureAwait(false);
                    var firstPiece = true;
                    foreach (var piece in Chunks(text))
                    {
                        await PaceAsync(false, 1, ct).ConfigureAwait(false);
                        await Event("response.output_text.delta", new JsonObject { ["item_id"] = itemId, ["output_index"] = oi, ["content_index"] = 0, ["delta"] = piece, ["logprobs"] = new JsonArray() }).ConfigureAwait(false);
                        if (firstPiece && fault is { MidStream: true })
                        {
                            // as production sends it: the error nested under "error" (PROVIDER_API.md section 8)
                            await Event("error", new JsonObject
                            {
                                ["error"] = new JsonObject { ["type"] = "server_error", ["code"] = "server_error", ["message"] = "The server had an error while processing your request.", ["param"] = null },
                            }).ConfigureAwait(false);
                            return;
                        }
                        firstPiece = false;
                    }
                    await Event("response.output_text.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = oi, ["content_index"] = 0, ["text"] = text, ["logprobs"] = new JsonArray() }).ConfigureAwait(false);
                    await Event("response.content_part.done", new JsonObject { ["item_id"] = itemId, ["output_index"] = oi, ["content_index"] = 0, ["part"] = Part(text) }).ConfigureAwait(false);
                    await Event("response.output_item.done", new JsonObject { ["output_index"] = oi, ["item"] = item.DeepClone() }).ConfigureAwait(false);
                    break;
            }
        }
        await Event(truncated ? "response.incomplete" : "response.completed", new JsonObject { ["response"] = final }).ConfigureAwait(false);
    }

    private void Store(string id, JsonObject response, JsonArray input, JsonArray context, JsonArray output)
    {
        foreach (var item in output) context.Add(item!.DeepClone());
        _responses[id] = new StoredResponse(JsonSerializer.SerializeToUtf8Bytes(response, SimulatorJson.Default.JsonObject), (JsonArray)input.DeepClone(), context);
        _responseOrder.Enqueue(id);
        while (_responseOrder.Count > MaxStoredResponses && _responseOrder.TryDequeue(out var old)) _responses.TryRemove(old, out _);
    }

    /// <summary>One input item, checked and normalized (a bare <c>{role, content}</c> is a message; string content becomes one <c>input_text</c>).</summary>
    private static JsonObject InputItem(JsonNode? node, int i)
    {
        const Dialect d = Dialect.OpenAI;
        if (node is not JsonObject o) throw Bad(d, $"Invalid type for 'input[{i}]': expected an object.", $"input[{i}]");
        var item = (JsonObject)o.DeepClone();
        var type = item["type"] switch
        {
            null => "message",
            JsonValue tv when tv.TryGetValue<string>(out var t) => t,
            _ => throw Bad(d, $"Invalid type for 'input[{i}].type': expected a string.", $"input[{i}].type"),
        };
        item["type"] = type;
        switch (type)
        {
            case "message":
                var role = item["role"] is JsonValue rv && rv.TryGetValue<string>(out var r) ? r : null;
                if (role is not ("user" or "assistant" or "system" or "developer"))
                    throw Bad(d, $"Invalid value for 'input[{i}].role': expected one of 'user', 'assistant', 'system' or 'developer'.", $"input[{i}].role");
                switch (item["content"])
                {
                    case JsonValue cv when cv.TryGetValue<string>(out var s):
                        item["content"] = new JsonArray(new JsonObject { ["type"] = role == "assistant" ? "output_text" : "input_text", ["text"] = s });
                        break;
                    case JsonArray parts:
                        for (var p = 0; p < parts.Count; p++)
                        {
                            if (parts[p] is not JsonObject part || part["type"] is not JsonValue pt || !pt.TryGetValue<string>(out var ptype))
                                throw Bad(d, $"Missing required parameter: 'input[{i}].content[{p}].type'.", $"input[{i}].content[{p}].type");
                            if (ptype is not ("input_text" or "output_text" or "input_image" or "input_file" or "refusal" or "input_audio"))
                                throw Bad(d, $"Invalid value: '{Truncate(ptype, 40)}'. Supported values are: 'input_text', 'input_image', 'input_file' and 'output_text'.", $"input[{i}].content[{p}].type");
                            if (ptype is "input_text" or "output_text" && part["text"] is not JsonValue)
                                throw Bad(d, $"Missing required parameter: 'input[{i}].content[{p}].text'.", $"input[{i}].content[{p}].text");
                        }
                        break;
                    default:
                        throw Bad(d, $"Invalid type for 'input[{i}].content': expected a string or an array of content parts.", $"input[{i}].content");
                }
                item["status"] ??= "completed";
                break;
            case "function_call":
                foreach (var f in new[] { "call_id", "name", "arguments" })
                    if (item[f] is not JsonValue fv || !fv.TryGetValue<string>(out _)) throw Bad(d, $"Missing required parameter: 'input[{i}].{f}'.", $"input[{i}].{f}");
                break;
            case "function_call_output":
                if (item["call_id"] is not JsonValue cid || !cid.TryGetValue<string>(out _)) throw Bad(d, $"Missing required parameter: 'input[{i}].call_id'.", $"input[{i}].call_id");
                if (item["output"] is not (JsonValue or JsonArray)) throw Bad(d, $"Missing required parameter: 'input[{i}].output'.", $"input[{i}].output");
                break;
            case "reasoning" or "item_reference" or "compaction":
                break;
            default:
                if (!type.EndsWith("_call", StringComparison.Ordinal) && !type.EndsWith("_call_output", StringComparison.Ordinal))
                    throw Bad(d, $"Invalid value for 'input[{i}].type': '{Truncate(type, 40)}' is not an input item type.", $"input[{i}].type");
                break;
        }
        return item;
    }

    /// <summary>The text an item puts in the prompt.</summary>
    private static string ItemText(JsonObject item)
    {
        switch (item["type"]?.GetValue<string>())
        {
            case "message":
                return item["content"] is JsonArray parts
                    ? string.Concat(parts.Select(p => p?["text"] is JsonValue t && t.TryGetValue<string>(out var s) ? s : p?.ToJsonString()))
                    : "";
            case "function_call":
                return item["name"]?.GetValue<string>() + item["arguments"]?.GetValue<string>();
            case "function_call_output":
                return item["output"] is JsonValue ov && ov.TryGetValue<string>(out var o) ? o : item["output"]?.ToJsonString() ?? "";
            default:
                return item.ToJsonString();
        }
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(JsonObject))]
internal sealed partial class SimulatorJson : System.Text.Json.Serialization.JsonSerializerContext;
