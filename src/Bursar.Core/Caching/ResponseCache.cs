using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Bursar.Core.Caching;

/// <summary>A stored answer: the exact bytes the caller received (JSON or SSE frames) and what the original call cost.</summary>
public sealed record CachedResponse(byte[] Body, string ContentType, string? Model, decimal? CostUsd, long InputTokens, long OutputTokens, DateTimeOffset StoredAt);

/// <summary>
/// Where exact-cache entries live: in-process by default (<see cref="MemoryResponseCacheStore"/>), shared across gateway instances
/// in Redis (<c>Bursar.Caching.Redis</c>). A store that cannot answer returns a miss; it never fails the call.
/// </summary>
public interface IResponseCacheStore
{
    ValueTask<CachedResponse?> GetAsync(string key, CancellationToken cancellationToken);
    ValueTask SetAsync(string key, CachedResponse response, TimeSpan ttl, CancellationToken cancellationToken);
}

/// <summary>
/// Stampede protection across gateway instances: before an instance's leader calls the provider for a missed key it
/// takes the key's fill lock; an instance that finds the lock held waits for the entry instead of paying for the same
/// answer. In process (one instance) every acquisition succeeds (<see cref="None"/>); in Redis it is a short-lived lock
/// key (<see cref="ResponseCacheOptions.FillLockTtl"/>), so a holder that dies never blocks the key for longer.
/// A lock store that cannot answer grants the lock (the call goes upstream, as it would with no cache), never fails it.
/// </summary>
public interface IResponseCacheFillLock
{
    /// <summary>True when this instance may fill <paramref name="key"/> (it holds the lock until <see cref="ReleaseAsync"/> or the TTL); false while another instance holds it.</summary>
    ValueTask<bool> TryAcquireAsync(string key, CancellationToken cancellationToken);

    /// <summary>Gives back a lock this instance holds (after the entry is stored, or the call failed); a lock it no longer holds is left alone.</summary>
    ValueTask ReleaseAsync(string key);

    /// <summary>One instance: no lock to take.</summary>
    public static IResponseCacheFillLock None { get; } = new NoFillLock();

    private sealed class NoFillLock : IResponseCacheFillLock
    {
        public ValueTask<bool> TryAcquireAsync(string key, CancellationToken cancellationToken) => new(true);
        public ValueTask ReleaseAsync(string key) => ValueTask.CompletedTask;
    }
}

/// <summary>Options of the exact response cache (<c>Bursar:ResponseCache</c>).</summary>
public sealed class ResponseCacheOptions
{
    /// <summary>A Redis connection string (<c>localhost:6379</c>): the cache is shared by every gateway instance. Default none: in-process.</summary>
    public string? Redis { get; set; }

