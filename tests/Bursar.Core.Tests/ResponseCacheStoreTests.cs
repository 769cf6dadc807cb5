using System.Text.Json.Nodes;
using Bursar.Core.Caching;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests;

public sealed class ResponseCacheStoreTests
{
    private static CachedResponse R(string body) => new(System.Text.Encoding.UTF8.GetBytes(body), "application/json", "m", 0.01m, 10, 5, DateTimeOffset.UnixEpoch);

    [Fact]
    public void Entries_expire_after_their_ttl()
    {
        var time = new FakeTimeProvider();
        var store = new MemoryResponseCacheStore(new ResponseCacheOptions(), time);
        store.Set("k", R("a"), TimeSpan.FromMinutes(10));
        time.Advance(TimeSpan.FromMinutes(9));
        Assert.True(store.TryGet("k", out _));
        time.Advance(TimeSpan.FromMinutes(2));
        Assert.False(store.TryGet("k", out _));
    }

    [Fact]
    public void The_oldest_entries_are_evicted_beyond_the_bound_and_oversize_answers_are_not_stored()
    {
        var store = new MemoryResponseCacheStore(new ResponseCacheOptions { MaxEntries = 2, MaxEntryBytes = 1024 }, new FakeTimeProvider());
        store.Set("a", R("1"), TimeSpan.FromHours(1));
        store.Set("b", R("2"), TimeSpan.FromHours(1));
        store.Set("c", R("3"), TimeSpan.FromHours(1));
        Assert.False(store.TryGet("a", out _));
        Assert.True(store.TryGet("c", out _));
        store.Set("big", R(new string('x', 2000)), TimeSpan.FromHours(1));
        Assert.False(store.TryGet("big", out _));
    }

    [Fact]
    public void The_entries_together_stay_within_the_byte_bound_oldest_out_first()
    {
        var store = new MemoryResponseCacheStore(new ResponseCacheOptions { MaxEntryBytes = 4096, MaxTotalBytes = 10_000 }, new FakeTimeProvider());
        for (var i = 0; i < 4; i++) store.Set("k" + i, R(new string('x', 3000)), TimeSpan.FromHours(1));
        Assert.InRange(store.Bytes, 1, 10_000);
        Assert.Equal(3, store.Count); // three 3 KB answers and their bookkeeping fit in 10,000 bytes, four do not
        Assert.False(store.TryGet("k0", out _));
        Assert.True(store.TryGet("k3", out _));
        store.Set("k3", R("small"), TimeSpan.FromHours(1)); // a replaced entry is charged anew
        Assert.Equal(2 * MemoryResponseCacheStore.Charge("k1", R(new string('x', 3000))) + MemoryResponseCacheStore.Charge("k3", R("small")), store.Bytes);
    }

    [Fact]
    public void An_entry_that_expires_and_is_filled_again_and_again_does_not_grow_the_eviction_order()
    {
        var time = new FakeTimeProvider();
        var store = new MemoryResponseCacheStore(new ResponseCacheOptions(), time);
        for (var i = 0; i < 5000; i++)
        {
            store.Set("k", R("answer " + i), TimeSpan.FromMinutes(1));
            time.Advance(TimeSpan.FromMinutes(2));
            Assert.False(store.TryGet("k", out _));
        }
        Assert.Equal(0, store.Count);
        Assert.Equal(0, store.Bytes);
        Assert.InRange(store.OrderLength, 0, 1025);
    }

