using System.Buffers.Binary;
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
/// <para>
/// An entry is one byte array on the pinned object heap (its key, answer and bookkeeping encoded together) found through a
/// dictionary of 128-bit ids: no object per entry holds a reference the collector must trace, and none is ever copied from
/// generation to generation. A cache full of entries that each live for minutes and die in gen2 (every call a new answer,
/// the oldest evicted) would otherwise keep the background collector busy on the cores serving calls. Entries are never
/// changed once written, so a hit is decoded outside the lock.
/// </para>
/// </summary>
public sealed class MemoryResponseCacheStore(ResponseCacheOptions options, TimeProvider time) : IResponseCacheStore
{
    // record layout: expires (UTC ticks) 8 | seq 8 | stored at (UTC ticks) 8 | its offset (minutes) 2 | flags 1 (1 cost, 2 model)
    // | cost (decimal) 16 | input tokens 8 | output tokens 8 | key, content type, model byte lengths 3 x 4 | key | content type | model | body
    private const int Fixed = 8 + 8 + 8 + 2 + 1 + 16 + 8 + 8 + 12;

    /// <summary>What each entry costs beyond its record: its dictionary slot and its place in the eviction order.</summary>
    private const int Bookkeeping = 64;

    private readonly Dictionary<UInt128, byte[]> _entries = [];
    private readonly Queue<(UInt128 Id, long Seq)> _order = new(); // oldest first; an id whose entry was replaced or removed is skipped
    private readonly Lock _lock = new();
    private long _seq;
    private long _bytes;

    public int Count { get { lock (_lock) return _entries.Count; } }

    /// <summary>Bytes charged to the entries held now.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Length of the eviction order (live entries plus replaced ones not yet skipped).</summary>
    internal int OrderLength { get { lock (_lock) return _order.Count; } }

    /// <summary>What an entry is charged: its record (answer, key, strings as UTF-8, fixed fields) and its bookkeeping.</summary>
    internal static long Charge(string key, CachedResponse r) => RecordLength(key, r) + Bookkeeping;

    private static int RecordLength(string key, CachedResponse r) =>
        Fixed + Encoding.UTF8.GetByteCount(key) + Encoding.UTF8.GetByteCount(r.ContentType) + (r.Model is null ? 0 : Encoding.UTF8.GetByteCount(r.Model)) + r.Body.Length;

    public ValueTask<CachedResponse?> GetAsync(string key, CancellationToken cancellationToken) => new(TryGet(key, out var r) ? r : null);

    public ValueTask SetAsync(string key, CachedResponse response, TimeSpan ttl, CancellationToken cancellationToken)
    {
        Set(key, response, ttl);
        return ValueTask.CompletedTask;
    }

    public bool TryGet(string key, out CachedResponse? response)
    {
        response = null;
        var id = Id(key);
        byte[]? record;
        lock (_lock)
        {
            if (!_entries.TryGetValue(id, out record)) return false;
            if (Expires(record) <= time.GetUtcNow().UtcTicks)
            {
                Remove(id, record);
                return false;
            }
        }
        Span<byte> utf8 = key.Length <= 128 ? stackalloc byte[key.Length * 3] : new byte[Encoding.UTF8.GetMaxByteCount(key.Length)];
        if (!KeyOf(record).SequenceEqual(utf8[..Encoding.UTF8.GetBytes(key, utf8)])) return false; // another key with the same id (never seen; 2^-128)
        response = Decode(record);
        return true;
    }

    public void Set(string key, CachedResponse response, TimeSpan ttl)
    {
        if (ttl <= TimeSpan.Zero || response.Body.Length > options.MaxEntryBytes) return;
        var charge = Charge(key, response);
        if (charge > options.MaxTotalBytes) return;
        var id = Id(key);
        var record = GC.AllocateUninitializedArray<byte>(RecordLength(key, response), pinned: true);
        lock (_lock)
        {
            var seq = ++_seq;
            Encode(record, key, response, (time.GetUtcNow() + ttl).UtcTicks, seq);
            if (_entries.TryGetValue(id, out var old)) Interlocked.Add(ref _bytes, -(old.Length + Bookkeeping));
            _entries[id] = record;
            Interlocked.Add(ref _bytes, charge);
            _order.Enqueue((id, seq));
            while ((_entries.Count > options.MaxEntries || _bytes > options.MaxTotalBytes) && _order.TryDequeue(out var oldest))
            {
                if (_entries.TryGetValue(oldest.Id, out var e) && Seq(e) == oldest.Seq) Remove(oldest.Id, e);
            }
            if (_order.Count > 2 * _entries.Count + 1024) Compact();
        }
    }

    /// <summary>Under <see cref="_lock"/>: removes <paramref name="id"/> if it still holds <paramref name="record"/>.</summary>
    private void Remove(UInt128 id, byte[] record)
    {
        if (_entries.TryGetValue(id, out var held) && ReferenceEquals(held, record) && _entries.Remove(id)) Interlocked.Add(ref _bytes, -(record.Length + Bookkeeping));
    }

