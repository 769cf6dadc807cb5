using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;

namespace Bursar.Providers.Simulator;

public sealed partial class ProviderSimulator
{
    private const int ImageTokens = 1_000;
    private const int MessageOverheadTokens = 3;
    private static readonly TimeSpan FiveMinutes = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan OneHour = TimeSpan.FromHours(1);

    private sealed record AnthropicPrompt(string Model, List<PromptBlock> Blocks, string AllText, string LastUserText, bool LastIsToolResult, string? ToolResultText);

    /// <summary>The hash of a prompt block's JSON without its cache_control: written once into one buffer, no clone of the block and no string of it (a 5 MB block made three copies).</summary>
    private static ulong HashBlock(JsonNode content) => PromptCacheModel.HashBytes(BlockJson(content).WrittenSpan);

    /// <summary>A block's JSON as it is billed: without its cache_control (a breakpoint is not prompt text).</summary>
    private static string BilledJson(JsonNode content) => Encoding.UTF8.GetString(BlockJson(content).WrittenSpan);

    private static System.Buffers.ArrayBufferWriter<byte> BlockJson(JsonNode content)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            if (content is JsonObject o)
            {
                w.WriteStartObject();
                foreach (var (name, value) in o)
                {
                    if (name == "cache_control") continue;
                    w.WritePropertyName(name);
                    if (value is null) w.WriteNullValue();
                    else value.WriteTo(w);
                }
                w.WriteEndObject();
            }
            else content.WriteTo(w);
        }
        return buffer;
    }

    private AnthropicPrompt ReadAnthropicPrompt(JsonObject body, bool requireMaxTokens)
    {
        const Dialect d = Dialect.Anthropic;
        if (body["model"] is not JsonValue mv || !mv.TryGetValue<string>(out var model) || string.IsNullOrWhiteSpace(model))
            throw Bad(d, body.ContainsKey("model") ? "model: Input should be a valid string" : "model: Field required");
        if (requireMaxTokens)
        {
            if (!body.ContainsKey("max_tokens")) throw Bad(d, "max_tokens: Field required");
            if (body["max_tokens"] is not JsonValue mt || !mt.TryGetValue<long>(out var max) || max < 0)
                throw Bad(d, "max_tokens: Input should be a valid integer greater than or equal to 0");
        }
        if (body["messages"] is not JsonArray messages) throw Bad(d, body.ContainsKey("messages") ? "messages: Input should be a valid list" : "messages: Field required");
        if (messages.Count == 0) throw Bad(d, "messages: at least one message is required");
        if (!Knows(d, model)) throw new SimulatorRequestException(d, new ProviderError(404, $"model: {model}"));
        if (body["stop_sequences"] is { } ss && (ss is not JsonArray ssa || ssa.Any(s => s is not JsonValue sv || !sv.TryGetValue<string>(out _))))
            throw Bad(d, "stop_sequences: Input should be a valid list of strings");
        if (body["temperature"] is { } temp && (temp is not JsonValue tv || !tv.TryGetValue<double>(out var t) || t is < 0 or > 1))
            throw Bad(d, "temperature: Input should be a number between 0 and 1");
        if (body["stream"] is { } st && (st is not JsonValue sv2 || !sv2.TryGetValue<bool>(out _)))
            throw Bad(d, "stream: Input should be a valid boolean");

        var blocks = new List<PromptBlock>();
        var all = new StringBuilder();
        var breakpoints = 0;

        TimeSpan? Breakpoint(JsonNode? block, string where)
        {
            if (block is not JsonObject o || o["cache_control"] is not { } cc) return null;
            if (cc is not JsonObject cco || cco["type"]?.GetValue<string>() != "ephemeral")
                throw Bad(d, $"{where}.cache_control: Input tag must be 'ephemeral'");
            breakpoints++;
            var ttl = cco["ttl"]?.GetValue<string>();
            return ttl switch
            {
                null or "5m" => FiveMinutes,
                "1h" => OneHour,
                _ => throw Bad(d, $"{where}.cache_control.ttl: Input should be '5m' or '1h'"),
            };
        }

        void Add(JsonNode content, int tokens, TimeSpan? bp) => blocks.Add(new PromptBlock(HashBlock(content), tokens, bp));

        if (body["tools"] is { } toolsNode)
        {
            if (toolsNode is not JsonArray tools) throw Bad(d, "tools: Input should be a valid list");
            for (var i = 0; i < tools.Count; i++)
            {
                if (tools[i] is not JsonObject tool || tool["name"] is not JsonValue) throw Bad(d, $"tools.{i}.name: Field required");
                Add(tool, _counter.Count(model, BilledJson(tool)), Breakpoint(tool, $"tools.{i}"));
            }
        }
        switch (body["system"])
        {
            case null:
                break;
            case JsonValue sys when sys.TryGetValue<string>(out var s):
                Add(sys, _counter.Count(model, s), null);
                all.Append(s).Append('\n');
                break;
            case JsonArray sysBlocks:
                for (var i = 0; i < sysBlocks.Count; i++)
                {
                    if (sysBlocks[i] is not JsonObject sb || sb["text"] is not JsonValue stv || !stv.TryGetValue<string>(out var s))
                        throw Bad(d, $"system.{i}: Input should be a text block with a 'text' string");
                    Add(sb, _counter.Count(model, s), Breakpoint(sb, $"system.{i}"));
                    all.Append(s).Append('\n');
                }
                break;
            default:
                throw Bad(d, "system: Input should be a valid string or list of text blocks");
        }

        string lastUser = "";
        var lastIsToolResult = false;
        string? toolResultText = null;
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not JsonObject msg) throw Bad(d, $"messages.{i}: Input should be a valid dictionary");
            var role = msg["role"] is JsonValue rv && rv.TryGetValue<string>(out var r) ? r : null;
            if (role is not ("user" or "assistant" or "system")) throw Bad(d, $"messages.{i}.role: Input should be 'user' or 'assistant'");
            var isLast = i == messages.Count - 1;
            switch (msg["content"])
            {
                case JsonValue cv when cv.TryGetValue<string>(out var text):
                    Add(cv, _counter.Count(model, text) + MessageOverheadTokens, null);
                    all.Append(text).Append('\n');
                    if (role == "user") { lastUser = text; if (isLast) lastIsToolResult = false; }
                    break;
                case JsonArray parts:
                    if (parts.Count == 0) throw Bad(d, $"messages.{i}.content: List should have at least 1 item");
                    var sbText = new StringBuilder();
                    var hasToolResult = false;
                    for (var j = 0; j < parts.Count; j++)
                    {
                        if (parts[j] is not JsonObject part || part["type"] is not JsonValue ptv || !ptv.TryGetValue<string>(out var ptype))
                            throw Bad(d, $"messages.{i}.content.{j}.type: Field required");
                        int tokens;
                        switch (ptype)
                        {
                            case "text":
                                var tx = part["text"] is JsonValue txv && txv.TryGetValue<string>(out var tt) ? tt : throw Bad(d, $"messages.{i}.content.{j}.text: Field required");
                                tokens = _counter.Count(model, tx);
                                sbText.Append(tx);
                                break;
                            case "image":
                                if (part["source"] is not JsonObject) throw Bad(d, $"messages.{i}.content.{j}.source: Field required");
                                tokens = ImageTokens;
                                break;
                            case "tool_result":
                                hasToolResult = true;
                                var rc = part["content"];
                                var rtext = rc is JsonValue rcv && rcv.TryGetValue<string>(out var rs) ? rs : rc?.ToJsonString() ?? "";
                                toolResultText = rtext;
                                tokens = _counter.Count(model, rtext) + MessageOverheadTokens;
                                break;
                            default:
                                tokens = _counter.Count(model, BilledJson(part));
                                break;
                        }
                        if (j == 0) tokens += MessageOverheadTokens;
                        Add(part, tokens, Breakpoint(part, $"messages.{i}.content.{j}"));
                    }
                    all.Append(sbText).Append('\n');
                    if (role == "user")
                    {
                        if (sbText.Length > 0) lastUser = sbText.ToString();
                        if (isLast) lastIsToolResult = hasToolResult;
                    }
                    break;
                default:
                    throw Bad(d, $"messages.{i}.content: Input should be a valid string or list of content blocks");
            }
        }
        if (body["cache_control"] is JsonObject top)
        {
            // automatic caching: a breakpoint on the last cacheable block
            breakpoints++;
            var ttl = top["ttl"]?.GetValue<string>() == "1h" ? OneHour : FiveMinutes;
            if (blocks.Count > 0 && blocks[^1].Breakpoint is null) blocks[^1] = blocks[^1] with { Breakpoint = ttl };
        }
        if (breakpoints > 4)
            throw Bad(d, $"A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}.");
        return new AnthropicPrompt(model, blocks, all.ToString(), lastUser, lastIsToolResult, toolResultText);
    }

    private async Task CountTokensAsync(SimulatorExchange x, CancellationToken ct)
    {
        var body = ParseBody(x, Dialect.Anthropic);
        var p = ReadAnthropicPrompt(body, requireMaxTokens: false);
        var total = p.Blocks.Sum(b => (long)b.Tokens);
        await WriteObjectAsync(x, w => w.WriteNumber("input_tokens", total), ct).ConfigureAwait(false);
    }

    private async Task MessagesAsync(SimulatorExchange x, CancellationToken ct)
    {
        var body = ParseBody(x, Dialect.Anthropic);
        if (string.IsNullOrEmpty(x.Header("x-api-key")) && string.IsNullOrEmpty(x.Header("authorization")))
            throw new SimulatorRequestException(Dialect.Anthropic, new ProviderError(401, "x-api-key header is required"));
        // context management: a compaction block sent back replaces what precedes it; the clearing and compaction edits change what the model reads
        var edits = ReadContextEdits(body, x);
        var read = AfterCompactionBlock(body);
        var p = ReadAnthropicPrompt(read, requireMaxTokens: true);
        ContextApplied? applied = null;
        if (edits is { Clear: not null } or { Compact: not null })
        {
            applied = ApplyContextEdits(read, edits, p.Model);
            if (!ReferenceEquals(applied.Body, read)) p = ReadAnthropicPrompt(applied.Body, requireMaxTokens: true);
        }
        var paused = applied is { Paused: true };
        var structured = ReadStructuredFormat(body, Dialect.Anthropic, p.AllText, x);
        var maxTokens = body["max_tokens"]!.GetValue<long>();
        var stream = body["stream"]?.GetValue<bool>() ?? false;
        var fault = TakeFault(p.AllText);
        if (fault is { MidStream: false }) throw new SimulatorRequestException(Dialect.Anthropic, FaultError(fault));

        var minCache = (int)(_catalog.Find(p.Model).Price?.PromptCacheMinTokens ?? _options.DefaultAnthropicMinCacheTokens);
        var cache = paused ? default : Cache.Anthropic(p.Model, p.Blocks, minCache);

        // decide the answer: a tool call, or text
        JsonObject? toolUse = null;
        var tools = body["tools"] as JsonArray;
        if (body["tool_choice"] is { } tc && tc is not JsonObject) throw Bad(Dialect.Anthropic, "tool_choice: Input should be a valid dictionary");
        var choice = body["tool_choice"] as JsonObject;
        var choiceType = choice?["type"]?.GetValue<string>() ?? "auto";
        if (choiceType is not ("auto" or "any" or "tool" or "none"))
            throw Bad(Dialect.Anthropic, $"tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not '{choiceType}'");
        // "auto" calls the first tool unless the last turn is a tool's result; "any" and "tool" always call one; "none" never does
        if (!paused && tools is { Count: > 0 } && (choiceType is "any" or "tool" || (choiceType == "auto" && !p.LastIsToolResult)) && maxTokens > 0)
        {
            var name = choiceType == "tool" ? choice!["name"]?.GetValue<string>() : null;
            var tool = (name is null ? tools[0] : tools.FirstOrDefault(t => t?["name"]?.GetValue<string>() == name)) as JsonObject
                ?? throw Bad(Dialect.Anthropic, $"tool_choice.name: no tool named '{name}' in tools");
            toolUse = new JsonObject
            {
                ["type"] = "tool_use",
                ["id"] = NextId("toolu_sim_"),
                ["name"] = tool["name"]!.GetValue<string>(),
                ["input"] = ToolArguments(tool["input_schema"]),
            };
        }
        string text;
        int outTokens;
        string stopReason;
        string? stopSeq = null;
        if (paused)
        {
            // pause_after_compaction: the answer is the compaction block alone
            (text, outTokens, stopReason) = ("", 0, "compaction");
        }
        else if (toolUse is not null)
        {
            text = "";
            outTokens = _counter.Count(p.Model, toolUse.ToJsonString());
            stopReason = "tool_use";
        }
        else if (structured is not null)
        {
            // structured outputs: the JSON in a text block, valid against the schema unless max_tokens cuts it
            (text, outTokens, var truncated) = Structured(p.Model, StructuredAnswer(structured, p.LastUserText), maxTokens);
            stopReason = truncated ? "max_tokens" : "end_turn";
        }
        else
        {
            var stops = (body["stop_sequences"] as JsonArray)?.Select(s => s!.GetValue<string>()).ToArray() ?? [];
            var answer = TextAnswer(p.Model, p.LastUserText, p.AllText, maxTokens, p.LastIsToolResult ? p.ToolResultText : null, stops);
            (text, outTokens, stopSeq) = (answer.Text, answer.Tokens, answer.Stop);
            stopReason = stopSeq is not null ? "stop_sequence" : answer.Truncated ? "max_tokens" : "end_turn";
        }
        var id = NextId("msg_sim_");
        var reqId = NextId("req_sim_");
        x.SetHeader("request-id", reqId);

        if (!stream)
        {
            await WriteAnswerAsync(x, outTokens, w =>
            {
                w.WriteString("id", id);
                w.WriteString("type", "message");
                w.WriteString("role", "assistant");
                w.WriteString("model", p.Model);
                w.WriteStartArray("content");
                if (applied?.Summary is { } summary) WriteCompactionBlock(w, summary);
                if (paused) { }
                else if (toolUse is not null) toolUse.WriteTo(w);
                else
                {
                    w.WriteStartObject();
                    w.WriteString("type", "text");
                    w.WriteString("text", text);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteString("stop_reason", stopReason);
                if (stopSeq is null) w.WriteNull("stop_sequence"); else w.WriteString("stop_sequence", stopSeq);
                WriteAnthropicUsage(w, cache, outTokens, full: true, iw => WriteIterations(iw, applied, edits, cache, outTokens, p.Model));
                if (edits?.Clear is not null) WriteAppliedEdits(w, applied);
            }, ct).ConfigureAwait(false);
            return;
        }

        StartStream(x);
        await Event(x, "message_start", w =>
        {
            w.WriteString("type", "message_start");
            w.WriteStartObject("message");
            w.WriteString("id", id);
            w.WriteString("type", "message");
            w.WriteString("role", "assistant");
            w.WriteString("model", p.Model);
            w.WriteStartArray("content");
            w.WriteEndArray();
            w.WriteNull("stop_reason");
            w.WriteNull("stop_sequence");
            WriteAnthropicUsage(w, cache, 1, full: true);
            w.WriteEndObject();
        }, ct).ConfigureAwait(false);
        var index = 0;
        if (applied?.Summary is { } streamedSummary)
        {
            // the compaction block first: start, one compaction_delta, stop
            await Event(x, "content_block_start", w =>
            {
                w.WriteString("type", "content_block_start");
                w.WriteNumber("index", 0);
                w.WriteStartObject("content_block");
                w.WriteString("type", "compaction");
                w.WriteNull("content");
                w.WriteNull("encrypted_content");
                w.WriteEndObject();
            }, ct).ConfigureAwait(false);
            await Event(x, "content_block_delta", w =>
            {
                w.WriteString("type", "content_block_delta");
                w.WriteNumber("index", 0);
                w.WriteStartObject("delta");
                w.WriteString("type", "compaction_delta");
                w.WriteString("content", streamedSummary);
                w.WriteNull("encrypted_content");
                w.WriteEndObject();
            }, ct).ConfigureAwait(false);
            await Event(x, "content_block_stop", w => { w.WriteString("type", "content_block_stop"); w.WriteNumber("index", 0); }, ct).ConfigureAwait(false);
            index = 1;
        }
        if (!paused) await Event(x, "content_block_start", w =>
        {
            w.WriteString("type", "content_block_start");
            w.WriteNumber("index", index);
            w.WritePropertyName("content_block");
            if (toolUse is not null)
            {
                w.WriteStartObject();
                w.WriteString("type", "tool_use");
                w.WriteString("id", toolUse["id"]!.GetValue<string>());
                w.WriteString("name", toolUse["name"]!.GetValue<string>());
                w.WriteStartObject("input");
                w.WriteEndObject();
                w.WriteEndObject();
            }
            else
            {
                w.WriteStartObject();
                w.WriteString("type", "text");
                w.WriteString("text", "");
                w.WriteEndObject();
            }
        }, ct).ConfigureAwait(false);
        await Event(x, "ping", w => w.WriteString("type", "ping"), ct).ConfigureAwait(false);

        var pieces = paused ? [] : toolUse is not null ? SplitJson(toolUse["input"]!.ToJsonString()) : Chunks(text).ToList();
        var first = true;
        foreach (var piece in pieces)
        {
            await PaceAsync(first, 1, ct).ConfigureAwait(false);
            await Event(x, "content_block_delta", w =>
            {
                w.WriteString("type", "content_block_delta");
                w.WriteNumber("index", index);
                w.WriteStartObject("delta");
                if (toolUse is not null)
                {
                    w.WriteString("type", "input_json_delta");
                    w.WriteString("partial_json", piece);
                }
                else
                {
                    w.WriteString("type", "text_delta");
                    w.WriteString("text", piece);
                }
                w.WriteEndObject();
            }, ct).ConfigureAwait(false);
            if (first && fault is { MidStream: true })
            {
                await Event(x, "error", w =>
                {
                    w.WriteString("type", "error");
                    w.WriteStartObject("error");
                    w.WriteString("type", "overloaded_error");
                    w.WriteString("message", "Overloaded");
                    w.WriteEndObject();
                }, ct).ConfigureAwait(false);
                return;
            }
            first = false;
        }
        if (!paused) await Event(x, "content_block_stop", w => { w.WriteString("type", "content_block_stop"); w.WriteNumber("index", index); }, ct).ConfigureAwait(false);
        await Event(x, "message_delta", w =>
        {
            w.WriteString("type", "message_delta");
            w.WriteStartObject("delta");
            w.WriteString("stop_reason", stopReason);
            if (stopSeq is null) w.WriteNull("stop_sequence"); else w.WriteString("stop_sequence", stopSeq);
            w.WriteEndObject();
            WriteAnthropicUsage(w, cache, outTokens, full: false, iw => WriteIterations(iw, applied, edits, cache, outTokens, p.Model));
            if (edits?.Clear is not null) WriteAppliedEdits(w, applied);
        }, ct).ConfigureAwait(false);
        await Event(x, "message_stop", w => w.WriteString("type", "message_stop"), ct).ConfigureAwait(false);
    }

    private static List<string> SplitJson(string json)
    {
        var mid = json.Length / 2;
        return json.Length < 4 ? [json] : [json[..mid], json[mid..]];
    }

    private static void WriteAnthropicUsage(Utf8JsonWriter w, CacheOutcome c, long output, bool full, Action<Utf8JsonWriter>? iterations = null)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("input_tokens", c.Input);
        w.WriteNumber("cache_creation_input_tokens", c.Write5m + c.Write1h);
        w.WriteNumber("cache_read_input_tokens", c.CacheRead);
        if (full)
        {
            w.WriteStartObject("cache_creation");
            w.WriteNumber("ephemeral_5m_input_tokens", c.Write5m);
            w.WriteNumber("ephemeral_1h_input_tokens", c.Write1h);
            w.WriteEndObject();
        }
        w.WriteNumber("output_tokens", output);
        if (full) w.WriteString("service_tier", "standard");
        iterations?.Invoke(w);
        w.WriteEndObject();
    }

    private static async Task Event(SimulatorExchange x, string name, Action<Utf8JsonWriter> data, CancellationToken ct)
    {
        var json = Json(w => { w.WriteStartObject(); data(w); w.WriteEndObject(); });
        var frame = new byte[json.Length + name.Length + 17];
        var n = Encoding.ASCII.GetBytes("event: " + name + "\ndata: ", frame);
        json.CopyTo(frame, n);
        frame[n + json.Length] = (byte)'\n';
        frame[n + json.Length + 1] = (byte)'\n';
        await x.WriteAsync(frame.AsMemory(0, n + json.Length + 2), ct).ConfigureAwait(false);
    }
}
