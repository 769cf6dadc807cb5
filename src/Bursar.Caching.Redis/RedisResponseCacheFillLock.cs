using System.Collections.Concurrent;
using Bursar.Core.Caching;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// Stampede protection across the gateway instances sharing a Redis response cache: a lock key per missed entry
/// (<c>SET NX PX</c>, <see cref="ResponseCacheOptions.FillLockTtl"/>), holding a token only this acquisition knows, so a
/// release (compare and delete, one script) never frees a lock that lapsed and was taken by another instance. Redis
/// down or slower than <see cref="ResponseCacheOptions.RedisTimeout"/> grants the lock with a warning: the call goes
/// upstream, as it would without a shared cache.
/// </summary>
public sealed partial class RedisResponseCacheFillLock(IConnectionMultiplexer redis, ResponseCacheOptions options, ILogger<RedisResponseCacheFillLock> logger, string prefix = "bursar:rcl:") : IResponseCacheFillLock
{
    private static readonly LuaScript ReleaseScript = LuaScript.Prepare("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """.Replace("\r", "", StringComparison.Ordinal));

    private readonly ConcurrentDictionary<string, string> _held = new(StringComparer.Ordinal);
    private long _contended;

    /// <summary>Acquisitions that found the lock held by another instance (each one a wait instead of an upstream call).</summary>
    public long Contended => Interlocked.Read(ref _contended);

    public async ValueTask<bool> TryAcquireAsync(string key, CancellationToken cancellationToken)
    {
        var token = Guid.NewGuid().ToString("N");
        // kept before the answer: a SET that times out here may still land, and the release must then delete it
        // (else the key stays locked for FillLockTtl and the other instances wait that long for an entry)
        _held[key] = token;
        try
        {
            var taken = await redis.GetDatabase().StringSetAsync(prefix + key, token, options.FillLockTtl, When.NotExists)
                .WaitAsync(options.RedisTimeout, cancellationToken).ConfigureAwait(false);
            if (taken) return true;
            _held.TryRemove(new KeyValuePair<string, string>(key, token));
            Interlocked.Increment(ref _contended);
            return false;
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            LogUnavailable(logger, "acquire", e.Message);
            return true;
        }
        catch
        {
            _held.TryRemove(new KeyValuePair<string, string>(key, token));
            throw;
        }
    }

    public async ValueTask ReleaseAsync(string key)
    {
        if (!_held.TryRemove(key, out var token)) return;
        try
        {
            await redis.GetDatabase().ScriptEvaluateAsync(ReleaseScript.ExecutableScript, [prefix + key], [token]).WaitAsync(options.RedisTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            // the lock lapses on its own within FillLockTtl
            LogUnavailable(logger, "release", e.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis response-cache fill lock unavailable ({Operation}): {Reason}; calling the provider without it")]
    private static partial void LogUnavailable(ILogger logger, string operation, string reason);
}
