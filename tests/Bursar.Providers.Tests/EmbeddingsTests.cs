using Bursar.Core.Caching;
using Bursar.Core.Caching.Semantic;
using Bursar.Providers.Simulator;

namespace Bursar.Providers.Tests;

/// <summary>The OpenAI-compatible embedding generator against the Simulator's /v1/embeddings, and the semantic cache on top of it.</summary>
public sealed class EmbeddingsTests
{
    private static OpenAIEmbeddingGenerator Generator(string? key = "k")
    {
        var sim = new ProviderSimulator(new SimulatorOptions());
        return new OpenAIEmbeddingGenerator(new HttpMessageInvoker(new SimulatorHttpHandler(sim)), new Uri("http://simulator/v1"), key, "text-embedding-3-small");
    }

    [Fact]
    public async Task Returns_one_deterministic_vector_per_input_in_order()
    {
        var g = Generator();
        var a = await g.GenerateAsync(["How do I reset my password?", "What are your hours?"]);
        var b = await g.GenerateAsync(["What are your hours?"]);
        Assert.Equal(2, a.Count);
        Assert.Equal(512, a[0].Vector.Length);
        Assert.Equal(a[1].Vector.ToArray(), b[0].Vector.ToArray());
        Assert.NotEqual(a[0].Vector.ToArray(), a[1].Vector.ToArray());
    }

    [Fact]
    public async Task An_endpoint_error_names_the_status()
    {
        var e = await Assert.ThrowsAsync<HttpRequestException>(() => Generator(key: null).GenerateAsync(["x"]));
        Assert.Contains("HTTP 401", e.Message);
    }

    [Fact]
    public async Task The_semantic_cache_works_with_an_endpoint_generator()
    {
        var cache = new SemanticResponseCache(new SemanticCacheOptions { Threshold = 0.9f }, Generator(), TimeProvider.System);
        var answer = new CachedResponse([1], "application/json", "m", 0.01m, 1, 1, TimeProvider.System.GetUtcNow());
        await cache.AddAsync("p", "How do I reset my password?", answer);
        var (hit, score, _) = await cache.LookupAsync("p", "how do I reset my password");
        Assert.NotNull(hit);
        Assert.True(score > 0.99f);
        Assert.Null((await cache.LookupAsync("p", "What is the weather in Paris?")).Hit);
    }
}
