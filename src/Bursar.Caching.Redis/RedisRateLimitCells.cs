using Bursar.Core.Limits;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// The GCRA rate limiter's cells in Redis, shared by every gateway instance (<c>Bursar:Redis:Configuration</c>): one
/// key per cell holding its theoretical arrival time in microseconds of Redis's own clock (<c>TIME</c>, so instances
/// whose clocks drift still agree), expiring once the cell is back to a full minute of burst. One Lua script checks
/// every cell of a call and consumes all of them or none: the same algorithm and numbers as the in-process
/// <see cref="RateLimiter"/> (a minute of burst, the interval per request or token = a minute / the limit).
/// Keys share one hash tag, so a Redis Cluster keeps them in one slot.
/// </summary>
public sealed class RedisRateLimitCells(IConnectionMultiplexer redis, string prefix = "bursar:{limits}:") : ISharedRateLimitCells
{
    // KEYS: one per cell; ARGV per cell i: 2i-1 limit per minute, 2i cost (1 request, or the call's tokens)
    // returns {0} admitted, or {i, microseconds until the cell would admit the call}
    private static readonly LuaScript AcquireScript = LuaScript.Prepare("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local minute = 60000000
        local fresh = {}
        for i = 1, #KEYS do
          local per = tonumber(ARGV[2*i-1])
          local cost = tonumber(ARGV[2*i])
          local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
          if tat < now then tat = now end
          local nt = tat + math.ceil(minute / per * cost)
          if nt - now > minute then return {i, string.format('%.0f', nt - now - minute)} end
          fresh[i] = nt
        end
        for i = 1, #KEYS do
          redis.call('SET', KEYS[i], string.format('%.0f', fresh[i]), 'PX', math.floor((fresh[i] - now) / 1000) + 1)
        end
        return {0}
        """.Replace("\r", "", StringComparison.Ordinal));

    public string Name { get; } = $"Redis at {string.Join(", ", redis.GetEndPoints().Select(e => e.ToString()))}";

    public async ValueTask<(int RefusedIndex, TimeSpan RetryAfter)> TryAcquireAsync(RateLimitCell[] cells, CancellationToken cancellationToken)
    {
        var keys = new RedisKey[cells.Length];
        var args = new RedisValue[cells.Length * 2];
        for (var i = 0; i < cells.Length; i++)
        {
            keys[i] = prefix + cells[i].Key;
            args[2 * i] = cells[i].PerMinute;
            args[2 * i + 1] = cells[i].Cost;
        }
        var result = (RedisResult[])(await redis.GetDatabase().ScriptEvaluateAsync(AcquireScript.ExecutableScript, keys, args).WaitAsync(cancellationToken).ConfigureAwait(false))!;
        var index = (int)result[0];
        if (index == 0) return (-1, TimeSpan.Zero);
        var micros = long.Parse((string)result[1]!, System.Globalization.CultureInfo.InvariantCulture);
        return (index - 1, TimeSpan.FromMicroseconds(micros));
    }
}
