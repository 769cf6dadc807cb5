using BenchmarkDotNet.Attributes;
using Bursar.Core.Caching;
using Bursar.Core.Caching.Semantic;

namespace Bursar.Benchmarks;

/// <summary>Cache lookups: the exact cache's dictionary hit, and the semantic cache's embed + exact SIMD scan of one partition.</summary>
[MemoryDiagnoser]
public class SemanticBenchmarks
{
    [Params(10_000, 100_000)]
    public int Entries { get; set; }

    private SemanticResponseCache _semantic = null!;
    private MemoryResponseCacheStore _exact = null!;
    private readonly CachedResponse _answer = new([1, 2, 3], "application/json", "gpt-4o-mini", 0.001m, 10, 5, TimeProvider.System.GetUtcNow());

    [GlobalSetup]
    public void Setup()
    {
        var opts = new SemanticCacheOptions { MaxEntries = 200_000, Ttl = TimeSpan.FromDays(1) };
        _semantic = new SemanticResponseCache(opts, new HashedNGramEmbeddingGenerator(), TimeProvider.System);
        _exact = new MemoryResponseCacheStore(new ResponseCacheOptions { MaxEntries = 200_000 }, TimeProvider.System);
        var rng = new Random(7);
        string[] words = ["price", "plan", "refund", "account", "password", "reset", "invoice", "shipping", "order", "cancel", "upgrade", "region", "support", "billing", "login", "team"];
        for (var i = 0; i < Entries; i++)
        {
            var q = $"How do I {words[rng.Next(words.Length)]} my {words[rng.Next(words.Length)]} {words[rng.Next(words.Length)]} number {i}?";
            _semantic.AddAsync("tenant|gpt-4o-mini|sys|openai|j", q, _answer).GetAwaiter().GetResult();
            _exact.Set("key" + i, _answer, TimeSpan.FromDays(1));
        }
    }

    [Benchmark]
    public bool ExactLookup() => _exact.TryGet("key" + (Entries / 2), out _);

    [Benchmark]
    public float SemanticLookup() => _semantic.LookupAsync("tenant|gpt-4o-mini|sys|openai|j", "How can I reset my billing password number 42?").GetAwaiter().GetResult().Score;
}
