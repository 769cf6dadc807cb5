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

/// <summary>The in-process exact cache's hot path: a hit (lookup, key check, decode) and a store that evicts the oldest entry, on a full cache of 100,000 entries.</summary>
[MemoryDiagnoser]
public class MemoryCacheStoreBenchmarks
{
    private MemoryResponseCacheStore _store = null!;
    private string[] _keys = [];
    private CachedResponse _answer = null!;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _store = new MemoryResponseCacheStore(new ResponseCacheOptions(), TimeProvider.System);
        _answer = new CachedResponse(Encoding.UTF8.GetBytes("""{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":2,"total_tokens":26}}"""),
            "application/json", "gpt-4o-mini", 0.0000048m, 24, 2, TimeProvider.System.GetUtcNow());
        _keys = Enumerable.Range(0, 200_000).Select(i => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(i)))).ToArray();
        for (var i = 0; i < 100_000; i++) _store.Set(_keys[i], _answer, TimeSpan.FromHours(1));
    }

    [Benchmark]
    public bool Hit() => _store.TryGet(_keys[99_999 - (_next++ % 50_000)], out _);

    [Benchmark]
    public void StoreEvictingTheOldest() => _store.Set(_keys[(100_000 + _next++) % 200_000], _answer, TimeSpan.FromHours(1));
}