    /// <summary>How long a Redis read or write may take before it counts as a miss. Default 50 ms.</summary>
    public TimeSpan RedisTimeout { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// With Redis: the TTL of an instance's claim to fill a missed entry (the lock key). A live holder renews it every
    /// third of this, however long its provider call takes; a holder that fails gives the lock back at once, one that
    /// dies lets it lapse after this long. Identical misses on other instances wait for the entry while the lock is
    /// held (up to <see cref="ExactCacheStage.FollowerWait"/>), then call the provider themselves. Default 30 s.
    /// </summary>
    public TimeSpan FillLockTtl { get; set; } = TimeSpan.FromSeconds(30);

    public const string Section = "Bursar:ResponseCache";

    /// <summary>Serve identical deterministic requests from the cache. Default true.</summary>
    public bool Enabled { get; set; } = true;
    /// <summary>How long an answer is reused. Default 1 hour.</summary>
    public TimeSpan DefaultTtl { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Per-feature (route) TTL overrides, e.g. <c>{"faq": "1.00:00:00"}</c>; a zero TTL turns caching off for the feature.</summary>
    public Dictionary<string, TimeSpan> TtlByFeature { get; set; } = new(StringComparer.Ordinal);
    /// <summary>Most entries kept in memory; the oldest are evicted beyond it. Default 100,000.</summary>
    public int MaxEntries { get; set; } = 100_000;
    /// <summary>Largest answer stored, bytes. Default 1 MB.</summary>
    public int MaxEntryBytes { get; set; } = 1024 * 1024;
    /// <summary>Most bytes the in-memory entries hold together (answers, keys and bookkeeping); the oldest are evicted beyond it. Default 256 MiB.</summary>
    public long MaxTotalBytes { get; set; } = 256L * 1024 * 1024;

    public TimeSpan TtlFor(string? feature) => feature is not null && TtlByFeature.TryGetValue(feature, out var t) ? t : DefaultTtl;

    public void Validate()
    {
        if (DefaultTtl < TimeSpan.Zero) throw new InvalidOperationException("Bursar:ResponseCache:DefaultTtl must not be negative.");
        if (FillLockTtl < TimeSpan.FromSeconds(1) || FillLockTtl > TimeSpan.FromMinutes(10))
            throw new InvalidOperationException($"Bursar:ResponseCache:FillLockTtl must be between 00:00:01 and 00:10:00, not {FillLockTtl}.");
        if (MaxEntries < 1) throw new InvalidOperationException("Bursar:ResponseCache:MaxEntries must be at least 1.");
        if (MaxEntryBytes < 1024) throw new InvalidOperationException("Bursar:ResponseCache:MaxEntryBytes must be at least 1024.");
        if (MaxTotalBytes < MaxEntryBytes) throw new InvalidOperationException($"Bursar:ResponseCache:MaxTotalBytes must be at least MaxEntryBytes ({MaxEntryBytes}).");
    }
}

/// <summary>
/// In-process exact cache with TTLs on a <see cref="TimeProvider"/>, bounded by entries and by bytes (oldest out first).
/// Each entry is charged its answer, its key and its bookkeeping, so a run of large answers cannot hold more than
/// <see cref="ResponseCacheOptions.MaxTotalBytes"/>; the eviction order holds each live entry once, however often it expires and is filled again.
/// </summary>
public sealed class MemoryResponseCacheStore(ResponseCacheOptions options, TimeProvider time) : IResponseCacheStore
{
    private sealed record Entry(CachedResponse Response, DateTimeOffset Expires, long Seq, long Bytes);

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly Queue<(string Key, long Seq)> _order = new(); // oldest first; a key whose entry was replaced or removed is skipped
    private readonly Lock _write = new();
    private long _seq;
    private long _bytes;

    public int Count => _entries.Count;

    /// <summary>Bytes charged to the entries held now.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Length of the eviction order (live entries plus replaced ones not yet skipped).</summary>
    internal int OrderLength { get { lock (_write) return _order.Count; } }

    /// <summary>What an entry is charged: its answer, its key and strings (UTF-16), and about 200 bytes of records and dictionary nodes.</summary>
    internal static long Charge(string key, CachedResponse r) => r.Body.Length + 2L * (key.Length + r.ContentType.Length + (r.Model?.Length ?? 0)) + 200;

    public ValueTask<CachedResponse?> GetAsync(string key, CancellationToken cancellationToken) => new(TryGet(key, out var r) ? r : null);

    public ValueTask SetAsync(string key, CachedResponse response, TimeSpan ttl, CancellationToken cancellationToken)
    {
        Set(key, response, ttl);
        return ValueTask.CompletedTask;
    }

    public bool TryGet(string key, out CachedResponse? response)
    {
        response = null;
        if (!_entries.TryGetValue(key, out var e)) return false;
        if (e.Expires <= time.GetUtcNow())
        {
            lock (_write) Remove(key, e);
            return false;
        }
        response = e.Response;
        return true;
    }

    public void Set(string key, CachedResponse response, TimeSpan ttl)
    {
        if (ttl <= TimeSpan.Zero || response.Body.Length > options.MaxEntryBytes) return;
        var charge = Charge(key, response);
        if (charge > options.MaxTotalBytes) return;
        lock (_write)
        {
            var entry = new Entry(response, time.GetUtcNow() + ttl, ++_seq, charge);
            if (_entries.TryGetValue(key, out var old)) Interlocked.Add(ref _bytes, -old.Bytes);
            _entries[key] = entry;
            Interlocked.Add(ref _bytes, charge);
            _order.Enqueue((key, entry.Seq));
            while ((_entries.Count > options.MaxEntries || _bytes > options.MaxTotalBytes) && _order.TryDequeue(out var oldest))
            {
                if (_entries.TryGetValue(oldest.Key, out var e) && e.Seq == oldest.Seq) Remove(oldest.Key, e);
            }
            if (_order.Count > 2 * _entries.Count + 1024) Compact();
        }
    }

    /// <summary>Under <see cref="_write"/>: removes <paramref name="key"/> if it still holds <paramref name="e"/>.</summary>
    private void Remove(string key, Entry e)
    {
        if (_entries.TryRemove(KeyValuePair.Create(key, e))) Interlocked.Add(ref _bytes, -e.Bytes);
    }

    /// <summary>Under <see cref="_write"/>: the eviction order again with only the live entries, oldest first.</summary>
    private void Compact()
    {
        var live = _entries.Select(kv => (kv.Key, kv.Value.Seq)).OrderBy(x => x.Seq).ToList();
        _order.Clear();
        foreach (var x in live) _order.Enqueue(x);
    }
}

/// <summary>
/// The exact-cache key: SHA-256 of the tenant, the dialect, whether the caller streams, and the request with its keys
/// sorted and fields that do not change the answer removed (stream options, user ids, metadata). Two requests that mean
/// the same thing get the same key; any difference in model, messages, tools or parameters gives another.
/// </summary>
public static class ResponseCacheKey
{
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal) { "stream_options", "user", "metadata", "safety_identifier", "store", "prompt_cache_key", "service_tier" };

    /// <summary>Deterministic requests only: temperature 0 (or top_k 1), unless the caller opts in explicitly.</summary>
    public static bool IsDeterministic(JsonObject body)
    {
        if (body["temperature"] is JsonValue t && t.TryGetValue<double>(out var temp) && temp == 0) return true;
        return body["top_k"] is JsonValue k && k.TryGetValue<int>(out var topK) && topK == 1;
    }

    public static string Compute(string tenant, string dialect, bool stream, JsonObject body)
    {
        using var ms = new MemoryStream(1024);
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("tenant", tenant);
            w.WriteString("dialect", dialect);
            w.WriteBoolean("stream", stream);
            w.WritePropertyName("request");
            WriteCanonical(w, body, top: true);
            w.WriteEndObject();
        }
        return Convert.ToHexStringLower(SHA256.HashData(ms.GetBuffer().AsSpan(0, (int)ms.Length)));
    }

