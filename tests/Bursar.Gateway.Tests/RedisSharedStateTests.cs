using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Bursar.Caching.Redis;
using Bursar.Core.Keys;
using Bursar.Core.Limits;
using Bursar.Core.Runs;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using StackExchange.Redis;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Rate limits and run state in a real Redis, shared by several gateway instances: two instances on one Redis count
/// one limit and one run together (not each its own), the Redis GCRA gives the local limiter's numbers, a dead
/// instance's run holds expire, and an unreachable Redis does what <c>Bursar:Budgets:WhenSharedCountersDown</c> says.
/// </summary>
public sealed class RedisSharedStateTests(RedisServer redis) : IClassFixture<RedisServer>, IDisposable
{
    private readonly string _prefix = "bursar:{s" + Guid.NewGuid().ToString("N") + "}:";
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }

    private ConnectionMultiplexer Connect()
    {
        var config = ConfigurationOptions.Parse(redis.ConnectionString);
        config.AbortOnConnectFail = false;
        var c = ConnectionMultiplexer.Connect(config);
        _owned.Add(c);
        return c;
    }

    private static string Chat(string text) => new JsonObject
    {
        ["model"] = "gpt-4o-mini", ["max_tokens"] = 16,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
    }.ToJsonString();

    /// <summary>Two gateway instances on this Redis, the first one's key known to both.</summary>
    private async Task<(ConfiguredGateway A, ConfiguredGateway B, string KeyId)> TwoInstancesAsync(params string[] extra)
    {
        var a = new ConfiguredGateway([$"--Bursar:Redis:Configuration={redis.ConnectionString}", .. extra]);
        var b = new ConfiguredGateway([$"--Bursar:Redis:Configuration={redis.ConnectionString}", .. extra]);
        await a.InitializeAsync();
        await b.InitializeAsync();
        var key = (await a.Store.ListAsync(default)).Single(k => k.Hash == VirtualKey.HashSecret(a.Key));
        await b.Store.AddAsync(key, default);
        return (a, b, key.Id);
    }

    private static async Task<(HttpStatusCode Status, JsonNode? Body, string? RetryAfter)> SendAsync(GatewayFixture gw, string key, string json, string? run = null, string path = "/v1/chat/completions")
    {
        using var req = gw.Post(path, json, key, "shared-state");
        if (run is not null) req.Headers.Add("x-bursar-run", run);
        using var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text), resp.Headers.TryGetValues("retry-after", out var v) ? v.Single() : null);
    }

    [Fact]
    public async Task Two_gateways_on_one_redis_share_a_rate_limit()
    {
        var (a, b, keyId) = await TwoInstancesAsync();
        try
        {
            // the same definition on both instances (each reads its own store); 3 requests a minute for the key
            foreach (var gw in new[] { a, b })
            {
                var (status, body) = await gw.AdminAsync(HttpMethod.Put, $"/admin/rate-limits/key/{keyId}", new { requests_per_minute = 3 });
                Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
            }
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(a, a.Key, Chat("one"))).Status);
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(b, a.Key, Chat("two"))).Status);
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(a, a.Key, Chat("three"))).Status);
            // per instance, b would still have two of its three left: counted together, the fourth call is refused
            var refused = await SendAsync(b, a.Key, Chat("four"));
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.Status);
            Assert.Equal("rate_limit_exceeded", refused.Body!["error"]!["code"]!.GetValue<string>());
            Assert.Contains("Rate limit of 3 requests per minute for key", refused.Body["error"]!["message"]!.GetValue<string>());
            // a minute of burst at 20 s per request: the next one fits 20 s after the first
            var retry = int.Parse(refused.RetryAfter!, System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(retry, 1, 20);
            Assert.Equal(HttpStatusCode.TooManyRequests, (await SendAsync(a, a.Key, Chat("five"))).Status);
            Assert.Equal("Redis at 127.0.0.1:" + redis.Port, a.Services.GetRequiredService<RateLimiter>().SharedCells);
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
        }
    }

    [Fact]
    public async Task The_redis_cells_give_the_local_limiter_s_numbers()
    {
        // tokens per minute 1,000: 400 + 400 fit, 300 more would be 66 s of a 60 s burst: refused, retry in 6 s
        var limit = new RateLimitDefinition(RateLimitScope.Customer, "acme-" + Guid.NewGuid().ToString("N"), 100, 1000);
        var fake = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var local = new RateLimiter(fake);
        local.Load([limit]);
        var shared = new RateLimiter(TimeProvider.System, new RedisRateLimitCells(Connect(), _prefix));
        shared.Load([limit]);
        var clock = Stopwatch.StartNew();
        foreach (var (tokens, admitted) in new[] { (400L, true), (400L, true), (300L, false) })
        {
            Assert.Equal(admitted, local.TryAcquire(null, null, limit.Value, tokens, out _));
            var d = await shared.TryAcquireAsync(null, null, limit.Value, tokens, default);
            Assert.Equal(admitted, d.Admitted);
        }
        var elapsed = clock.Elapsed;
        Assert.False(local.TryAcquire(null, null, limit.Value, 300, out var localRefusal));
        var sharedRefusal = (await shared.TryAcquireAsync(null, null, limit.Value, 300, default)).Refusal!;
        Assert.Equal(TimeSpan.FromSeconds(6), localRefusal!.RetryAfter);
        Assert.Equal(("tokens", 1000L), (sharedRefusal.Unit, sharedRefusal.LimitPerMinute));
        // Redis's clock moved on by what the calls took, never more
        Assert.InRange(sharedRefusal.RetryAfter, TimeSpan.FromSeconds(6) - clock.Elapsed - TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(6));
        Assert.True(elapsed <= clock.Elapsed);
        // nothing was consumed by the refusals: a small call still fits (100 tokens = 6 s of the 60 s burst)
        Assert.True((await shared.TryAcquireAsync(null, null, limit.Value, 100, default)).Admitted);
        Assert.False((await shared.TryAcquireAsync(null, null, limit.Value, 200, default)).Admitted); // 66 s
    }

    [Fact]
    public async Task Two_gateways_on_one_redis_count_one_run_s_turns_together()
    {
        // the fixture caps runs at 4 turns; every answer without tools would end the run, so that is switched off here
        var (a, b, _) = await TwoInstancesAsync("--Bursar:Runs:DoneWhenAnsweredWithoutTools=false");
        try
        {
            var run = "run-" + Guid.NewGuid().ToString("N");
            for (var i = 0; i < 4; i++)
            {
                var r = await SendAsync(i % 2 == 0 ? a : b, a.Key, Chat("turn " + i), run);
                Assert.True(r.Status == HttpStatusCode.OK, $"turn {i}: {r.Status} {r.Body?.ToJsonString()}");
            }
            // each instance has seen only two turns: counted together the run has had its four
            foreach (var gw in new[] { a, b })
            {
                var over = await SendAsync(gw, a.Key, Chat("turn 5"), run);
                Assert.Equal(HttpStatusCode.TooManyRequests, over.Status);
                Assert.Equal("run_limit_exceeded", over.Body!["error"]!["code"]!.GetValue<string>());
                Assert.Contains($"Run '{run}' has ended: max_turns (4), after 4 turns", over.Body["error"]!["message"]!.GetValue<string>());
            }
            // the turn that ended the run says so on its ledger row, whichever instance served it
            var rows = (await a.LedgerAsync("shared-state", 3)).Concat(await b.LedgerAsync("shared-state", 3)).Where(r => r.RunId == run).ToArray();
            Assert.Equal(4, rows.Count(r => r.Outcome == "ok"));
            Assert.Equal("max_turns (4)", Assert.Single(rows, r => r.RunEndReason is not null).RunEndReason);
            // another run is not affected
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(b, a.Key, Chat("other run"), run + "-2")).Status);
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
        }
    }

    private RedisRunState RunState(RunCapOptions caps, TimeSpan holdTtl)
    {
        var s = new RedisRunState(Connect(), caps, TimeProvider.System, _prefix, holdTtl: holdTtl);
        _owned.Add(s);
        return s;
    }

    [Fact]
    public async Task A_dead_instance_s_run_holds_expire_and_a_live_one_s_are_kept_alive()
    {
        var caps = new RunCapOptions { MaxTurns = 3, MaxSpendUsd = 1m };
        var ttl = TimeSpan.FromSeconds(1);
        var dead = RunState(caps, ttl);
        var live = RunState(caps, ttl);
        var other = RunState(caps, ttl);
        var run = "run-" + Guid.NewGuid().ToString("N");
        Assert.Null(await live.TryStartAsync("k", run, 0.10m, default));
        Assert.Null(await live.CompleteAsync("k", run, 0, 0.05m, null, 0.10m)); // one turn finished
        Assert.Null(await dead.TryStartAsync("k", run, 0.30m, default)); // in flight when its instance is killed
        Assert.Null(await live.TryStartAsync("k", run, 0.20m, default)); // in flight on a live instance
        dead.Dispose(); // its heartbeat stops; its call never finishes
        var refused = await other.TryStartAsync("k", run, 0.01m, default);
        Assert.NotNull(refused);
        Assert.Contains("has 2 calls in flight and 1 finished", refused.Message);

        // the dead instance's hold lapses (a second), the live one's heartbeat keeps its own
        RunRefusal? still = refused;
        for (var i = 0; i < 100 && still is not null; i++)
        {
            await Task.Delay(100);
            still = await other.TryStartAsync("k", run, 0.01m, default);
        }
        Assert.Null(still);
        var full = await other.TryStartAsync("k", run, 0.01m, default);
        Assert.NotNull(full);
        Assert.Contains("has 2 calls in flight and 1 finished", full.Message); // live's and other's, not dead's

        // spend: $0.05 spent, $0.21 held by the live calls; $0.80 more would pass $1
        var spendRun = run + "-spend";
        Assert.Null(await live.TryStartAsync("k", spendRun, 0.60m, default));
        var over = await other.TryStartAsync("k", spendRun, 0.50m, default);
        Assert.Equal("max_spend ($1)", over!.Reason);
        Assert.Contains("$0.00 spent, $0.60 held by calls in flight", over.Message);
        await live.ReleaseAsync("k", spendRun, 0.60m);
        Assert.Null(await other.TryStartAsync("k", spendRun, 0.50m, default));
        Assert.Equal("max_spend ($1)", await other.CompleteAsync("k", spendRun, 0, 1.25m, null, 0.50m));
        var ended = await live.EndedAsync("k", spendRun, default);
        Assert.Contains("has ended: max_spend ($1), after 1 turns, 0 tool calls and $1.25 spent", ended!.Message);
        Assert.Null(await live.EndedAsync("other-key", spendRun, default)); // runs are scoped by key
    }

    [Fact]
    public async Task A_redis_restarted_empty_resumes_each_run_from_what_the_instance_last_saw_not_from_zero()
    {
        var own = new RedisServer();
        await own.InitializeAsync();
        var port = own.Port;
        try
        {
            var config = ConfigurationOptions.Parse(own.ConnectionString);
            config.AbortOnConnectFail = false;
            var connection = ConnectionMultiplexer.Connect(config);
            _owned.Add(connection);
            var caps = new RunCapOptions { MaxTurns = 3, MaxSpendUsd = 1m };
            var state = new RedisRunState(connection, caps, TimeProvider.System, _prefix, holdTtl: TimeSpan.FromSeconds(30));
            _owned.Add(state);
            var run = "run-" + Guid.NewGuid().ToString("N");
            var answered = run + "-answered";
            for (var i = 0; i < 2; i++)
            {
                Assert.Null(await state.TryStartAsync("k", run, 0.30m, default));
                Assert.Null(await state.CompleteAsync("k", run, 1, 0.30m, null, 0.30m));
            }
            Assert.Null(await state.TryStartAsync("k", answered, 0.10m, default));
            Assert.Equal("done: answered", await state.CompleteAsync("k", answered, 0, 0.05m, "done: answered", 0.10m));
            Assert.Equal(2, state.RunsRemembered);

            own.Stop();
            await own.DisposeAsync();
            own = RedisServer.OnPort(port); // back on the same address with no data (no persistence)
            await own.InitializeAsync();
            RunRefusal? third = null;
            for (var i = 0; i < 100; i++)
            {
                try
                {
                    third = await state.TryStartAsync("k", run, 0.30m, default);
                    break;
                }
                catch (RedisConnectionException) { await Task.Delay(100); } // reconnecting
            }
            // the run is at two turns and $0.60, as before the restart: this is its third and last turn
            Assert.Null(third);
            var over = await state.TryStartAsync("k", run, 0.50m, default);
            Assert.NotNull(over);
            Assert.Contains("has 1 calls in flight and 2 finished", over.Message); // the turn cap counts the call in flight
            Assert.Equal("max_turns (3)", await state.CompleteAsync("k", run, 1, 0.30m, null, 0.30m));

            // an instance that never saw these runs reads them from Redis, seeded: ended, with their counts
            var other = new RedisRunState(connection, caps, TimeProvider.System, _prefix, holdTtl: TimeSpan.FromSeconds(30));
            _owned.Add(other);
            var ended = await other.TryStartAsync("k", run, 0.01m, default);
            Assert.Contains("has ended: max_turns (3), after 3 turns, 3 tool calls and $0.90 spent", ended!.Message);
            var done = await state.TryStartAsync("k", answered, 0.01m, default);
            Assert.Equal("done: answered", done!.Reason);
            // a run nobody has seen starts from zero
            Assert.Null(await other.TryStartAsync("k", run + "-new", 0.01m, default));
        }
        finally
        {
            await own.DisposeAsync();
        }
    }

    [Fact]
    public async Task Done_conditions_and_tool_call_caps_end_a_shared_run()
    {
        var caps = new RunCapOptions { MaxTurns = 10, MaxToolCalls = 3, StopMarker = "<DONE>" };
        var tracker = new RunTracker(caps, TimeProvider.System, RunState(caps, TimeSpan.FromSeconds(30)));
        var run = "run-" + Guid.NewGuid().ToString("N");
        Assert.True((await tracker.TryStartAsync("k", run, 0, default)).Started);
        Assert.Null(await tracker.CompleteAsync("k", run, new RunTurn(2, 0, "tool_calls", null), 0, local: false));
        Assert.True((await tracker.TryStartAsync("k", run, 0, default)).Started);
        Assert.Equal("max_tool_calls (3)", await tracker.CompleteAsync("k", run, new RunTurn(1, 0, "tool_calls", "<DONE>"), 0, local: false)); // caps first
        Assert.Equal("max_tool_calls (3)", (await tracker.EndedAsync("k", run, default))!.Reason);

        var marked = run + "-marker";
        Assert.True((await tracker.TryStartAsync("k", marked, 0, default)).Started);
        Assert.Equal("done: stop marker", await tracker.CompleteAsync("k", marked, new RunTurn(0, 0, "stop", "all good <DONE>"), 0, local: false));
        var start = await tracker.TryStartAsync("k", marked, 0, default);
        Assert.Equal("done: stop marker", start.Refusal!.Reason);
    }

    /// <summary>A gateway on a Redis address nothing answers on (each attempt gives up after half a second), its key limited to a request a minute.</summary>
    private static async Task<(ConfiguredGateway Gateway, RedisServer Gone)> UnreachableAsync(params string[] extra)
    {
        var gone = new RedisServer();
        await gone.InitializeAsync();
        gone.Stop();
        var gw = new ConfiguredGateway([$"--Bursar:Redis:Configuration={gone.ConnectionString},connectTimeout=500,asyncTimeout=500,syncTimeout=500", .. extra]);
        await gw.InitializeAsync();
        var (status, body) = await gw.AdminAsync(HttpMethod.Put, $"/admin/rate-limits/key/{await gw.KeyIdAsync(gw.Key)}", new { requests_per_minute = 1 });
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        return (gw, gone);
    }

    [Fact]
    public async Task With_redis_unreachable_rate_limits_and_runs_fail_closed_with_a_503_in_the_caller_s_dialect_naming_redis()
    {
        var (closed, gone) = await UnreachableAsync();
        try
        {
            var chat = await SendAsync(closed, closed.Key, Chat("limited"));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, chat.Status);
            Assert.Equal("rate_limit_store_unavailable", chat.Body!["error"]!["code"]!.GetValue<string>());
            Assert.Contains($"Redis at 127.0.0.1:{gone.Port}", chat.Body["error"]!["message"]!.GetValue<string>());
            Assert.Contains("WhenSharedCountersDown", chat.Body["error"]!["message"]!.GetValue<string>());
            var messages = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 16, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) }.ToJsonString();
            var anthropic = await SendAsync(closed, closed.Key, messages, path: "/v1/messages");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, anthropic.Status);
            Assert.Equal("error", anthropic.Body!["type"]!.GetValue<string>());
            Assert.Contains("Redis at", anthropic.Body["error"]!["message"]!.GetValue<string>());
            // a run's call by a key no limit applies to: the run caps cannot be checked either
            var unlimited = await closed.CreateKeyAsync(team: null);
            var run = await SendAsync(closed, unlimited, Chat("run call"), "run-down");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, run.Status);
            Assert.Equal("run_store_unavailable", run.Body!["error"]!["code"]!.GetValue<string>());
            Assert.Contains("shared run state (Redis at", run.Body["error"]!["message"]!.GetValue<string>());
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(closed, unlimited, Chat("no run, no limit"))).Status); // nothing shared applies
            Assert.True(closed.Services.GetRequiredService<RateLimiter>().SharedFailures >= 2);
            var rows = await closed.LedgerAsync("shared-state", 4);
            Assert.Equal(3, rows.Count(r => r.ErrorType is "rate_limit_store_unavailable" or "run_store_unavailable" && r.Cost == 0m));
        }
        finally
        {
            await closed.DisposeAsync();
            await gone.DisposeAsync();
        }
    }

    [Fact]
    public async Task With_redis_unreachable_and_local_counters_configured_limits_and_runs_count_in_the_instance()
    {
        var (local, gone) = await UnreachableAsync("--Bursar:Budgets:WhenSharedCountersDown=LocalCounters");
        try
        {
            // counted in the instance (with a logged warning): the limit still holds there
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(local, local.Key, Chat("first"))).Status);
            var second = await SendAsync(local, local.Key, Chat("second"));
            Assert.Equal(HttpStatusCode.TooManyRequests, second.Status);
            Assert.Equal("rate_limit_exceeded", second.Body!["error"]!["code"]!.GetValue<string>());
            var localKey = await local.CreateKeyAsync(team: null);
            Assert.Equal(HttpStatusCode.OK, (await SendAsync(local, localKey, Chat("run, counted here"), "run-local")).Status);
            var runs = local.Services.GetRequiredService<RunTracker>();
            Assert.Equal(1, runs.Find(await local.KeyIdAsync(localKey), "run-local")?.Turns);
            Assert.True(runs.SharedFailures >= 1);
            Assert.True(local.Services.GetRequiredService<RateLimiter>().SharedFailures >= 2);
        }
        finally
        {
            await local.DisposeAsync();
            await gone.DisposeAsync();
        }
    }

    // ---- exact-cache stampede protection across instances: the fill lock ----

    private static string Deterministic(string text) => new JsonObject
    {
        ["model"] = "gpt-4o-mini", ["temperature"] = 0, ["max_tokens"] = 16,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
    }.ToJsonString();

    /// <summary>The cache key a gateway computes for this key's chat call (no tags: the key's own tenant).</summary>
    private static async Task<string> CacheKeyAsync(GatewayFixture gw, string json)
    {
        var key = (await gw.Store.ListAsync(default)).Single(k => k.Hash == VirtualKey.HashSecret(gw.Key));
        var tenant = Bursar.Core.Caching.ResponseCacheKey.Tenant(key, new Bursar.Core.Attribution.CallAttribution { KeyId = key.Id });
        return Bursar.Core.Caching.ResponseCacheKey.Compute(tenant, "openai", stream: false, JsonNode.Parse(json)!.AsObject());
    }

    private RedisResponseCacheFillLock FillLock(TimeSpan ttl) =>
        new(Connect(), new Bursar.Core.Caching.ResponseCacheOptions { FillLockTtl = ttl, RedisTimeout = TimeSpan.FromSeconds(2) }, Microsoft.Extensions.Logging.Abstractions.NullLogger<RedisResponseCacheFillLock>.Instance);

    private static async Task<(HttpStatusCode Status, string? Cache, string Body)> CachedSendAsync(GatewayFixture gw, string key, string json)
    {
        using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", json, key, "fill-lock"));
        return (resp.StatusCode, resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null, await resp.Content.ReadAsStringAsync());
    }

    /// <summary>Polls until <paramref name="done"/> holds (generous: a loaded machine).</summary>
    private static async Task EventuallyAsync(Func<bool> done, string what)
    {
        for (var i = 0; i < 300 && !done(); i++) await Task.Delay(50);
        Assert.True(done(), what);
    }

    [Fact]
    public async Task Concurrent_identical_misses_on_two_gateways_make_one_upstream_call()
    {
        // each upstream call takes four seconds: the six calls below overlap, three on each instance, even when a loaded
        // machine is slow to deliver some of them. Redis gets 5 s to answer: one slower than RedisTimeout is a miss and a
        // granted lock by design (the call goes upstream, as without a shared cache), which is not what this test is about.
        var (a, b, _) = await TwoInstancesAsync($"--Bursar:ResponseCache:Redis={redis.ConnectionString}", "--Bursar:ResponseCache:RedisTimeout=00:00:05",
            "--Bursar:Simulator:TimeToFirstToken=00:00:04");
        try
        {
            var json = Deterministic("Stampede " + Guid.NewGuid());
            var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => CachedSendAsync(i % 2 == 0 ? a : b, a.Key, json)));
            Assert.All(answers, r => Assert.Equal(HttpStatusCode.OK, r.Status));
            Assert.Single(answers, r => r.Cache == "miss");
            Assert.Equal(5, answers.Count(r => r.Cache == "hit"));
            Assert.Single(answers.Select(r => r.Body).Distinct());
            var rows = (await a.LedgerAsync("fill-lock", 3)).Concat(await b.LedgerAsync("fill-lock", 3)).ToArray();
            Assert.Equal(6, rows.Length);
            Assert.Single(rows, r => r.Provider != "bursar-cache"); // one call paid for, by one instance
            // the instance that did not lead waited on the other's lock instead of calling
            var contended = new[] { a, b }.Sum(g => ((RedisResponseCacheFillLock)g.Services.GetRequiredService<Bursar.Core.Caching.IResponseCacheFillLock>()).Contended);
            Assert.True(contended >= 1, "no instance found the fill lock held");
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_instance_that_finds_the_fill_lock_held_waits_and_serves_the_holder_s_entry()
    {
        var gw = new ConfiguredGateway([$"--Bursar:ResponseCache:Redis={redis.ConnectionString}"]);
        await gw.InitializeAsync();
        try
        {
            var json = Deterministic("Held elsewhere " + Guid.NewGuid());
            var key = await CacheKeyAsync(gw, json);
            var other = FillLock(TimeSpan.FromSeconds(30)); // another instance, filling this key
            Assert.True(await other.TryAcquireAsync(key, default));
            Assert.False(await FillLock(TimeSpan.FromSeconds(30)).TryAcquireAsync(key, default)); // one holder at a time

            var pending = CachedSendAsync(gw, gw.Key, json);
            var mine = (RedisResponseCacheFillLock)gw.Services.GetRequiredService<Bursar.Core.Caching.IResponseCacheFillLock>();
            await EventuallyAsync(() => mine.Contended >= 1, "the gateway never found the lock held");
            Assert.False(pending.IsCompleted, "the gateway answered while another instance held the fill lock and no entry existed");

            // the holder stores its answer and lets go: the waiting gateway serves it, without calling upstream
            var body = """{"id":"chatcmpl-elsewhere","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"from the other instance"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}""";
            var store = new RedisResponseCacheStore(Connect(), new Bursar.Core.Caching.ResponseCacheOptions { RedisTimeout = TimeSpan.FromSeconds(2) }, Microsoft.Extensions.Logging.Abstractions.NullLogger<RedisResponseCacheStore>.Instance);
            await store.SetAsync(key, new Bursar.Core.Caching.CachedResponse(System.Text.Encoding.UTF8.GetBytes(body), "application/json", "gpt-4o-mini", 0.00001m, 9, 4, DateTimeOffset.UtcNow), TimeSpan.FromMinutes(5), default);
            await other.ReleaseAsync(key);
            var answer = await pending.WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal((HttpStatusCode.OK, "hit"), (answer.Status, answer.Cache));
            Assert.Contains("from the other instance", answer.Body);
            Assert.Equal("bursar-cache", Assert.Single(await gw.LedgerAsync("fill-lock")).Provider);
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_holder_that_fails_or_dies_lets_the_waiting_instance_call_upstream_itself()
    {
        var gw = new ConfiguredGateway([$"--Bursar:ResponseCache:Redis={redis.ConnectionString}"]);
        await gw.InitializeAsync();
        try
        {
            var mine = (RedisResponseCacheFillLock)gw.Services.GetRequiredService<Bursar.Core.Caching.IResponseCacheFillLock>();
            // failed: the holder gives the lock back without an entry
            var failed = Deterministic("Holder fails " + Guid.NewGuid());
            var key = await CacheKeyAsync(gw, failed);
            var holder = FillLock(TimeSpan.FromSeconds(30));
            Assert.True(await holder.TryAcquireAsync(key, default));
            var pending = CachedSendAsync(gw, gw.Key, failed);
            await EventuallyAsync(() => mine.Contended >= 1, "the gateway never found the lock held");
            await holder.ReleaseAsync(key);
            var answer = await pending.WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal((HttpStatusCode.OK, "miss"), (answer.Status, answer.Cache));
            Assert.NotEqual("bursar-cache", Assert.Single(await gw.LedgerAsync("fill-lock")).Provider);

            // died: the lock is never given back and lapses after its TTL (a second here)
            var died = Deterministic("Holder dies " + Guid.NewGuid());
            var deadKey = await CacheKeyAsync(gw, died);
            var dead = FillLock(TimeSpan.FromSeconds(1));
            Assert.True(await dead.TryAcquireAsync(deadKey, default));
            dead.Dispose(); // its instance dies: no renewals, no release
            var before = mine.Contended;
            var late = await CachedSendAsync(gw, gw.Key, died).WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal((HttpStatusCode.OK, "miss"), (late.Status, late.Cache));
            Assert.True(mine.Contended > before, "the gateway did not wait on the dead holder's lock");
            // and the entry it stored serves the next identical call
            Assert.Equal("hit", (await CachedSendAsync(gw, gw.Key, died)).Cache);
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_release_frees_only_the_holder_s_own_lock()
    {
        var key = "lock-" + Guid.NewGuid().ToString("N");
        var first = FillLock(TimeSpan.FromSeconds(1));
        var second = FillLock(TimeSpan.FromSeconds(30));
        Assert.True(await first.TryAcquireAsync(key, default));
        Assert.False(await second.TryAcquireAsync(key, default));
        await second.ReleaseAsync(key); // not its lock: nothing happens
        Assert.False(await second.TryAcquireAsync(key, default));
        Assert.Equal(2, second.Contended);
        // the first holder stops renewing (it froze), its lock lapses; the second takes it; the first's late release must not free the second's
        first.Dispose();
        for (var i = 0; i < 100 && !await second.TryAcquireAsync(key, default); i++) await Task.Delay(50);
        await first.ReleaseAsync(key);
        Assert.False(await FillLock(TimeSpan.FromSeconds(30)).TryAcquireAsync(key, default));
        await second.ReleaseAsync(key);
        Assert.True(await FillLock(TimeSpan.FromSeconds(30)).TryAcquireAsync(key, default));
    }

    [Fact]
    public async Task A_held_fill_lock_is_renewed_past_its_ttl_until_released()
    {
        var key = "lock-" + Guid.NewGuid().ToString("N");
        // a 2 s lock renewed every 667 ms: a 1 s lock lapsed once in a loaded CI run, when the pool ran no renewal for over 667 ms
        using var holder = FillLock(TimeSpan.FromSeconds(2));
        Assert.True(await holder.TryAcquireAsync(key, default));
        await Task.Delay(TimeSpan.FromSeconds(5)); // two and a half TTLs
        Assert.True(holder.Renewed >= 2, $"renewed {holder.Renewed} times");
        Assert.False(await FillLock(TimeSpan.FromSeconds(30)).TryAcquireAsync(key, default)); // still held
        await holder.ReleaseAsync(key);
        Assert.True(await FillLock(TimeSpan.FromSeconds(30)).TryAcquireAsync(key, default));
    }

    [Fact]
    public async Task A_provider_call_slower_than_the_fill_lock_ttl_is_still_made_once_across_two_gateways()
    {
        // the lock lives one second, the upstream call takes three: the holder keeps it, the other instance keeps waiting
        var (a, b, _) = await TwoInstancesAsync($"--Bursar:ResponseCache:Redis={redis.ConnectionString}", "--Bursar:ResponseCache:RedisTimeout=00:00:05",
            "--Bursar:ResponseCache:FillLockTtl=00:00:01", "--Bursar:Simulator:TimeToFirstToken=00:00:03");
        try
        {
            var json = Deterministic("Slow fill " + Guid.NewGuid());
            var leading = CachedSendAsync(a, a.Key, json);
            var lockOf = (RedisResponseCacheFillLock)a.Services.GetRequiredService<Bursar.Core.Caching.IResponseCacheFillLock>();
            var key = await CacheKeyAsync(a, json);
            var db = Connect().GetDatabase();
            await EventuallyAsync(() => db.KeyExists("bursar:rcl:" + key), "a never took the fill lock");
            var following = CachedSendAsync(b, a.Key, json);
            var answers = await Task.WhenAll(leading, following).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal((HttpStatusCode.OK, "miss"), (answers[0].Status, answers[0].Cache));
            Assert.Equal((HttpStatusCode.OK, "hit"), (answers[1].Status, answers[1].Cache));
            Assert.True(lockOf.Renewed >= 1, "the holder never renewed its lock");
            Assert.Equal("bursar-cache", Assert.Single(await b.LedgerAsync("fill-lock")).Provider);
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_lock_whose_acquire_timed_out_but_landed_is_deleted_by_its_release()
    {
        var key = "lock-" + Guid.NewGuid().ToString("N");
        var slow = new RedisResponseCacheFillLock(Connect(), new Bursar.Core.Caching.ResponseCacheOptions { FillLockTtl = TimeSpan.FromSeconds(30), RedisTimeout = TimeSpan.FromMilliseconds(50) },
            Microsoft.Extensions.Logging.Abstractions.NullLogger<RedisResponseCacheFillLock>.Instance);
        var config = ConfigurationOptions.Parse(redis.ConnectionString);
        config.AllowAdmin = true;
        using var admin = await ConnectionMultiplexer.ConnectAsync(config);
        // writes held for 600 ms: the SET NX outlives the 50 ms timeout (granted, as Redis down is), then lands
        await admin.GetServer(admin.GetEndPoints()[0]).ExecuteAsync("CLIENT", "PAUSE", "600", "WRITE");
        Assert.True(await slow.TryAcquireAsync(key, default));
        var db = admin.GetDatabase();
        for (var i = 0; i < 100 && !await db.KeyExistsAsync("bursar:rcl:" + key); i++) await Task.Delay(20);
        Assert.True(await db.KeyExistsAsync("bursar:rcl:" + key), "the timed-out SET never landed");
        await slow.ReleaseAsync(key);
        // its own token: deleted at once, not left locked for the 30 s TTL
        Assert.False(await db.KeyExistsAsync("bursar:rcl:" + key));
        Assert.True(await FillLock(TimeSpan.FromSeconds(30)).TryAcquireAsync(key, default));
    }

    // ---- semantic-cache entries shared through Redis, each instance's index warmed from them ----

    private static async Task<(HttpStatusCode Status, string? Cache)> AskAsync(GatewayFixture gw, string key, string question)
    {
        var json = new JsonObject { ["model"] = "gpt-4o-mini", ["temperature"] = 0.7, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }) };
        using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", json.ToJsonString(), key, "semantic-faq"));
        return (resp.StatusCode, resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null);
    }

    [Fact]
    public async Task A_semantic_entry_stored_by_one_gateway_serves_similar_questions_on_another_and_on_one_started_later()
    {
        var prefix = $"--Bursar:ResponseCache:Redis={redis.ConnectionString}";
        var (a, b, _) = await TwoInstancesAsync(prefix);
        ConfiguredGateway? later = null;
        try
        {
            var salt = Guid.NewGuid().ToString("N")[..8];
            Assert.Equal((HttpStatusCode.OK, "miss"), await AskAsync(a, a.Key, $"How do I reset my password for account {salt}?"));
            // announced: b adds a's entry to its own index (b has answered nothing itself)
            var bEntries = (RedisSemanticEntries)b.Services.GetRequiredService<Bursar.Core.Caching.Semantic.ISharedSemanticEntries>();
            await EventuallyAsync(() => bEntries.Loaded >= 1, "b never loaded a's semantic entry");
            Assert.Equal((HttpStatusCode.OK, "semantic-hit"), await AskAsync(b, a.Key, $"how do I reset my password for account {salt}"));
            Assert.Equal("bursar-semantic-cache", Assert.Single(await b.LedgerAsync("semantic-faq")).Provider);

            // a gateway started afterwards loads what is stored
            later = new ConfiguredGateway([prefix]);
            await later.InitializeAsync();
            await later.Store.AddAsync((await a.Store.ListAsync(default)).Single(k => k.Hash == VirtualKey.HashSecret(a.Key)), default);
            var laterEntries = (RedisSemanticEntries)later.Services.GetRequiredService<Bursar.Core.Caching.Semantic.ISharedSemanticEntries>();
            await EventuallyAsync(() => laterEntries.Loaded >= 1, "the later gateway never loaded the stored semantic entry");
            Assert.Equal((HttpStatusCode.OK, "semantic-hit"), await AskAsync(later, a.Key, $"How do I reset my password for account {salt}"));
            // the tenant still bounds it: another key of the later gateway does not see acme's entry
            Assert.Equal("miss", (await AskAsync(later, later.Key, $"How do I reset my password for account {salt}?")).Cache);
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
            if (later is not null) await later.DisposeAsync();
        }
    }
}
