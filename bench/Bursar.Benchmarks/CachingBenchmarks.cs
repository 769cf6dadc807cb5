using System.Text;
using System.Text.Json.Nodes;
using BenchmarkDotNet.Attributes;
using Bursar.Core.Caching;
using Bursar.Core.Tokens;

namespace Bursar.Benchmarks;

/// <summary>Caching work on the request path: the exact-cache key, and breakpoint placement on a long prompt.</summary>
[MemoryDiagnoser]
public class CachingBenchmarks
{
    private byte[] _body = [];
    private PromptCachePlacer _placer = null!;
    private readonly VolatilePrefixDetector _detector = new();

    [GlobalSetup]
    public void Setup()
    {
        var system = string.Join(" ", Enumerable.Range(0, 1500).Select(i => $"Policy {i}: answer politely."));
        _body = Encoding.UTF8.GetBytes(new JsonObject
        {
            ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 256, ["temperature"] = 0, ["system"] = system,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "What is the refund policy?" }),
        }.ToJsonString());
        _placer = new PromptCachePlacer(TokenCounter.Default, TimeProvider.System);
        Place(); // warm the per-block token cache, as a route's second call finds it
    }

    [Benchmark]
    public string ExactCacheKey() => ResponseCacheKey.Compute("team:eng", "anthropic", false, (JsonObject)JsonNode.Parse(_body)!);

    /// <summary>Parse, detect volatile values, place breakpoints and serialize a ~9,000-token request (the route's second call).</summary>
    [Benchmark]
    public int Place()
    {
        var node = (JsonObject)JsonNode.Parse(_body)!;
        _detector.Observe("r", PromptCachePlacer.SystemText(node), 9000);
        var r = _placer.Place(node, "claude-sonnet-4-5", "r", 1024);
        return node.ToJsonString().Length + r.Placed;
    }
}
