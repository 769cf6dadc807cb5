using System.Collections.Concurrent;
using Bursar.Core.Caching;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// Stampede protection across the gateway instances sharing a Redis response cache: a lock key per missed entry
/// (<c>SET NX PX</c>, <see cref="ResponseCacheOptions.FillLockTtl"/>), holding a token only this acquisition knows, so a
/// release (compare and delete, one script) never frees a lock that lapsed and was taken by another instance. While it is
/// held the lock is renewed every third of its TTL (compare and extend), so a provider call slower than the TTL keeps it
/// and only a holder that died lets it lapse. Redis down or slower than <see cref="ResponseCacheOptions.RedisTimeout"/>
/// grants the lock with a warning: the call goes upstream, as it would without a shared cache.
/// </summary>
public sealed partial class RedisResponseCacheFillLock(IConnectionMultiplexer redis, ResponseCacheOptions options, ILogger<RedisResponseCacheFillLock> logger, string prefix = "bursar:rcl:", TimeProvider? time = null)
    : IResponseCacheFillLock, IDisposable
{
    private static readonly LuaScript ReleaseScript = LuaScript.Prepare("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """.Replace("\r", "", StringComparison.Ordinal));

    private static readonly LuaScript RenewScript = LuaScript.Prepare("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        """.Replace("\r", "", StringComparison.Ordinal));

    /// <summary>One acquisition: its token and the timer that renews it.</summary>
    private sealed class Held(string token)
    {
        public string Token { get; } = token;
        public ITimer? Renewal { get; set; }
    }

    private readonly ConcurrentDictionary<string, Held> _held = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private long _contended;
    private long _renewed;

    /// <summary>Acquisitions that found the lock held by another instance (each one a wait instead of an upstream call).</summary>
    public long Contended => Interlocked.Read(ref _contended);

    /// <summary>Renewals of held locks that found the lock still this instance's.</summary>
    public long Renewed => Interlocked.Read(ref _renewed);

    public async ValueTask<bool> TryAcquireAsync(string key, CancellationToken cancellationToken)
    {
        var held = new Held(Guid.NewGuid().ToString("N"));
        // kept before the answer: a SET that times out here may still land, and the release must then delete it
        // (else the key stays locked for FillLockTtl and the other instances wait that long for an entry)
        _held[key] = held;
        try
        {
            var taken = await redis.GetDatabase().StringSetAsync(prefix + key, held.Token, options.FillLockTtl, When.NotExists)
                .WaitAsync(options.RedisTimeout, cancellationToken).ConfigureAwait(false);
            if (taken)
            {
                Renew(key, held);
                return true;
            }
            _held.TryRemove(new KeyValuePair<string, Held>(key, held));
            Interlocked.Increment(ref _contended);
            return false;
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            LogUnavailable(logger, "acquire", e.Message);
            Renew(key, held); // if the SET landed, it is this call's lock
            return true;
        }
        catch
        {
            _held.TryRemove(new KeyValuePair<string, Held>(key, held));
            throw;
        }
    }

    private void Renew(string key, Held held)
    {
        var every = options.FillLockTtl / 3;
        held.Renewal = _time.CreateTimer(_ => _ = RenewAsync(key, held), null, every, every);
    }

    private async Task RenewAsync(string key, Held held)
    {
        try
        {
            var renewed = await redis.GetDatabase().ScriptEvaluateAsync(RenewScript.ExecutableScript, [prefix + key], [held.Token, (long)options.FillLockTtl.TotalMilliseconds])
                .WaitAsync(options.RedisTimeout).ConfigureAwait(false);
            if ((long)renewed == 1) Interlocked.Increment(ref _renewed);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            // the next tick tries again; the lock lapses on its own if none gets through
            LogUnavailable(logger, "renew", e.Message);
        }
    }

    public async ValueTask ReleaseAsync(string key)
    {
        if (!_held.TryRemove(key, out var held)) return;
        held.Renewal?.Dispose();
        try
        {
            await redis.GetDatabase().ScriptEvaluateAsync(ReleaseScript.ExecutableScript, [prefix + key], [held.Token]).WaitAsync(options.RedisTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            // the lock lapses on its own within FillLockTtl
            LogUnavailable(logger, "release", e.Message);
        }
    }

    /// <summary>Stops renewing (as an instance that dies does): the locks held lapse after their TTL; a later release still gives back its own.</summary>
    public void Dispose()
    {
        foreach (var held in _held.Values) held.Renewal?.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis response-cache fill lock unavailable ({Operation}): {Reason}; calling the provider without it")]
    private static partial void LogUnavailable(ILogger logger, string operation, string reason);
}
