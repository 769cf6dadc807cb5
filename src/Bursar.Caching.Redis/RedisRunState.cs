using System.Collections.Concurrent;
using System.Globalization;
using Bursar.Core.Runs;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// Agent runs' state in Redis, shared by every gateway instance (<c>Bursar:Redis:Configuration</c>): one hash per run
/// (scoped by key) with its turns, tool calls, spend (integer nano-dollars, rounded up), end reason and last activity,
/// and per instance what that instance's calls in flight hold (<c>h:{instance}</c> money, <c>n:{instance}</c> calls)
/// with when those holds expire (<c>x:{instance}</c>). A heartbeat pushes the expiry on while the instance lives; once
/// it dies its holds lapse <see cref="HoldTtl"/> later and the next start of the run drops them, so a killed instance
/// never leaves a run stuck. Times are Redis's own clock (<c>TIME</c>). The hash expires when the run has been idle for
/// <see cref="RunCapOptions.IdleExpiry"/> (as the in-process tracker forgets it). The caps and messages are
/// <see cref="RunTracker"/>'s; each operation is one Lua script.
/// <para>
/// A Redis restarted without its data (no persistence, a failover to an empty replica) must not start every run over
/// from zero turns and $0: each instance remembers what it last saw of each run it served (turns, tool calls, spend,
/// end) for <see cref="RunCapOptions.IdleExpiry"/>, and a start or finish that finds the run's hash gone seeds it from
/// that. A run served by several instances resumes from the freshest count the serving instance saw, so after such a
/// restart it can get at most the turns the other instances served since then, never a whole new allowance.
/// </para>
/// </summary>
public sealed class RedisRunState : ISharedRunState, IDisposable
{
    /// <summary>How long a dead instance's run holds outlive it, by default.</summary>
    public static readonly TimeSpan DefaultHoldTtl = TimeSpan.FromMinutes(10);

