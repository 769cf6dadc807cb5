using Bursar.Core.Metering;
using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;

namespace Bursar.Providers.Tests;

public sealed class MeteringTests
{
    // the sequence from PROVIDER_API.md section 1
    private const string AnthropicStream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":60,"ephemeral_1h_input_tokens":40},"output_tokens":1,"service_tier":"standard"}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type":"ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":30}}

        event: message_stop
        data: {"type":"message_stop"}


        """;

    private static async Task<string> Pump(string input, SseStreamHandler handler, int chunk = 7)
    {
        var bytes = Encoding.UTF8.GetBytes(input.Replace("\r\n", "\n"));
        var upstream = new TrickleStream(bytes, chunk);
        var output = new MemoryStream();
        var writer = PipeWriter.Create(output);
        await SsePump.PumpAsync(upstream, writer, handler, default);
        await writer.CompleteAsync();
        return Encoding.UTF8.GetString(output.ToArray());
    }

    /// <summary>Returns a few bytes per read, so frames straddle reads as on a real socket.</summary>
    private sealed class TrickleStream(byte[] data, int chunk) : MemoryStream(data)
    {
        public override int Read(byte[] buffer, int offset, int count) => base.Read(buffer, offset, Math.Min(count, chunk));
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => base.ReadAsync(buffer[..Math.Min(buffer.Length, chunk)], ct);
    }

    [Fact]
    public async Task Anthropic_usage_takes_message_start_then_cumulative_message_delta()
    {
        var summary = new CallSummary();
        var output = await Pump(AnthropicStream, new AnthropicMeteringHandler(summary, TimeProvider.System));
        Assert.Equal(AnthropicStream.Replace("\r\n", "\n"), output);
        Assert.True(summary.UsageSeen);
        Assert.Equal(12, summary.Usage.InputTokens);
        Assert.Equal(2000, summary.Usage.CacheReadTokens);
        Assert.Equal(60, summary.Usage.CacheWrite5mTokens);
        Assert.Equal(40, summary.Usage.CacheWrite1hTokens);
        Assert.Equal(30, summary.Usage.OutputTokens);
        Assert.Equal("end_turn", summary.FinishReason);
        Assert.Equal("claude-sonnet-4-5-20250929", summary.Model);
        Assert.NotNull(summary.FirstTokenTimestamp);
    }

    private const string OpenAIStream = """
        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

        data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":50,"total_tokens":1250,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":10}}}

        data: [DONE]


        """;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task OpenAI_final_usage_chunk_is_metered_and_removed_only_when_bursar_asked_for_it(bool injected)
    {
        var summary = new CallSummary();
        var output = await Pump(OpenAIStream, new OpenAIMeteringHandler(summary, TimeProvider.System, injected));
        Assert.Equal(176, summary.Usage.InputTokens);
        Assert.Equal(1024, summary.Usage.CacheReadTokens);
        Assert.Equal(50, summary.Usage.OutputTokens);
        Assert.Equal(10, summary.Usage.ReasoningTokens);
        Assert.Equal("stop", summary.FinishReason);
        Assert.Equal(injected, !output.Contains("\"choices\":[]"));
        Assert.EndsWith("data: [DONE]\n\n", output);
    }

    [Fact]
    public void Frames_split_on_blank_lines_including_crlf()
    {
        var seq = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes("event: a\r\ndata: {\"x\":1}\r\n\r\ndata: b\n\npartial"));
        Assert.True(SseFrames.TryTakeFrame(ref seq, out var f1));
        var scratch = new ArrayBufferWriter<byte>();
        SseFrames.Parse(f1.ToArray(), out var ev, out var data, scratch);
        Assert.Equal("a", Encoding.UTF8.GetString(ev));
        Assert.Equal("{\"x\":1}", Encoding.UTF8.GetString(data));
        Assert.True(SseFrames.TryTakeFrame(ref seq, out var f2));
        SseFrames.Parse(f2.ToArray(), out _, out var d2, scratch);
        Assert.Equal("b", Encoding.UTF8.GetString(d2));
        Assert.False(SseFrames.TryTakeFrame(ref seq, out _));
        Assert.Equal("partial", Encoding.UTF8.GetString(seq.ToArray()));
    }

    [Fact]
    public void Multi_line_data_is_joined()
    {
        var scratch = new ArrayBufferWriter<byte>();
        SseFrames.Parse("data: one\ndata: two\n\n"u8, out _, out var data, scratch);
        Assert.Equal("one\ntwo", Encoding.UTF8.GetString(data));
    }
}
