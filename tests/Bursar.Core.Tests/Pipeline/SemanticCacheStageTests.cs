using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Caching.Semantic;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>
/// The semantic cache as a stage, with the local hashed n-gram generator. The existing semantic tests show no true paraphrase
/// scoring above a usable threshold with it (only a higher score than an unrelated question), so the hit path here is the same
/// question asked again with other casing and punctuation, as the gateway's test does; lookalikes are stopped by the guards.
/// </summary>
public sealed class SemanticCacheStageTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
    private readonly SemanticCacheOptions _options = new() { Features = ["faq"], Threshold = 0.8f };
    private MeterKit _kit = null!;
    private SemanticResponseCache _cache = null!;
    private SemanticCacheStage _stage = null!;

    public Task InitializeAsync()
    {
        _kit = new MeterKit(_time);
        _cache = new SemanticResponseCache(_options, new HashedNGramEmbeddingGenerator(), _time);
        _stage = new SemanticCacheStage(_cache, _kit.Meter, _time);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _kit.DisposeAsync();

    private static LeverCall Ask(string json, string dialect = "openai", string feature = "faq", string keyId = "key_1", RoutePolicy? policy = null, string cacheControl = "") =>
        Levers.Call(json, dialect, key: Levers.Key(id: keyId), tags: Levers.Headers((AttributionResolver.FeatureHeader, feature)), policy: policy, cacheControl: cacheControl);

    public static TheoryData<string, string, string> Shapes => new()
    {
        { "openai", Levers.OpenAI("gpt-4o-mini", "How do I reset my password for account 4f2a?", temperature: 0.7), Levers.OpenAI("gpt-4o-mini", "how do I reset my password for account 4f2a", temperature: 0.7) },
        { "anthropic", Levers.Anthropic("claude-haiku-4-5", "How do I reset my password for account 4f2a?", temperature: 0.7), Levers.Anthropic("claude-haiku-4-5", "how do I reset my password for account 4f2a!", temperature: 0.7) },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task A_miss_stores_the_answer_and_the_same_question_reworded_in_case_and_punctuation_hits_without_next(string dialect, string asked, string again)
    {
        var provider = new FakeProvider();
        var first = Ask(asked, dialect);
        await _stage.InvokeAsync(first, provider.Next, default);
        Assert.Equal(1, provider.Calls);
        Assert.Equal("miss", first.CacheStatus);
        Assert.True(first.CaptureAnswer);
        Assert.Equal(1, _cache.Count);

        var second = Ask(again, dialect);
        await _stage.InvokeAsync(second, provider.Next, default);
        Assert.Equal(1, provider.Calls);
        Assert.NotNull(second.CacheHit);
        Assert.True(second.SemanticHit);
        Assert.Equal(("semantic-hit", "bursar-semantic-cache", 200), (second.CacheStatus, second.Provider, second.StatusCode));
        Assert.True(second.Similarity >= _options.Threshold, $"similarity {second.Similarity}");
        Assert.Equal(FakeProvider.AnswerFor(first), second.CacheHit!.Body);
        Assert.True(second.CacheHit.CostUsd > 0); // the saving of the call it replays
    }

    [Fact]
    public async Task A_lookalike_with_another_number_is_stopped_by_the_guards_and_calls_next()
    {
        // SemanticCacheTests shows this pair scores at least 0.8, so only the number guard keeps them apart
        var provider = new FakeProvider();
        await _stage.InvokeAsync(Ask(Levers.OpenAI("gpt-4o-mini", "What is the monthly price of plan 7 in region abc123?")), provider.Next, default);
        var lookalike = Ask(Levers.OpenAI("gpt-4o-mini", "What is the monthly price of plan 9 in region abc123?"));
        await _stage.InvokeAsync(lookalike, provider.Next, default);
        Assert.Null(lookalike.CacheHit);
        Assert.Equal("miss", lookalike.CacheStatus);
        Assert.Equal(2, provider.Calls);
    }

    [Fact]
    public async Task The_cache_is_opt_in_per_feature_and_a_route_can_switch_it_either_way()
    {
        var provider = new FakeProvider();
        var json = Levers.OpenAI("gpt-4o-mini", "What are your opening hours?");

        var notOptedIn = Ask(json, feature: "chat");
        await _stage.InvokeAsync(notOptedIn, provider.Next, default);
        Assert.Equal("bypass", notOptedIn.CacheStatus);
        Assert.False(notOptedIn.CaptureAnswer);
        Assert.Equal(0, _cache.Count);

        var routeOn = Ask(json, feature: "chat", policy: new RoutePolicy { Name = "semantic-on", SemanticCache = true });
        await _stage.InvokeAsync(routeOn, provider.Next, default);
        Assert.Equal("miss", routeOn.CacheStatus);
        Assert.Equal(1, _cache.Count);

        var routeOff = Ask(json, feature: "faq", policy: new RoutePolicy { Name = "semantic-off", SemanticCache = false });
        await _stage.InvokeAsync(routeOff, provider.Next, default);
        Assert.Equal("bypass", routeOff.CacheStatus);
        Assert.Equal(3, provider.Calls);
    }

    [Fact]
    public async Task Cache_control_off_conversations_and_tool_calls_bypass()
    {
        var provider = new FakeProvider();
        var json = Levers.OpenAI("gpt-4o-mini", "What are your opening hours?");
        await _stage.InvokeAsync(Ask(json), provider.Next, default);

        var off = Ask(json, cacheControl: "off");
        await _stage.InvokeAsync(off, provider.Next, default);
        Assert.Null(off.CacheHit);
        Assert.Equal("bypass", off.CacheStatus);

        var conversation = new JsonObject
        {
            ["model"] = "gpt-4o-mini",
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "hi" },
                new JsonObject { ["role"] = "assistant", ["content"] = "hello" },
                new JsonObject { ["role"] = "user", ["content"] = "What are your opening hours?" }),
        };
        var multi = Ask(conversation.ToJsonString());
        await _stage.InvokeAsync(multi, provider.Next, default);
        Assert.Null(multi.CacheHit);
        Assert.Equal("bypass", multi.CacheStatus);

        var tools = (JsonObject)JsonNode.Parse(json)!;
        tools["tools"] = new JsonArray(new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "lookup" } });
        var withTools = Ask(tools.ToJsonString());
        await _stage.InvokeAsync(withTools, provider.Next, default);
        Assert.Null(withTools.CacheHit);
        Assert.Equal(4, provider.Calls);
    }

    [Fact]
    public async Task Another_tenant_another_model_or_another_system_prompt_misses()
    {
        var provider = new FakeProvider();
        const string question = "What are your opening hours?";
        await _stage.InvokeAsync(Ask(Levers.OpenAI("gpt-4o-mini", question)), provider.Next, default);

        var otherKey = Ask(Levers.OpenAI("gpt-4o-mini", question), keyId: "key_2");
        var otherModel = Ask(Levers.OpenAI("gpt-4.1", question));
        var otherSystem = Ask(Levers.OpenAI("gpt-4o-mini", question, system: "You are a pirate."));
        foreach (var call in new[] { otherKey, otherModel, otherSystem })
        {
            await _stage.InvokeAsync(call, provider.Next, default);
            Assert.Null(call.CacheHit);
        }
        Assert.Equal(4, provider.Calls);

        var same = Ask(Levers.OpenAI("gpt-4o-mini", question));
        await _stage.InvokeAsync(same, provider.Next, default);
        Assert.NotNull(same.CacheHit);
    }

    private sealed class Embeddings(string json) : HttpMessageHandler
    {
        public int Calls;
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Calls);
            return Task.FromResult(new HttpResponseMessage(System.Net.HttpStatusCode.OK) { Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json") });
        }
    }

    private SemanticCacheStage Remote(Embeddings endpoint) =>
        new(new SemanticResponseCache(_options, new OpenAIEmbeddingGenerator(new HttpMessageInvoker(endpoint), new Uri("http://embeddings.test/v1"), "k", "m"), _time), _kit.Meter, _time);

    [Fact]
    public async Task An_embeddings_endpoint_that_fails_is_no_semantic_cache_for_the_call_not_a_failed_call()
    {
        var down = new Embeddings("not json at all");
        var call = Ask(Levers.OpenAI("gpt-4o-mini", "What are your opening hours?"));
        var provider = new FakeProvider();
        await Remote(down).InvokeAsync(call, provider.Next, default);
        Assert.Equal(1, down.Calls);
        Assert.Equal(1, provider.Calls);
        Assert.Null(call.CacheHit);
        Assert.False(call.CaptureAnswer);
    }

    [Fact]
    public async Task An_embeddings_endpoint_answering_200_in_another_shape_is_no_semantic_cache_for_the_call()
    {
        var odd = new Embeddings("""{"object":"error","message":"model not loaded"}""");
        var call = Ask(Levers.OpenAI("gpt-4o-mini", "What are your opening hours?"));
        var provider = new FakeProvider();
        await Remote(odd).InvokeAsync(call, provider.Next, default);
        Assert.Equal(1, odd.Calls);
        Assert.Equal(1, provider.Calls);
        Assert.Null(call.CacheHit);
    }

    [Fact]
    public async Task A_failed_call_is_not_stored_and_an_answer_older_than_the_ttl_is_not_served()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "What are your opening hours?");
        await _stage.InvokeAsync(Ask(json), new FakeProvider { Outcome = "upstream_error" }.Next, default);
        Assert.Equal(0, _cache.Count);

        var provider = new FakeProvider();
        await _stage.InvokeAsync(Ask(json), provider.Next, default);
        _time.Advance(_options.Ttl + TimeSpan.FromMinutes(1));
        var late = Ask(json);
        await _stage.InvokeAsync(late, provider.Next, default);
        Assert.Null(late.CacheHit);
        Assert.Equal(2, provider.Calls);
    }

    /// <summary>An encoder whose first run answers and whose later runs wait at a gate that never opens (unless a test opens it).</summary>
    private sealed class OneFreeRun : Microsoft.Extensions.AI.IEmbeddingGenerator<string, Microsoft.Extensions.AI.Embedding<float>>
    {
        private readonly HashedNGramEmbeddingGenerator _inner = new();
        public readonly TaskCompletionSource Gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Runs;

        public async Task<Microsoft.Extensions.AI.GeneratedEmbeddings<Microsoft.Extensions.AI.Embedding<float>>> GenerateAsync(IEnumerable<string> values, Microsoft.Extensions.AI.EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
        {
            if (Interlocked.Increment(ref Runs) > 1) await Gate.Task.WaitAsync(cancellationToken);
            return new(values.Select(v => new Microsoft.Extensions.AI.Embedding<float>(_inner.Embed(v))));
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;
        public void Dispose() { }
    }

    [Fact]
    public async Task A_miss_stores_its_answer_under_the_lookups_vector_without_a_second_encoder_run()
    {
        // a dense encoder that would hang on a second run: the miss must complete on the lookup's one run, and the answer be stored
        var encoder = new OneFreeRun();
        var cache = new SemanticResponseCache(_options, encoder, _time);
        var stage = new SemanticCacheStage(cache, _kit.Meter, _time);
        var provider = new FakeProvider();
        var miss = Ask(Levers.OpenAI("gpt-4o-mini", "How do I reset my password for account 4f2a?"));
        var done = stage.InvokeAsync(miss, provider.Next, default).AsTask();
        Assert.Same(done, await Task.WhenAny(done, Task.Delay(TimeSpan.FromSeconds(30)))); // a generous bound only, no timing asserted
        Assert.Equal(("miss", 1, 1, 1), (miss.CacheStatus, provider.Calls, encoder.Runs, cache.Count));
        // the stored entry is the one the next question finds (its lookup is the encoder's second run)
        encoder.Gate.SetResult();
        var again = Ask(Levers.OpenAI("gpt-4o-mini", "how do I reset my password for account 4f2a"));
        await stage.InvokeAsync(again, provider.Next, default);
        Assert.Equal(("semantic-hit", 1, 2), (again.CacheStatus, provider.Calls, encoder.Runs));
    }
}
