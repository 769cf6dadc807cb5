using Bursar.Core.Metering;
using System.IO.Pipelines;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;
using Bursar.Providers.Translation;
using Bursar.Providers.Upstream;

namespace Bursar.Providers.Tests;

/// <summary>
/// Upstream frames as other servers write them (Python's json.dumps spacing, pretty-printed JSON split over several
/// data: lines, other key orders, \u escapes, unknown fields, data: without a space): metering gives the same tokens
/// for every variant, and the usage chunk Bursar asked for never reaches a caller who did not ask for it.
/// </summary>
public sealed class StreamFormattingTests
{
    private static readonly string[] OpenAIFrames =
    [
        """{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}""",
        """{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"content":"Say \"hi\" to the"},"finish_reason":null}],"usage":null}""",
        """{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"lookup","arguments":""}}]},"finish_reason":null}],"usage":null}""",
        """{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":1}"}}]},"finish_reason":null}],"usage":null}""",
        """{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}""",
        """{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":50,"total_tokens":1250,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":10}}}""",
    ];

    private static readonly (string Event, string Data)[] AnthropicFrames =
    [
        ("message_start", """{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"""),
        ("content_block_start", """{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"""),
        ("content_block_delta", """{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Say \"hi\""}}"""),
        ("content_block_stop", """{"type":"content_block_stop","index":0}"""),
        ("content_block_start", """{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"lookup","input":{}}}"""),
        ("content_block_delta", """{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}"""),
        ("content_block_stop", """{"type":"content_block_stop","index":1}"""),
        ("message_delta", """{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}"""),
        ("message_stop", """{"type":"message_stop"}"""),
    ];

    public enum Style { Compact, Python, Pretty, Reversed, Escaped, ExtraFields, NoSpaceAfterData, Crlf }

    public static TheoryData<Style> Styles => new(Enum.GetValues<Style>());

    /// <summary>Writes <paramref name="node"/> the way <paramref name="style"/>'s server would.</summary>
    private static string Format(JsonNode? node, Style style, int depth = 0)
    {
        var colon = style is Style.Python or Style.Pretty ? ": " : ":";
        var comma = style == Style.Python ? ", " : ",";
        var nl = style == Style.Pretty ? "\n" + new string(' ', 2 * (depth + 1)) : "";
        var end = style == Style.Pretty ? "\n" + new string(' ', 2 * depth) : "";
        switch (node)
        {
            case null:
                return "null";
            case JsonObject o:
                var props = o.Select(p => (p.Key, p.Value)).ToList();
                if (style == Style.Reversed) props.Reverse();
                var parts = props.Select(p => Str(p.Key, style, key: true) + colon + Format(p.Value, style, depth + 1)).ToList();
                if (style == Style.ExtraFields) parts.Insert(0, "\"x_vendor\"" + colon + "{\"trace\":[1,2,{\"usage\":{\"prompt_tokens\":999}}],\"choices\":[]}");
                return parts.Count == 0 ? "{}" : "{" + nl + string.Join(comma + nl, parts) + end + "}";
            case JsonArray a:
                return a.Count == 0 ? "[]" : "[" + nl + string.Join(comma + nl, a.Select(x => Format(x, style, depth + 1))) + end + "]";
            default:
                var v = node.AsValue();
                return v.TryGetValue<string>(out var s) ? Str(s, style, key: false) : node.ToJsonString();
        }
    }

