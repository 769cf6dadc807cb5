using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text.Json;
using Bursar.Core.Caching;
using Bursar.Core.Caching.Semantic;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// Semantic-cache entries in Redis, shared by the gateway instances on one Redis cache: one string per entry
/// (<c>{prefix}e:{id}</c>: a little-endian header length, a JSON header with the partition, the question and the instance
/// that stored it, then the answer as <see cref="RedisResponseCacheStore.Encode"/> writes it), expiring with the
/// semantic TTL, and a pub/sub channel (<c>{prefix}new</c>) on which each new entry's key is announced. Following:
/// subscribe first (nothing announced during the load is missed), load what is stored (SCAN), then each announcement
/// another instance made. Entries announced while this instance was cut off from Redis are not in its index (they
/// stay in Redis and are loaded at its next start).
/// </summary>
public sealed partial class RedisSemanticEntries(IConnectionMultiplexer redis, ResponseCacheOptions options, ILogger<RedisSemanticEntries> logger, string prefix = "bursar:sc:", string? instance = null) : ISharedSemanticEntries
{
    private sealed record Header(string Partition, string Question, string Instance);

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly string _instance = instance ?? Guid.NewGuid().ToString("N");
    private readonly ConcurrentDictionary<string, byte> _seen = new(StringComparer.Ordinal);
    private long _loaded;

    /// <summary>Entries of other instances (or of an earlier run) this instance has handed to its index.</summary>
    public long Loaded => Interlocked.Read(ref _loaded);

    private RedisChannel Channel => RedisChannel.Literal(prefix + "new");

    public async ValueTask PublishAsync(string partition, string question, CachedResponse response, TimeSpan ttl)
    {
        if (ttl <= TimeSpan.Zero) return;
        var key = prefix + "e:" + Guid.NewGuid().ToString("N");
        _seen.TryAdd(key, 0);
        try
        {
            var db = redis.GetDatabase();
            await db.StringSetAsync(key, Encode(new Header(partition, question, _instance), response), ttl).WaitAsync(options.RedisTimeout).ConfigureAwait(false);
            await redis.GetSubscriber().PublishAsync(Channel, _instance + " " + key).WaitAsync(options.RedisTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            LogUnavailable(logger, "publish", e.Message);
        }
    }

    public async Task FollowAsync(Func<string, string, CachedResponse, Task> onEntry, CancellationToken cancellationToken)
    {
        var queue = await redis.GetSubscriber().SubscribeAsync(Channel).ConfigureAwait(false);
        try
        {
            foreach (var server in redis.GetServers().Where(s => s.IsConnected && !s.IsReplica))
                await foreach (var key in server.KeysAsync(pattern: prefix + "e:*", pageSize: 500).WithCancellation(cancellationToken).ConfigureAwait(false))
                    await LoadAsync((string)key!, onEntry).ConfigureAwait(false);
            while (!cancellationToken.IsCancellationRequested)
            {
                var message = (string?)(await queue.ReadAsync(cancellationToken).ConfigureAwait(false)).Message;
                var space = message?.IndexOf(' ', StringComparison.Ordinal) ?? -1;
                if (space < 0 || message.AsSpan(0, space).SequenceEqual(_instance)) continue; // this instance's own entry is in its index already
                await LoadAsync(message![(space + 1)..], onEntry).ConfigureAwait(false);
            }
        }
        finally
        {
            await queue.UnsubscribeAsync().ConfigureAwait(false);
        }
    }

    private async Task LoadAsync(string key, Func<string, string, CachedResponse, Task> onEntry)
    {
        if (!_seen.TryAdd(key, 0)) return;
        var value = await redis.GetDatabase().StringGetAsync(key).ConfigureAwait(false);
        if (value.IsNullOrEmpty) return; // expired meanwhile
        try
        {
            var (header, response) = Decode((byte[])value!);
            if (header.Instance == _instance) return;
            await onEntry(header.Partition, header.Question, response).ConfigureAwait(false);
            Interlocked.Increment(ref _loaded);
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            LogUnreadable(logger, key, e.Message);
        }
    }

    private static byte[] Encode(Header h, CachedResponse r)
    {
        var header = JsonSerializer.SerializeToUtf8Bytes(h, Json);
        var answer = RedisResponseCacheStore.Encode(r);
        var bytes = new byte[4 + header.Length + answer.Length];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, header.Length);
        header.CopyTo(bytes, 4);
        answer.CopyTo(bytes, 4 + header.Length);
        return bytes;
    }

    private static (Header, CachedResponse) Decode(byte[] bytes)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (length < 0 || length > bytes.Length - 4) throw new ArgumentException("semantic entry header length is out of range");
        var h = JsonSerializer.Deserialize<Header>(bytes.AsSpan(4, length), Json) ?? throw new JsonException("empty semantic entry header");
        return (h, RedisResponseCacheStore.Decode(bytes[(4 + length)..]));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis semantic-cache entries unavailable ({Operation}): {Reason}; this instance's entries are not shared meanwhile")]
    private static partial void LogUnavailable(ILogger logger, string operation, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Semantic-cache entry {Key} in Redis is unreadable ({Reason}); skipped")]
    private static partial void LogUnreadable(ILogger logger, string key, string reason);
}