    private const string Now = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """;

    // a run whose hash is gone (or never was) seeded from what this instance last saw of it: ARGV[s..s+3] turns (-1: nothing seen), tools, spent (nano), end ('' none)
    private static string Seed(int s) => $$"""
        if redis.call('HEXISTS', KEYS[1], 'last') == 0 and tonumber(ARGV[{{s}}]) >= 0 then
          redis.call('HSET', KEYS[1], 'turns', ARGV[{{s}}], 'tools', ARGV[{{s + 1}}], 'spent', ARGV[{{s + 2}}], 'last', now)
          if ARGV[{{s + 3}}] ~= '' then redis.call('HSET', KEYS[1], 'end', ARGV[{{s + 3}}]) end
        end
        """;

    // KEYS: 1 the run. ARGV: 1 instance, 2 worst case (nano), 3 max turns (-1 none), 4 max spend (nano, -1 none), 5 idle (ms), 6 hold ttl (ms), 7 the max_turns reason, 8-11 seen (Seed)
    // returns {0, turns, tools, spent} started; {1, end, turns, tools, spent} ended; {2, turns, in flight} turn cap with calls in flight; {3, spent, held} spend cap
    private static readonly LuaScript StartScript = LuaScript.Prepare((Now + "\n" + Seed(8) + "\n" + """
        local k = KEYS[1]
        local me = ARGV[1]
        local idle = tonumber(ARGV[5])
        local m = {}
        local all = redis.call('HGETALL', k)
        for i = 1, #all, 2 do m[all[i]] = all[i+1] end
        local held, inflight = 0, 0
        for f, v in pairs(m) do
          if string.sub(f, 1, 2) == 'x:' and tonumber(v) < now then
            local inst = string.sub(f, 3)
            redis.call('HDEL', k, f, 'h:' .. inst, 'n:' .. inst)
            m['h:' .. inst] = nil
            m['n:' .. inst] = nil
            m[f] = nil
          end
        end
        for f, v in pairs(m) do
          local p = string.sub(f, 1, 2)
          if p == 'h:' then held = held + tonumber(v) elseif p == 'n:' then inflight = inflight + tonumber(v) end
        end
        local turns = tonumber(m['turns'] or '0')
        local tools = tonumber(m['tools'] or '0')
        local spent = tonumber(m['spent'] or '0')
        local ended = m['end']
        local last = tonumber(m['last'] or '-1')
        if last >= 0 and now - last > idle then
          turns, tools, spent, ended = 0, 0, 0, nil
          redis.call('HSET', k, 'turns', 0, 'tools', 0, 'spent', 0)
          redis.call('HDEL', k, 'end')
        end
        redis.call('HSET', k, 'last', now)
        local ttl = math.max(idle, tonumber(ARGV[6])) + 60000
        if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
        local maxTurns = tonumber(ARGV[3])
        if not ended and maxTurns >= 0 and turns >= maxTurns then
          ended = ARGV[7]
          redis.call('HSET', k, 'end', ended)
        end
        if not ended and maxTurns >= 0 and turns + inflight >= maxTurns then return {2, turns, inflight} end
        if ended then return {1, ended, turns, tools, string.format('%.0f', spent)} end
        local maxSpend = tonumber(ARGV[4])
        local worst = tonumber(ARGV[2])
        if maxSpend >= 0 and spent + held + worst > maxSpend then return {3, string.format('%.0f', spent), string.format('%.0f', held)} end
        redis.call('HINCRBY', k, 'h:' .. me, ARGV[2])
        redis.call('HINCRBY', k, 'n:' .. me, 1)
        redis.call('HSET', k, 'x:' .. me, now + tonumber(ARGV[6]))
        return {0, turns, tools, string.format('%.0f', spent)}
        """).Replace("\r", "", StringComparison.Ordinal));

    // this instance's hold of one call given back. KEYS: 1 the run. ARGV: 1 instance, 2 held (nano)
    private const string Unhold = """
        local k = KEYS[1]
        local me = ARGV[1]
        local h = tonumber(redis.call('HGET', k, 'h:' .. me) or '0') - tonumber(ARGV[2])
        local n = tonumber(redis.call('HGET', k, 'n:' .. me) or '0') - 1
        if n <= 0 then
          redis.call('HDEL', k, 'h:' .. me, 'n:' .. me, 'x:' .. me)
        else
          redis.call('HSET', k, 'h:' .. me, math.max(0, h), 'n:' .. me, n)
        end
        """;

    private static readonly LuaScript ReleaseScript = LuaScript.Prepare((Unhold + "\nreturn 1").Replace("\r", "", StringComparison.Ordinal));

    // KEYS: 1 the run. ARGV: 1 instance, 2 held (nano), 3 tool calls, 4 cost (nano), 5 done reason ('' none),
    // 6 max tool calls (-1), 7 its reason, 8 max spend (nano, -1), 9 its reason, 10 max turns (-1), 11 its reason, 12 idle + ttl (ms), 13-16 seen (Seed)
    // returns {the reason the run ended with this call or '', the run's end or '', turns, tools, spent}
    private static readonly LuaScript CompleteScript = LuaScript.Prepare((Now + "\n" + Seed(13) + "\n" + Unhold + "\n" + """
        local turns = redis.call('HINCRBY', k, 'turns', 1)
        local tools = redis.call('HINCRBY', k, 'tools', ARGV[3])
        local spent = redis.call('HINCRBY', k, 'spent', ARGV[4])
        redis.call('HSET', k, 'last', now)
        if redis.call('PTTL', k) < tonumber(ARGV[12]) then redis.call('PEXPIRE', k, ARGV[12]) end
        local counts = {turns, tools, string.format('%.0f', spent)}
        local ended = redis.call('HGET', k, 'end')
        if ended then return {'', ended, unpack(counts)} end
        local reason = ''
        if tonumber(ARGV[6]) >= 0 and tools >= tonumber(ARGV[6]) then reason = ARGV[7]
        elseif tonumber(ARGV[8]) >= 0 and spent >= tonumber(ARGV[8]) then reason = ARGV[9]
        elseif tonumber(ARGV[10]) >= 0 and turns >= tonumber(ARGV[10]) then reason = ARGV[11]
        elseif ARGV[5] ~= '' then reason = ARGV[5] end
        if reason ~= '' then redis.call('HSET', k, 'end', reason) end
        return {reason, reason, unpack(counts)}
        """).Replace("\r", "", StringComparison.Ordinal));

    // KEYS: 1 the run. ARGV: 1 idle (ms). returns nil, or {end, turns, tools, spent} of an ended run not idle since
    private static readonly LuaScript EndedScript = LuaScript.Prepare((Now + "\n" + """
        local v = redis.call('HMGET', KEYS[1], 'end', 'last', 'turns', 'tools', 'spent')
        if not v[1] then return false end
        if v[2] and now - tonumber(v[2]) > tonumber(ARGV[1]) then return false end
        return {v[1], v[3] or '0', v[4] or '0', v[5] or '0'}
        """).Replace("\r", "", StringComparison.Ordinal));

    // KEYS: 1 the run. ARGV: 1 instance, 2 hold ttl (ms). Pushes this instance's hold expiry on while it has calls in flight.
    private static readonly LuaScript BeatScript = LuaScript.Prepare((Now + "\n" + """
        if redis.call('HEXISTS', KEYS[1], 'n:' .. ARGV[1]) == 1 then
          redis.call('HSET', KEYS[1], 'x:' .. ARGV[1], now + tonumber(ARGV[2]))
          if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 60000) end
        end
        return 1
        """).Replace("\r", "", StringComparison.Ordinal));

    private readonly IConnectionMultiplexer _redis;
    private readonly RunCapOptions _options;
    private readonly string _prefix;
    private readonly ConcurrentDictionary<string, int> _inFlight = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Seen> _seen = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private readonly ITimer _heartbeat;

    /// <summary>A run's counts as this instance last saw them, and when (this process's clock, ms).</summary>
    private readonly record struct Seen(long Turns, long Tools, long SpentNano, string? End, long AtMs);

    public RedisRunState(IConnectionMultiplexer redis, RunCapOptions options, TimeProvider time, string prefix = "bursar:{runs}:", string? instance = null, TimeSpan? holdTtl = null)
    {
        HoldTtl = holdTtl ?? DefaultHoldTtl;
        if (HoldTtl < TimeSpan.FromMilliseconds(300)) throw new ArgumentOutOfRangeException(nameof(holdTtl), holdTtl, "A run hold must live at least 300 ms.");
        _redis = redis;
        _options = options;
        _prefix = prefix;
        _time = time;
        Instance = instance ?? Guid.NewGuid().ToString("N");
        Name = $"Redis at {string.Join(", ", redis.GetEndPoints().Select(e => e.ToString()))}";
        _heartbeat = time.CreateTimer(_ => _ = HeartbeatAsync(), null, HoldTtl / 3, HoldTtl / 3);
    }

    public string Name { get; }

    /// <summary>How long this instance's run holds outlive it.</summary>
    public TimeSpan HoldTtl { get; }

    /// <summary>This process's id in the run hashes.</summary>
    public string Instance { get; }

    private long IdleMs => (long)_options.IdleExpiry.TotalMilliseconds;

    private RedisKey Key(string? keyId, string runId) => _prefix + (keyId ?? "-") + ":" + runId;

    public async ValueTask<RunRefusal?> EndedAsync(string? keyId, string runId, CancellationToken cancellationToken)
    {
        var r = await _redis.GetDatabase().ScriptEvaluateAsync(EndedScript.ExecutableScript, [Key(keyId, runId)], [IdleMs]).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (r.IsNull) return null;
        var v = (RedisResult[])r!;
        return RunTracker.Ended(runId, (string)v[0]!, Long(v[1]), Long(v[2]), Usd(Long(v[3])));
    }

    public async ValueTask<RunRefusal?> TryStartAsync(string? keyId, string runId, decimal worstCaseUsd, CancellationToken cancellationToken)
    {
        var key = Key(keyId, runId);
        // counted before the script runs: a heartbeat between the script and this line must not miss the new hold
        _inFlight.AddOrUpdate(key!, 1, (_, n) => n + 1);
        RedisResult[] v;
        try
        {
            var maxTurns = _options.MaxTurns ?? -1;
            v = (RedisResult[])(await _redis.GetDatabase().ScriptEvaluateAsync(StartScript.ExecutableScript, [key], [
                Instance, RedisBudgetCounters.Nano(worstCaseUsd), maxTurns, _options.MaxSpendUsd is { } ms ? RedisBudgetCounters.Nano(ms) : -1,
                IdleMs, (long)HoldTtl.TotalMilliseconds, $"max_turns ({maxTurns})", .. SeenArgs(key!)]).WaitAsync(cancellationToken).ConfigureAwait(false))!;
        }
        catch
        {
            Done(key!);
            throw;
        }
        switch ((int)v[0])
        {
            case 0: Saw(key!, Long(v[1]), Long(v[2]), Long(v[3]), null); return null;
            case 1: Done(key!); Saw(key!, Long(v[2]), Long(v[3]), Long(v[4]), (string)v[1]!); return RunTracker.Ended(runId, (string)v[1]!, Long(v[2]), Long(v[3]), Usd(Long(v[4])));
            case 2: Done(key!); return RunTracker.InFlight(runId, Long(v[2]), Long(v[1]), _options.MaxTurns!.Value);
            default: Done(key!); return RunTracker.OverSpend(runId, _options.MaxSpendUsd!.Value, Usd(Long(v[1])), Usd(Long(v[2])), worstCaseUsd);
        }
    }

    public async ValueTask ReleaseAsync(string? keyId, string runId, decimal heldUsd)
    {
        var key = Key(keyId, runId);
        try { await _redis.GetDatabase().ScriptEvaluateAsync(ReleaseScript.ExecutableScript, [key], [Instance, RedisBudgetCounters.Nano(heldUsd)]).ConfigureAwait(false); }
        finally { Done(key!); }
    }

    public async ValueTask<string?> CompleteAsync(string? keyId, string runId, int toolCalls, decimal costUsd, string? doneReason, decimal heldUsd)
    {
        var key = Key(keyId, runId);
        try
        {
            var o = _options;
            var r = await _redis.GetDatabase().ScriptEvaluateAsync(CompleteScript.ExecutableScript, [key], [
                Instance, RedisBudgetCounters.Nano(heldUsd), toolCalls, RedisBudgetCounters.Nano(costUsd), doneReason ?? "",
                o.MaxToolCalls ?? -1, $"max_tool_calls ({o.MaxToolCalls})",
                o.MaxSpendUsd is { } ms ? RedisBudgetCounters.Nano(ms) : -1, $"max_spend (${o.MaxSpendUsd})",
                o.MaxTurns ?? -1, $"max_turns ({o.MaxTurns})",
                (long)Math.Max(o.IdleExpiry.TotalMilliseconds, HoldTtl.TotalMilliseconds) + 60_000, .. SeenArgs(key!)]).ConfigureAwait(false);
            var v = (RedisResult[])r!;
            var (reason, end) = ((string?)v[0], (string?)v[1]);
            Saw(key!, Long(v[2]), Long(v[3]), Long(v[4]), string.IsNullOrEmpty(end) ? null : end);
            return string.IsNullOrEmpty(reason) ? null : reason;
        }
        finally { Done(key!); }
    }

    /// <summary>Runs with calls of this instance in flight (their holds are kept alive by the heartbeat).</summary>
    public int RunsInFlight => _inFlight.Count;

    private void Done(string key)
    {
        while (_inFlight.TryGetValue(key, out var n))
        {
            if (n <= 1 ? _inFlight.TryRemove(new KeyValuePair<string, int>(key, n)) : _inFlight.TryUpdate(key, n - 1, n)) return;
        }
    }

    /// <summary>Runs whose counts this instance remembers (those it served within <see cref="RunCapOptions.IdleExpiry"/>).</summary>
    public int RunsRemembered => _seen.Count;

    private RedisValue[] SeenArgs(string key) =>
        _seen.TryGetValue(key, out var s) && _time.GetUtcNow().ToUnixTimeMilliseconds() - s.AtMs <= IdleMs
            ? [s.Turns, s.Tools, s.SpentNano, s.End ?? ""]
            : [-1, 0, 0, ""];

    private void Saw(string key, long turns, long tools, long spentNano, string? end) =>
        _seen[key] = new Seen(turns, tools, spentNano, end, _time.GetUtcNow().ToUnixTimeMilliseconds());

    private async Task HeartbeatAsync()
    {
        // runs gone idle are forgotten here as Redis forgets them
        var idleBefore = _time.GetUtcNow().ToUnixTimeMilliseconds() - IdleMs;
        foreach (var (key, seen) in _seen)
            if (seen.AtMs < idleBefore) _seen.TryRemove(new KeyValuePair<string, Seen>(key, seen));
        var keys = _inFlight.Keys.ToArray();
        if (keys.Length == 0) return;
        try
        {
            var db = _redis.GetDatabase();
            var ttl = (long)HoldTtl.TotalMilliseconds;
            await Task.WhenAll(keys.Select(k => db.ScriptEvaluateAsync(BeatScript.ExecutableScript, [(RedisKey)k], [Instance, ttl]))).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            // unreachable: the next beat tries again; holds that lapse meanwhile are dropped, never counted twice
        }
    }

    private static long Long(RedisResult r) => long.Parse(r.ToString(), CultureInfo.InvariantCulture);

    /// <summary>Nano-dollars as dollars, written as people write money ($0.90, $0.000038).</summary>
    private static decimal Usd(long nano) => nano / 1_000_000_000m / 1.000000000000000000000000000000000m + 0.00m;

    public void Dispose() => _heartbeat.Dispose();
}