    private static string Str(string s, Style style, bool key)
    {
        var sb = new StringBuilder("\"");
        foreach (var ch in s)
        {
            if (style == Style.Escaped && (ch == '"' || (key && ch is 'a' or 'e' or 'o')))
                sb.Append("\\u").Append(((int)ch).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
            else if (ch == '"') sb.Append("\\\"");
            else if (ch == '\\') sb.Append("\\\\");
            else sb.Append(ch);
        }
        return sb.Append('"').ToString();
    }

    private static string Frame(string? eventName, string json, Style style)
    {
        var formatted = Format(JsonNode.Parse(json), style);
        var data = style == Style.NoSpaceAfterData ? "data:" : "data: ";
        var sb = new StringBuilder();
        if (eventName is not null) sb.Append(style == Style.NoSpaceAfterData ? "event:" : "event: ").Append(eventName).Append('\n');
        foreach (var line in formatted.Split('\n')) sb.Append(data).Append(line).Append('\n');
        sb.Append('\n');
        return style == Style.Crlf ? sb.ToString().Replace("\n", "\r\n") : sb.ToString();
    }

    private static string OpenAIStream(Style style) =>
        string.Concat(OpenAIFrames.Select(f => Frame(null, f, style))) + (style switch { Style.NoSpaceAfterData => "data:[DONE]\n\n", Style.Crlf => "data: [DONE]\r\n\r\n", _ => "data: [DONE]\n\n" });

    private static string AnthropicStream(Style style) => string.Concat(AnthropicFrames.Select(f => Frame(f.Event, f.Data, style)));

    internal static async Task<string> Pump(Stream upstream, SseStreamHandler handler)
    {
        var output = new MemoryStream();
        var writer = PipeWriter.Create(output);
        await SsePump.PumpAsync(upstream, writer, handler, default);
        await writer.CompleteAsync();
        return Encoding.UTF8.GetString(output.ToArray());
    }

    private static Task<string> Pump(string input, SseStreamHandler handler) => Pump(new TrickleStream(Encoding.UTF8.GetBytes(input), 5), handler);

    [Theory]
    [MemberData(nameof(Styles))]
    public async Task OpenAI_pass_through_meters_every_formatting_alike_and_drops_the_injected_usage_chunk(Style style)
    {
        var summary = new CallSummary();
        var output = await Pump(OpenAIStream(style), new OpenAIMeteringHandler(summary, TimeProvider.System, dropUsageChunk: true));
        Assert.True(summary.UsageFinal, style.ToString());
        Assert.Equal(176, summary.Usage.InputTokens);
        Assert.Equal(1024, summary.Usage.CacheReadTokens);
        Assert.Equal(50, summary.Usage.OutputTokens);
        Assert.Equal(10, summary.Usage.ReasoningTokens);
        Assert.Equal("stop", summary.FinishReason);
        Assert.Equal("gpt-4.1-2025-04-14", summary.Model);
        Assert.Equal(1, summary.ToolCalls);
        Assert.Equal(2, summary.Deltas); // the text and the arguments; role-only and empty deltas carry no token
        Assert.Equal("Say \"hi\" to thelookup{\"q\":1}", summary.OutputText); // the tool name is generated output too
        Assert.Null(summary.ErrorType);
        Assert.NotNull(summary.FirstTokenTimestamp);
        // the caller did not ask for usage: no usage chunk and no error event reach it
        Assert.DoesNotContain("1200", output);
        Assert.DoesNotContain("completion_tokens", output);
        Assert.DoesNotContain("\"error\"", output);
        Assert.EndsWith("[DONE]" + (style == Style.Crlf ? "\r\n\r\n" : "\n\n"), output.Replace("data:[DONE]", "data: [DONE]"));
    }

    [Theory]
    [MemberData(nameof(Styles))]
    public async Task OpenAI_usage_chunk_reaches_a_caller_who_asked_for_it(Style style)
    {
        var summary = new CallSummary();
        var output = await Pump(OpenAIStream(style), new OpenAIMeteringHandler(summary, TimeProvider.System, dropUsageChunk: false));
        Assert.Contains("1200", output);
        Assert.Equal(50, summary.Usage.OutputTokens);
    }

    [Theory]
    [MemberData(nameof(Styles))]
    public async Task Anthropic_pass_through_meters_every_formatting_alike(Style style)
    {
        var summary = new CallSummary();
        var output = await Pump(AnthropicStream(style), new AnthropicMeteringHandler(summary, TimeProvider.System));
        Assert.Equal(AnthropicStream(style), output);
        Assert.True(summary.UsageFinal);
        Assert.Equal(12, summary.Usage.InputTokens);
        Assert.Equal(2000, summary.Usage.CacheReadTokens);
        Assert.Equal(100, summary.Usage.CacheWriteTokens);
        Assert.Equal(30, summary.Usage.OutputTokens);
        Assert.Equal(1, summary.ToolCalls);
        Assert.Equal(2, summary.Deltas);
        Assert.Equal("Say \"hi\"{\"q\":1}", summary.OutputText);
        Assert.Equal("tool_use", summary.FinishReason);
        Assert.Null(summary.ErrorType);
    }

    [Theory]
    [MemberData(nameof(Styles))]
    public async Task Translators_meter_every_formatting_alike(Style style)
    {
        var s1 = new CallSummary();
        var toAnthropic = await Pump(OpenAIStream(style), new OpenAIToAnthropicStream(s1, TimeProvider.System, estimatedInputTokens: 1100));
        Assert.Equal(50, s1.Usage.OutputTokens);
        Assert.Equal(1, s1.ToolCalls);
        Assert.Contains("\"text\":\"Say \\u0022hi\\u0022 to the\"", toAnthropic);
        Assert.Contains("event: message_stop", toAnthropic);
        Assert.Contains("\"input_tokens\":1100", toAnthropic); // message_start carries the pre-call estimate

        var s2 = new CallSummary();
        var toOpenAI = await Pump(AnthropicStream(style), new AnthropicToOpenAIStream(s2, TimeProvider.System, includeUsage: false, created: 1));
        Assert.Equal(30, s2.Usage.OutputTokens);
        Assert.Equal(12, s2.Usage.InputTokens);
        Assert.Equal(1, s2.ToolCalls);
        Assert.Equal(2, s2.Deltas);
        Assert.DoesNotContain("\"usage\"", toOpenAI);
        Assert.EndsWith("data: [DONE]\n\n", toOpenAI);
    }

    [Fact]
    public async Task Translated_message_start_carries_the_input_estimate_not_zero()
    {
        var output = await Pump(OpenAIStream(Style.Compact), new OpenAIToAnthropicStream(new CallSummary(), TimeProvider.System, estimatedInputTokens: 1234));
        var start = output.Split("\n\n")[0];
        Assert.StartsWith("event: message_start", start);
        Assert.Contains("\"input_tokens\":1234", start);
    }

    // ---- broken streams

    /// <summary>Returns the bytes, then fails the next read as a reset connection does.</summary>
    private sealed class DroppingStream(byte[] data) : MemoryStream(data)
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            if (Position >= Length) throw new IOException("The response ended prematurely. (ResponseEnded)");
            return base.ReadAsync(buffer[..Math.Min(buffer.Length, 11)], ct);
        }
    }

    private static string Cut(string stream, int frames) => string.Concat(stream.Split("\n\n").Take(frames).Select(f => f + "\n\n"));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_dropped_OpenAI_stream_ends_with_an_error_frame_not_a_clean_end(bool dropped)
    {
        var summary = new CallSummary();
        var input = Cut(OpenAIStream(Style.Python), 2);
        Stream upstream = dropped ? new DroppingStream(Encoding.UTF8.GetBytes(input)) : new TrickleStream(Encoding.UTF8.GetBytes(input), 5);
        var output = await Pump(upstream, new OpenAIMeteringHandler(summary, TimeProvider.System, dropUsageChunk: true));
        var last = output.TrimEnd('\n').Split("\n\n")[^1];
        Assert.StartsWith("data: {\"error\":{", last);
        Assert.Contains("\"type\":\"server_error\"", last);
        Assert.DoesNotContain("data: [DONE]", output);
        Assert.Equal(dropped ? "stream_interrupted" : "stream_truncated", summary.ErrorType);
        Assert.False(summary.UsageFinal);
        Assert.Equal(1, summary.Deltas);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_dropped_Anthropic_stream_ends_with_an_error_event_not_a_clean_end(bool dropped)
    {
        var summary = new CallSummary();
        var input = Cut(AnthropicStream(Style.Compact), 3);
        Stream upstream = dropped ? new DroppingStream(Encoding.UTF8.GetBytes(input)) : new TrickleStream(Encoding.UTF8.GetBytes(input), 5);
        var output = await Pump(upstream, new AnthropicMeteringHandler(summary, TimeProvider.System));
        var last = output.TrimEnd('\n').Split("\n\n")[^1];
        Assert.StartsWith("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":", last);
        Assert.DoesNotContain("event: message_stop", output);
        Assert.Equal(dropped ? "stream_interrupted" : "stream_truncated", summary.ErrorType);
    }

    [Fact]
    public async Task Dropped_translated_streams_end_with_the_callers_error_event()
    {
        var s1 = new CallSummary();
        var toAnthropic = await Pump(new DroppingStream(Encoding.UTF8.GetBytes(Cut(OpenAIStream(Style.Compact), 2))), new OpenAIToAnthropicStream(s1, TimeProvider.System, 10));
        Assert.Contains("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"", toAnthropic);
        Assert.DoesNotContain("event: message_stop", toAnthropic);
        var s2 = new CallSummary();
        var toOpenAI = await Pump(new DroppingStream(Encoding.UTF8.GetBytes(Cut(AnthropicStream(Style.Compact), 3))), new AnthropicToOpenAIStream(s2, TimeProvider.System, false, 1));
        Assert.Contains("data: {\"error\":{", toOpenAI);
        Assert.DoesNotContain("data: [DONE]", toOpenAI);
        Assert.Equal("stream_interrupted", s2.ErrorType);
    }

    // ---- configuration

    [Fact]
    public void Overriding_the_built_in_anthropic_deployment_keeps_its_dialect()
    {
        var configured = new ProvidersOptions();
        configured.Deployments["anthropic"] = new DeploymentOptions { BaseUrl = "https://proxy.example.com", Models = ["claude-*"] };
        configured.Deployments["local"] = new DeploymentOptions { BaseUrl = "http://localhost:8000/v1", Models = ["llama-*"] };
        var o = ProvidersOptions.WithDefaults(configured);
        Assert.Equal(Dialect.Anthropic, o.Deployments["anthropic"].ParsedDialect);
        Assert.Equal(Dialect.OpenAI, o.Deployments["local"].ParsedDialect);
        configured.Deployments["anthropic"].Dialect = "openai"; // said explicitly: an OpenAI-compatible proxy for Claude
        Assert.Equal(Dialect.OpenAI, ProvidersOptions.WithDefaults(configured).Deployments["anthropic"].ParsedDialect);
        configured.Deployments["anthropic"].Dialect = "antropic";
        Assert.Throws<InvalidOperationException>(() => ProvidersOptions.WithDefaults(configured));
    }

    [Fact]
    public void A_body_of_the_other_dialect_is_not_read_as_a_response()
    {
        var anthropicAnswer = """{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":3}}"""u8;
        Assert.False(UsageReader.TryReadResponse(Dialect.OpenAI, anthropicAnswer, new CallSummary()));
        var s = new CallSummary();
        Assert.True(UsageReader.TryReadResponse(Dialect.Anthropic, anthropicAnswer, s));
        Assert.Equal(3, s.Usage.OutputTokens);
    }
}

/// <summary>Returns a few bytes per read, so frames straddle reads as on a real socket.</summary>
internal sealed class TrickleStream(byte[] data, int chunk) : MemoryStream(data)
{
    public override int Read(byte[] buffer, int offset, int count) => base.Read(buffer, offset, Math.Min(count, chunk));
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => base.ReadAsync(buffer[..Math.Min(buffer.Length, chunk)], ct);
}