    /// <summary>Under <see cref="_lock"/>: the eviction order again with only the live entries, oldest first.</summary>
    private void Compact()
    {
        var live = _entries.Select(kv => (kv.Key, Seq(kv.Value))).OrderBy(x => x.Item2).ToList();
        _order.Clear();
        foreach (var x in live) _order.Enqueue(x);
    }

    /// <summary>
    /// The entry's id: an exact-cache key is the hex of a SHA-256 (<see cref="ResponseCacheKey"/>), whose first 128 bits are
    /// used as they are; any other key is hashed first. The whole key is kept in the record and compared on every hit.
    /// </summary>
    private static UInt128 Id(string key)
    {
        Span<byte> bytes = stackalloc byte[32];
        if (key.Length == 64 && Convert.FromHexString(key.AsSpan(0, 32), bytes[..16], out _, out var written) == System.Buffers.OperationStatus.Done && written == 16)
            return BinaryPrimitives.ReadUInt128LittleEndian(bytes);
        SHA256.HashData(Encoding.UTF8.GetBytes(key), bytes);
        return BinaryPrimitives.ReadUInt128LittleEndian(bytes);
    }

    private static long Expires(byte[] r) => BinaryPrimitives.ReadInt64LittleEndian(r);
    private static long Seq(byte[] r) => BinaryPrimitives.ReadInt64LittleEndian(r.AsSpan(8));
    private static int Length(byte[] r, int i) => BinaryPrimitives.ReadInt32LittleEndian(r.AsSpan(Fixed - 12 + 4 * i));
    private static ReadOnlySpan<byte> KeyOf(byte[] r) => r.AsSpan(Fixed, Length(r, 0));

    private static void Encode(Span<byte> r, string key, CachedResponse c, long expires, long seq)
    {
        BinaryPrimitives.WriteInt64LittleEndian(r, expires);
        BinaryPrimitives.WriteInt64LittleEndian(r[8..], seq);
        BinaryPrimitives.WriteInt64LittleEndian(r[16..], c.StoredAt.UtcTicks);
        BinaryPrimitives.WriteInt16LittleEndian(r[24..], (short)c.StoredAt.Offset.TotalMinutes);
        r[26] = (byte)((c.CostUsd is null ? 0 : 1) | (c.Model is null ? 0 : 2));
        Span<int> bits = stackalloc int[4];
        decimal.GetBits(c.CostUsd ?? 0m, bits);
        for (var i = 0; i < 4; i++) BinaryPrimitives.WriteInt32LittleEndian(r[(27 + 4 * i)..], bits[i]);
        BinaryPrimitives.WriteInt64LittleEndian(r[43..], c.InputTokens);
        BinaryPrimitives.WriteInt64LittleEndian(r[51..], c.OutputTokens);
        var at = Fixed;
        var lengths = Fixed - 12;
        foreach (var text in (ReadOnlySpan<string?>)[key, c.ContentType, c.Model])
        {
            var n = text is null ? 0 : Encoding.UTF8.GetBytes(text, r[at..]);
            BinaryPrimitives.WriteInt32LittleEndian(r[lengths..], n);
            (at, lengths) = (at + n, lengths + 4);
        }
        c.Body.CopyTo(r[at..]);
    }

    private static CachedResponse Decode(byte[] r)
    {
        var s = (ReadOnlySpan<byte>)r;
        var flags = r[26];
        Span<int> bits = stackalloc int[4];
        for (var i = 0; i < 4; i++) bits[i] = BinaryPrimitives.ReadInt32LittleEndian(s[(27 + 4 * i)..]);
        var (keyLength, typeLength, modelLength) = (Length(r, 0), Length(r, 1), Length(r, 2));
        var at = Fixed + keyLength;
        var contentType = ContentType(s.Slice(at, typeLength));
        at += typeLength;
        var model = (flags & 2) == 0 ? null : Encoding.UTF8.GetString(s.Slice(at, modelLength));
        at += modelLength;
        var storedAt = new DateTimeOffset(BinaryPrimitives.ReadInt64LittleEndian(s[16..]), TimeSpan.Zero)
            .ToOffset(TimeSpan.FromMinutes(BinaryPrimitives.ReadInt16LittleEndian(s[24..])));
        return new CachedResponse(s[at..].ToArray(), contentType, model, (flags & 1) == 0 ? null : new decimal(bits),
            BinaryPrimitives.ReadInt64LittleEndian(s[43..]), BinaryPrimitives.ReadInt64LittleEndian(s[51..]), storedAt);
    }

    /// <summary>The two content types answers have, without a string per hit.</summary>
    private static string ContentType(ReadOnlySpan<byte> utf8) =>
        utf8.SequenceEqual("application/json"u8) ? "application/json" : utf8.SequenceEqual("text/event-stream"u8) ? "text/event-stream" : Encoding.UTF8.GetString(utf8);
}

/// <summary>
/// The exact-cache key: SHA-256 of the tenant, the dialect, whether the caller streams, and the request with its keys
/// sorted and fields that do not change the answer removed (stream options, user ids, metadata). Two requests that mean
/// the same thing get the same key; any difference in model, messages, tools or parameters gives another.
/// </summary>
public static class ResponseCacheKey
{
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal) { "stream_options", "user", "metadata", "safety_identifier", "store", "prompt_cache_key", "service_tier" };

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
