using Bursar.Core.Metering;
using System.IO.Pipelines;
using System.Text;
using BenchmarkDotNet.Attributes;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;

namespace Bursar.Benchmarks;

/// <summary>The per-request work the gateway adds: body scan, price lookup and cost, stream metering.</summary>
[MemoryDiagnoser]
public class HotPathBenchmarks
{
    private byte[] _openAIBody = [];
    private byte[] _anthropicStream = [];
    private PriceCatalog _catalog = PriceCatalog.Empty;
    private ModelPrice _sonnet = null!;
    private readonly TokenUsage _usage = TokenUsage.FromAnthropic(1200, 3000, 4096, 350, 2500, 1596);

    [GlobalSetup]
    public void Setup()
    {
        _openAIBody = Encoding.UTF8.GetBytes("""{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"What is the capital of France? Answer in one word."}],"max_tokens":64,"temperature":0,"stream":false}""");
        var sb = new StringBuilder();
        sb.Append("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n");
        sb.Append("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        for (var i = 0; i < 50; i++) sb.Append("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" word\"}}\n\n");
        sb.Append("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
        sb.Append("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":50}}\n\n");
        sb.Append("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        _anthropicStream = Encoding.UTF8.GetBytes(sb.ToString());
        _catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        _sonnet = _catalog.Find("claude-sonnet-4-5").Price!;
    }

    [Benchmark]
    public string? ScanRequestBody() => RequestScan.Run(_openAIBody, Dialect.OpenAI).Model;

    [Benchmark]
    public ModelPrice? FindDatedModelPrice() => _catalog.Find("claude-sonnet-4-5-20250929").Price;

    [Benchmark]
    public decimal ComputeCost() => CostCalculator.Compute(_sonnet, _usage).Total;

    [Benchmark]
    public async Task<long> MeterAnthropicStream56Events()
    {
        var summary = new CallSummary();
        var sink = PipeWriter.Create(Stream.Null);
        await SsePump.PumpAsync(new MemoryStream(_anthropicStream, writable: false), sink, new AnthropicMeteringHandler(summary, TimeProvider.System), default);
        return summary.Usage.OutputTokens;
    }
}