    private static void WriteCanonical(Utf8JsonWriter w, JsonNode? node, bool top = false)
    {
        switch (node)
        {
            case null:
                w.WriteNullValue();
                break;
            case JsonObject o:
                w.WriteStartObject();
                foreach (var (k, v) in o.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    if (top && (Ignored.Contains(k) || k == "stream")) continue;
                    w.WritePropertyName(k);
                    WriteCanonical(w, v);
                }
                w.WriteEndObject();
                break;
            case JsonArray a:
                w.WriteStartArray();
                foreach (var v in a) WriteCanonical(w, v);
                w.WriteEndArray();
                break;
            default:
                node.WriteTo(w);
                break;
        }
    }

    /// <summary>
    /// Whose answers a call may read: the key's own scope (the team it fixes, else the customer it fixes, else the key itself), then the
    /// customer and team the call is attributed to. Tags a caller sends only narrow the scope, they never widen it: two keys share answers
    /// only when the operator gave them the same fixed team or customer, whatever headers their callers send.
    /// </summary>
    public static string Tenant(Keys.VirtualKey key, Attribution.CallAttribution attribution)
    {
        var scope = key.Team is not null ? "team:" + key.Team : key.Customer is not null ? "customer:" + key.Customer : "key:" + key.Id;
        // lengths first, so no tag value can imitate a separator
        return $"{scope.Length}:{scope}|c{attribution.Customer?.Length ?? -1}:{attribution.Customer}|t{attribution.Team?.Length ?? -1}:{attribution.Team}";
    }
}

/// <summary>
/// Stampede protection: concurrent identical misses make one upstream call. The first caller becomes the leader and
/// fills the entry; the others wait for it (up to a timeout) and are handed the leader's answer itself, so a follower
/// never depends on reading the entry back (a shared store that is slow to answer is a miss, which would be a second call).
/// </summary>
public sealed class CacheFillCoordinator
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource<CachedResponse?>> _inflight = new(StringComparer.Ordinal);

    /// <summary>True when this caller leads the fill of <paramref name="key"/>; otherwise <paramref name="wait"/> completes with the leader's answer (null: none to share).</summary>
    public bool TryLead(string key, out Task<CachedResponse?> wait)
    {
        var mine = new TaskCompletionSource<CachedResponse?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var tcs = _inflight.GetOrAdd(key, mine);
        wait = tcs.Task;
        return ReferenceEquals(tcs, mine);
    }

    /// <summary>The leader is done; <paramref name="answer"/> is what it stored (or found stored by another instance), null when the call failed.</summary>
    public void Complete(string key, CachedResponse? answer)
    {
        if (_inflight.TryRemove(key, out var tcs)) tcs.TrySetResult(answer);
    }
}
