using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Bursar.Core.Caching;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// The exact response cache shared by every gateway instance: one Redis string per entry (a small JSON header, then the response
/// bytes), expiring with the entry's TTL. Redis being down or slow is a cache miss and a warning, never a failed call.
/// Stampede protection across instances is <see cref="RedisResponseCacheFillLock"/> (concurrent identical misses on any instances make one upstream call).
/// </summary>
public sealed partial class RedisResponseCacheStore(IConnectionMultiplexer redis, ResponseCacheOptions options, ILogger<RedisResponseCacheStore> logger, string prefix = "bursar:rc:") : IResponseCacheStore
{
    private sealed record Header(string ContentType, string? Model, decimal? CostUsd, long InputTokens, long OutputTokens, DateTimeOffset StoredAt);

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async ValueTask<CachedResponse?> GetAsync(string key, CancellationToken cancellationToken)
    {
        try
        {
            var value = await redis.GetDatabase().StringGetAsync(prefix + key).WaitAsync(options.RedisTimeout, cancellationToken).ConfigureAwait(false);
            if (value.IsNullOrEmpty) return null;
            return Decode((byte[])value!);
        }
        catch (Exception e) when (e is RedisException or TimeoutException or JsonException or ArgumentException)
        {
            LogUnavailable(logger, "read", e.Message);
            return null;
        }
    }

    public async ValueTask SetAsync(string key, CachedResponse response, TimeSpan ttl, CancellationToken cancellationToken)
    {
        if (ttl <= TimeSpan.Zero || response.Body.Length > options.MaxEntryBytes) return;
        try
        {
            await redis.GetDatabase().StringSetAsync(prefix + key, Encode(response), ttl).WaitAsync(options.RedisTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            LogUnavailable(logger, "write", e.Message);
        }
    }

    /// <summary>The stored form: a little-endian header length, the JSON header, the response bytes.</summary>
    public static byte[] Encode(CachedResponse r)
    {
        var header = JsonSerializer.SerializeToUtf8Bytes(new Header(r.ContentType, r.Model, r.CostUsd, r.InputTokens, r.OutputTokens, r.StoredAt), Json);
        var bytes = new byte[4 + header.Length + r.Body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(bytes, header.Length);
        header.CopyTo(bytes, 4);
        r.Body.CopyTo(bytes, 4 + header.Length);
        return bytes;
    }

    public static CachedResponse Decode(byte[] bytes)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (length < 0 || length > bytes.Length - 4) throw new ArgumentException("cache entry header length is out of range");
        var h = JsonSerializer.Deserialize<Header>(bytes.AsSpan(4, length), Json) ?? throw new JsonException("empty cache entry header");
        return new CachedResponse(bytes.AsSpan(4 + length).ToArray(), h.ContentType, h.Model, h.CostUsd, h.InputTokens, h.OutputTokens, h.StoredAt);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis response cache unavailable ({Operation}): {Reason}; serving without the cache")]
    private static partial void LogUnavailable(ILogger logger, string operation, string reason);
}