    [Fact]
    public void An_entry_reads_back_exactly_as_stored_whatever_its_fields()
    {
        var store = new MemoryResponseCacheStore(new ResponseCacheOptions(), new FakeTimeProvider());
        var stored = new DateTimeOffset(2026, 12, 3, 13, 5, 7, 123, TimeSpan.FromHours(5.5));
        var entries = new Dictionary<string, CachedResponse>
        {
            [new string('a', 64)] = new("data: {\"x\":1}\n\n"u8.ToArray(), "text/event-stream", "claude-haiku-4-5", 0.000000123456789m, 1_234_567, 89, stored),
            [new string('b', 64)] = new([], "application/json", null, null, 0, 0, DateTimeOffset.UnixEpoch),
            ["not a hash: ключ 鍵"] = new(System.Text.Encoding.UTF8.GetBytes("{\"réponse\":\"日本語\"}"), "application/json; charset=utf-8", "modèle-ü", -1.5m, long.MaxValue, 1, stored),
        };
        foreach (var (key, r) in entries) store.Set(key, r, TimeSpan.FromHours(1));
        foreach (var (key, r) in entries)
        {
            Assert.True(store.TryGet(key, out var back), key);
            Assert.Equal(r.Body, back!.Body);
            Assert.Equal((r.ContentType, r.Model, r.CostUsd, r.InputTokens, r.OutputTokens, r.StoredAt, r.StoredAt.Offset),
                (back.ContentType, back.Model, back.CostUsd, back.InputTokens, back.OutputTokens, back.StoredAt, back.StoredAt.Offset));
            if (r.Body.Length > 0) Assert.NotSame(r.Body, back.Body); // a copy: a caller cannot change the entry
        }
        Assert.False(store.TryGet(new string('a', 63) + "b", out _)); // same first 128 bits, another key: a miss
        Assert.False(store.TryGet("not a hash: ключ", out _));
    }

    [Fact]
    public async Task Concurrent_writers_and_readers_only_ever_read_the_answer_stored_under_a_key()
    {
        var store = new MemoryResponseCacheStore(new ResponseCacheOptions { MaxEntries = 500 }, new FakeTimeProvider());
        var wrong = 0;
        await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(() =>
        {
            for (var i = 0; i < 20_000; i++)
            {
                var key = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(i % 2000)));
                if (store.TryGet(key, out var r) && System.Text.Encoding.UTF8.GetString(r!.Body) != "answer " + (i % 2000)) Interlocked.Increment(ref wrong);
                else store.Set(key, R("answer " + (i % 2000)), TimeSpan.FromHours(1));
            }
        })));
        Assert.Equal(0, wrong);
        Assert.InRange(store.Count, 1, 500);
        Assert.Equal(store.Count * MemoryResponseCacheStore.Charge(new string('0', 64), R("answer 1000")), store.Bytes, tolerance: store.Count * 4);
    }

    [Fact]
    public void Keys_ignore_order_and_non_semantic_fields_but_not_content()
    {
        var a = (JsonObject)JsonNode.Parse("""{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"user":"u1"}""")!;
        var b = (JsonObject)JsonNode.Parse("""{"messages":[{"content":"hi","role":"user"}],"user":"u2","temperature":0,"model":"m","stream_options":{"include_usage":true}}""")!;
        var c = (JsonObject)JsonNode.Parse("""{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi!"}]}""")!;
        Assert.Equal(ResponseCacheKey.Compute("t", "openai", false, a), ResponseCacheKey.Compute("t", "openai", false, b));
        Assert.NotEqual(ResponseCacheKey.Compute("t", "openai", false, a), ResponseCacheKey.Compute("t", "openai", false, c));
        Assert.NotEqual(ResponseCacheKey.Compute("t", "openai", false, a), ResponseCacheKey.Compute("t2", "openai", false, a));
        Assert.NotEqual(ResponseCacheKey.Compute("t", "openai", false, a), ResponseCacheKey.Compute("t", "openai", true, a));
    }

    [Fact]
    public async Task Only_the_first_of_concurrent_fillers_leads()
    {
        var f = new CacheFillCoordinator();
        Assert.True(f.TryLead("k", out _));
        Assert.False(f.TryLead("k", out var wait));
        Assert.False(wait.IsCompleted);
        var answer = new CachedResponse([1, 2], "application/json", "m", 0.01m, 3, 4, DateTimeOffset.UnixEpoch);
        f.Complete("k", answer);
        Assert.Same(answer, await wait); // the follower is handed the leader's answer itself
        Assert.True(f.TryLead("k", out _)); // a new round after completion
    }
}
