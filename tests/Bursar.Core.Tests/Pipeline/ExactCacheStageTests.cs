using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The exact response cache as a stage: miss, store, hit at $0; what bypasses it; stampedes; tenants.</summary>
public sealed class ExactCacheStageTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
    private readonly ResponseCacheOptions _options = new();
    private MeterKit _kit = null!;
    private MemoryResponseCacheStore _store = null!;
    private ExactCacheStage _stage = null!;

    public Task InitializeAsync()
    {
        _kit = new MeterKit(_time);
        _store = new MemoryResponseCacheStore(_options, _time);
        _stage = new ExactCacheStage(_store, _options, new CacheFillCoordinator(), _kit.Meter, _time);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _kit.DisposeAsync();

    public static TheoryData<string, string> Shapes => new()
    {
        { "openai", Levers.OpenAI("gpt-4o-mini", "What is the capital of France?") },
        { "anthropic", Levers.Anthropic("claude-sonnet-4-5", "What is the capital of France?") },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task A_deterministic_miss_calls_next_and_stores_the_answer_then_the_identical_request_hits_without_next(string dialect, string json)
    {
        var provider = new FakeProvider();
        var first = Levers.Call(json, dialect);
        Assert.True(first.Request.Deterministic);
        await _stage.InvokeAsync(first, provider.Next, default);

        Assert.Equal(1, provider.Calls);
        Assert.Equal("miss", first.CacheStatus);
        Assert.True(first.CaptureAnswer);
        Assert.Null(first.CacheHit);
        Assert.Equal(1, _store.Count);

        var second = Levers.Call(json, dialect);
        await _stage.InvokeAsync(second, provider.Next, default);

        Assert.Equal(1, provider.Calls); // answered from the cache: next is not called
        var hit = Assert.IsType<CachedResponse>(second.CacheHit);
        Assert.Equal(FakeProvider.AnswerFor(first), hit.Body); // the bytes the first caller got
        Assert.Equal("application/json", hit.ContentType);
        Assert.Equal(("bursar-cache", "hit", 200), (second.Provider, second.CacheStatus, second.StatusCode));
        Assert.False(second.SemanticHit);
        Assert.Equal(first.Model, second.Summary.Model);
        // the entry keeps what the original call cost: each hit's saving
        var price = Levers.Catalog.Find(first.Model).Price!;
        Assert.Equal(CostCalculator.Compute(price, provider.Usage).Total, hit.CostUsd);
        Assert.True(hit.CostUsd > 0);
        Assert.Equal((provider.Usage.TotalInputTokens, provider.Usage.OutputTokens), (hit.InputTokens, hit.OutputTokens));
        Assert.Equal(_time.GetUtcNow(), hit.StoredAt);
    }

    [Fact]
    public async Task The_same_body_in_another_dialect_or_streamed_is_another_entry()
    {
        var provider = new FakeProvider();
        var json = Levers.OpenAI("gpt-4o-mini", "Same words");
        await _stage.InvokeAsync(Levers.Call(json, "openai"), provider.Next, default);
        await _stage.InvokeAsync(Levers.Call(json, "anthropic"), provider.Next, default);
        await _stage.InvokeAsync(Levers.Call(Levers.OpenAI("gpt-4o-mini", "Same words", stream: true), "openai"), provider.Next, default);
        Assert.Equal(3, provider.Calls);
        Assert.Equal(3, _store.Count);
    }

    [Fact]
    public async Task Cache_control_off_bypasses_and_on_opts_a_non_deterministic_request_in()
    {
        var provider = new FakeProvider();
        var json = Levers.OpenAI("gpt-4o-mini", "Write a haiku", temperature: 0.9);

        var plain = Levers.Call(json);
        Assert.False(plain.Request.Deterministic);
        await _stage.InvokeAsync(plain, provider.Next, default);
        Assert.Equal("bypass", plain.CacheStatus);
        Assert.False(plain.CaptureAnswer);
        Assert.Equal(0, _store.Count); // not deterministic: not stored

        var optIn = Levers.Call(json, cacheControl: "on");
        await _stage.InvokeAsync(optIn, provider.Next, default);
        Assert.Equal("miss", optIn.CacheStatus);
        Assert.Equal(1, _store.Count);

        var off = Levers.Call(json, cacheControl: "off", deterministic: true);
        await _stage.InvokeAsync(off, provider.Next, default);
        Assert.Equal("bypass", off.CacheStatus);
        Assert.Null(off.CacheHit);

        var again = Levers.Call(json, cacheControl: "on");
        await _stage.InvokeAsync(again, provider.Next, default);
        Assert.NotNull(again.CacheHit);
        Assert.Equal(3, provider.Calls); // plain, the opt-in miss, the bypass; the last one hit
    }

    [Fact]
    public async Task A_route_with_ResponseCache_false_bypasses_even_an_entry_that_exists()
    {
        var provider = new FakeProvider();
        var json = Levers.OpenAI("gpt-4o-mini", "Cached elsewhere");
        await _stage.InvokeAsync(Levers.Call(json), provider.Next, default);
        Assert.Equal(1, _store.Count);

        var routed = Levers.Call(json, policy: new RoutePolicy { Name = "no-cache", ResponseCache = false });
        await _stage.InvokeAsync(routed, provider.Next, default);
        Assert.Null(routed.CacheHit);
        Assert.Equal("bypass", routed.CacheStatus);
        Assert.Equal(2, provider.Calls);

        var on = Levers.Call(json, policy: new RoutePolicy { Name = "cache", ResponseCache = true });
        await _stage.InvokeAsync(on, provider.Next, default);
        Assert.NotNull(on.CacheHit);
    }

    [Fact]
    public async Task A_feature_with_a_zero_ttl_and_a_disabled_cache_bypass()
    {
        _options.TtlByFeature["live"] = TimeSpan.Zero;
        var provider = new FakeProvider();
        var json = Levers.OpenAI("gpt-4o-mini", "Live numbers");
        var live = Levers.Call(json, tags: Levers.Headers((AttributionResolver.FeatureHeader, "live")));
        await _stage.InvokeAsync(live, provider.Next, default);
        Assert.Equal("bypass", live.CacheStatus);
        Assert.Equal(0, _store.Count);

        _options.Enabled = false;
        var disabled = Levers.Call(json);
        await _stage.InvokeAsync(disabled, provider.Next, default);
        Assert.Equal("bypass", disabled.CacheStatus);
        Assert.Equal(0, _store.Count);
    }

    [Fact]
    public async Task A_failed_call_is_not_stored_and_an_entry_expires_after_its_ttl()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "Flaky upstream");
        var failing = new FakeProvider { Outcome = "upstream_error" };
        await _stage.InvokeAsync(Levers.Call(json), failing.Next, default);
        Assert.Equal(0, _store.Count);

        var provider = new FakeProvider();
        await _stage.InvokeAsync(Levers.Call(json), provider.Next, default); // the leader's failure let the next call lead
        Assert.Equal(1, _store.Count);
        _time.Advance(_options.DefaultTtl + TimeSpan.FromSeconds(1));
        var expired = Levers.Call(json);
        await _stage.InvokeAsync(expired, provider.Next, default);
        Assert.Null(expired.CacheHit);
        Assert.Equal(2, provider.Calls);
    }

    [Fact]
    public async Task Two_concurrent_identical_misses_call_next_once_and_the_follower_waits_then_hits()
    {
        var json = Levers.Anthropic("claude-sonnet-4-5", "Summarize the release notes");
        var upstream = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var provider = new FakeProvider { Gate = upstream.Task };
        var leader = Levers.Call(json, "anthropic");
        var follower = Levers.Call(json, "anthropic");

        var leading = _stage.InvokeAsync(leader, provider.Next, default).AsTask(); // parked in the provider call
        var following = _stage.InvokeAsync(follower, provider.Next, default).AsTask(); // parked on the leader's fill
        Assert.Equal(1, provider.Calls);
        Assert.False(leading.IsCompleted);
        Assert.False(following.IsCompleted);

        upstream.SetResult();
        await Task.WhenAll(leading, following).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, provider.Calls);
        Assert.Equal("miss", leader.CacheStatus);
        Assert.Null(leader.CacheHit);
        Assert.Equal("hit", follower.CacheStatus);
        Assert.Equal(FakeProvider.AnswerFor(leader), follower.CacheHit!.Body);
        Assert.Equal("bursar-cache", follower.Provider);
    }

    [Fact]
    public async Task When_the_leader_fails_the_waiting_follower_calls_next_itself()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "Will fail once");
        var upstream = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var failing = new FakeProvider { Gate = upstream.Task, Outcome = "upstream_error" };
        var provider = new FakeProvider();
        var leading = _stage.InvokeAsync(Levers.Call(json), failing.Next, default).AsTask();
        var follower = Levers.Call(json);
        var following = _stage.InvokeAsync(follower, provider.Next, default).AsTask();
        Assert.False(following.IsCompleted);

        upstream.SetResult();
        await Task.WhenAll(leading, following).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, failing.Calls);
        Assert.Equal(1, provider.Calls); // nothing was stored to wait for
        Assert.Null(follower.CacheHit);
    }

    [Fact]
    public async Task A_follower_whose_leader_takes_longer_than_FollowerWait_calls_next_itself()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "A very slow upstream");
        var upstream = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slow = new FakeProvider { Gate = upstream.Task };
        var provider = new FakeProvider();
        var leading = _stage.InvokeAsync(Levers.Call(json), slow.Next, default).AsTask();
        var follower = Levers.Call(json);
        var following = _stage.InvokeAsync(follower, provider.Next, default).AsTask();
        Assert.False(following.IsCompleted);

        _time.Advance(ExactCacheStage.FollowerWait + TimeSpan.FromSeconds(1));
        try
        {
            await following.WaitAsync(TimeSpan.FromSeconds(10)); // completes, without throwing, once the fake clock passes the wait
            Assert.Equal(1, provider.Calls);
            Assert.Null(follower.CacheHit);
        }
        finally
        {
            upstream.SetResult();
            await leading;
        }
        Assert.Equal(1, slow.Calls);
    }

    [Fact]
    public async Task Another_keys_identical_request_misses_and_keys_sharing_a_fixed_team_share_answers()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "Tenant question");
        var provider = new FakeProvider();
        await _stage.InvokeAsync(Levers.Call(json, key: Levers.Key(id: "key_a")), provider.Next, default);

        var other = Levers.Call(json, key: Levers.Key(id: "key_b"));
        await _stage.InvokeAsync(other, provider.Next, default);
        Assert.Null(other.CacheHit);
        Assert.Equal(2, provider.Calls);

        // a header cannot reach another tenant's answers: key_c naming key_a's customer is still its own tenant
        var named = Levers.Call(json, key: Levers.Key(id: "key_c", customers: ["*"]), tags: Levers.Headers((AttributionResolver.CustomerHeader, "acme")));
        await _stage.InvokeAsync(named, provider.Next, default);
        Assert.Null(named.CacheHit);

        await _stage.InvokeAsync(Levers.Call(json, key: Levers.Key(id: "key_t1", team: "eng")), provider.Next, default);
        var teammate = Levers.Call(json, key: Levers.Key(id: "key_t2", team: "eng"));
        await _stage.InvokeAsync(teammate, provider.Next, default);
        Assert.NotNull(teammate.CacheHit); // the operator gave both keys the same team
        Assert.Equal(4, provider.Calls);
    }

    [Fact]
    public async Task An_unreadable_body_is_no_cache_for_that_call_not_a_failure()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "x"));
        call.Request = new CallRequest(() => throw new System.Text.Json.JsonException("duplicate key 'model'"))
        {
            Model = "gpt-4o-mini", Deterministic = true,
        };
        var provider = new FakeProvider();
        await _stage.InvokeAsync(call, provider.Next, default);
        Assert.Equal(1, provider.Calls);
        Assert.Equal("bypass", call.CacheStatus);
        Assert.Equal(0, _store.Count);
    }

    /// <summary>A store whose chosen read is a miss answered late (the look was taken before a leader stored, its answer arrives after), or whose reads all miss.</summary>
    private sealed class LateReads(IResponseCacheStore inner) : IResponseCacheStore
    {
        private int _reads;
        /// <summary>The read (1-based) that sees a miss and is held until <see cref="Gate"/>; 0: none.</summary>
        public int Held { get; init; }
        /// <summary>Every read misses, as a Redis slower than its timeout does.</summary>
        public bool ReadsMiss { get; init; }
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource Parked { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<CachedResponse?> GetAsync(string key, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _reads) == Held)
            {
                Parked.TrySetResult();
                await Gate.Task;
                return null;
            }
            return ReadsMiss ? null : await inner.GetAsync(key, cancellationToken);
        }

        public ValueTask SetAsync(string key, CachedResponse response, TimeSpan ttl, CancellationToken cancellationToken) => inner.SetAsync(key, response, ttl, cancellationToken);
    }

    /// <summary>One lock key per entry shared by the instances (what Redis's SET NX gives them).</summary>
    private sealed class SharedFillLock : IResponseCacheFillLock
    {
        private readonly HashSet<string> _held = new(StringComparer.Ordinal);
        public ValueTask<bool> TryAcquireAsync(string key, CancellationToken cancellationToken) { lock (_held) return new(_held.Add(key)); }
        public ValueTask ReleaseAsync(string key) { lock (_held) _held.Remove(key); return ValueTask.CompletedTask; }
    }

    [Fact]
    public async Task A_miss_whose_first_look_came_before_the_leader_stored_and_finished_is_served_not_sent_upstream()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "Late first look");
        var store = new LateReads(_store) { Held = 1 };
        var stage = new ExactCacheStage(store, _options, new CacheFillCoordinator(), _kit.Meter, _time);
        var provider = new FakeProvider();
        var late = Levers.Call(json);
        var lateRun = stage.InvokeAsync(late, provider.Next, default).AsTask();
        await store.Parked.Task.WaitAsync(TimeSpan.FromSeconds(10)); // its look saw no entry, its answer is on the way
        var leader = Levers.Call(json);
        await stage.InvokeAsync(leader, provider.Next, default); // leads, stores, lets go: nothing in flight any more
        Assert.Equal("miss", leader.CacheStatus);
        store.Gate.SetResult();
        await lateRun.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, provider.Calls); // it leads a new round, looks again and finds the entry
        Assert.Equal("hit", late.CacheStatus);
        Assert.Equal(FakeProvider.AnswerFor(leader), late.CacheHit!.Body);
    }

    [Fact]
    public async Task Across_instances_a_miss_whose_first_look_came_before_the_other_s_fill_is_served_once_it_takes_the_free_lock()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "Late first look, two instances");
        var store = new LateReads(_store) { Held = 1 }; // one shared cache
        var fillLock = new SharedFillLock();
        var one = new ExactCacheStage(_store, _options, new CacheFillCoordinator(), _kit.Meter, _time, fillLock);
        var two = new ExactCacheStage(store, _options, new CacheFillCoordinator(), _kit.Meter, _time, fillLock);
        var provider = new FakeProvider();
        var late = Levers.Call(json);
        var lateRun = two.InvokeAsync(late, provider.Next, default).AsTask();
        await store.Parked.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var leader = Levers.Call(json);
        await one.InvokeAsync(leader, provider.Next, default); // takes the lock, calls, stores, gives the lock back
        store.Gate.SetResult();
        await lateRun.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, provider.Calls); // the lock is free, but the entry is there: served, the lock given back
        Assert.Equal("hit", late.CacheStatus);
        Assert.True(await fillLock.TryAcquireAsync(ResponseCacheKeyOf(late), default));
    }

    [Fact]
    public async Task A_follower_is_handed_the_leader_s_answer_even_when_the_store_cannot_read_it_back()
    {
        var json = Levers.OpenAI("gpt-4o-mini", "A store slower than its timeout");
        var stage = new ExactCacheStage(new LateReads(_store) { ReadsMiss = true }, _options, new CacheFillCoordinator(), _kit.Meter, _time);
        var upstream = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var provider = new FakeProvider { Gate = upstream.Task };
        var leader = Levers.Call(json);
        var follower = Levers.Call(json);
        var leading = stage.InvokeAsync(leader, provider.Next, default).AsTask();
        var following = stage.InvokeAsync(follower, provider.Next, default).AsTask();
        Assert.False(following.IsCompleted);
        upstream.SetResult();
        await Task.WhenAll(leading, following).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, provider.Calls);
        Assert.Equal("hit", follower.CacheStatus);
        Assert.Equal(FakeProvider.AnswerFor(leader), follower.CacheHit!.Body);
    }

    private static string ResponseCacheKeyOf(LeverCall call)
    {
        Assert.True(call.Request.TryBody(out var body));
        return ResponseCacheKey.Compute(ResponseCacheKey.Tenant(call.Key, call.Attribution), call.Dialect, call.Request.Stream, body);
    }
}
