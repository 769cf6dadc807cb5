using System.Globalization;
using Bursar.Core.Budgets;
using StackExchange.Redis;

namespace Bursar.Caching.Redis;

/// <summary>
/// Budget counters in Redis, shared by every gateway instance (<c>Bursar:Redis:Configuration</c>). Money is counted in
/// integer nano-dollars so Redis's integer arithmetic is exact; every amount is rounded up to the next nano-dollar
/// (a counter may over-count by less than $0.000000001 per call, never under-count). Per budget:
/// <list type="bullet">
/// <item><c>spent:{countFrom}</c>: the period's spend (a new period, or a reset by hand, is a new key), expiring at the period's end;
/// a reservation never counts a missing one as zero: it asks for the period to be seeded from the ledger first (a Redis
/// restarted without its data must not hand every budget out again);</item>
/// <item><c>held:{instance}</c>: what this instance's calls in flight hold, refreshed by a heartbeat while the instance
/// lives and expiring <see cref="HoldTtl"/> after it dies, so a killed instance's reservations are released on their own;</item>
/// <item><c>holders</c>: the set of those keys, so a reservation can sum every live instance's holds.</item>
/// </list>
/// A reservation across all the budgets of a call is one Lua script (all or none); so is a settle. Keys share one hash
/// tag, so a Redis Cluster keeps them in one slot.
/// </summary>
public sealed class RedisBudgetCounters : ISharedBudgetCounters, IDisposable
{
    /// <summary>How long a dead instance's holds outlive it, by default. Refreshed every third of it while the instance lives.</summary>
    public static readonly TimeSpan DefaultHoldTtl = TimeSpan.FromSeconds(30);

    private const decimal NanoPerUsd = 1_000_000_000m;

    // KEYS, per budget i: 3i-2 spent (this period), 3i-1 holders set, 3i this instance's hold
    // ARGV: 1 amount, 2 hold ttl (ms), then per budget: limit, period end (unix ms, 0 = never)
    private static readonly LuaScript ReserveScript = LuaScript.Prepare("""
        local n = #KEYS / 3
        local amount = tonumber(ARGV[1])
        for i = 1, n do
          local s = redis.call('GET', KEYS[3*i-2])
          if not s then return {-i} end
          local spent = tonumber(s)
          local held = 0
          for _, k in ipairs(redis.call('SMEMBERS', KEYS[3*i-1])) do
            local v = redis.call('GET', k)
            if v then held = held + tonumber(v) else redis.call('SREM', KEYS[3*i-1], k) end
          end
          if spent + held + amount > tonumber(ARGV[1 + 2*i]) then
            return {i, string.format('%.0f', spent), string.format('%.0f', held)}
          end
        end
        for i = 1, n do
          redis.call('INCRBY', KEYS[3*i], amount)
          redis.call('PEXPIRE', KEYS[3*i], ARGV[2])
          redis.call('SADD', KEYS[3*i-1], KEYS[3*i])
        end
        return {0}
        """.Replace("\r", "", StringComparison.Ordinal));

    // KEYS, per budget i: 2i-1 this instance's hold, 2i spent (the period the settle lands in)
    // ARGV: 1 reserved, 2 actual, then per budget: period end (unix ms, 0 = never)
    private static readonly LuaScript SettleScript = LuaScript.Prepare("""
        local n = #KEYS / 2
        local reserved = tonumber(ARGV[1])
        local out = {}
        for i = 1, n do
          local held = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')
          local release = math.min(held, reserved)
          if release > 0 then redis.call('DECRBY', KEYS[2*i-1], release) end
          -- a period the store lost (restarted empty) is not started from this one call: the next reservation seeds it from the ledger
          local spent = -1
          if redis.call('EXISTS', KEYS[2*i]) == 1 then
            spent = redis.call('INCRBY', KEYS[2*i], ARGV[2])
            local at = tonumber(ARGV[2 + i])
            if at > 0 then redis.call('PEXPIREAT', KEYS[2*i], at) end
          end
          out[i] = string.format('%.0f', spent)
        end
        return out
        """.Replace("\r", "", StringComparison.Ordinal));

    // KEYS: 1 spent; ARGV: 1 seed, 2 period end (0 = never). Sets the spend when unset; raises it to the ledger's when
    // lower (a settle lost with an instance that died while Redis was down), never lowers it.
    private static readonly LuaScript SeedScript = LuaScript.Prepare("""
        local v = tonumber(redis.call('GET', KEYS[1]) or '-1')
        if v < tonumber(ARGV[1]) then
          redis.call('SET', KEYS[1], ARGV[1])
          if tonumber(ARGV[2]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
        end
        return 1
        """.Replace("\r", "", StringComparison.Ordinal));

    private readonly IConnectionMultiplexer _redis;
    private readonly string _prefix;
    private readonly string _instance;
    private readonly TimeProvider _time;
    private readonly HashSet<string> _holds = new(StringComparer.Ordinal);
    private readonly Lock _holdsLock = new();
    private readonly ITimer _heartbeat;

    public RedisBudgetCounters(IConnectionMultiplexer redis, TimeProvider time, string prefix = "bursar:{budgets}:", string? instance = null, TimeSpan? holdTtl = null)
    {
        HoldTtl = holdTtl ?? DefaultHoldTtl;
        if (HoldTtl < TimeSpan.FromMilliseconds(300)) throw new ArgumentOutOfRangeException(nameof(holdTtl), holdTtl, "A hold must live at least 300 ms.");
        _redis = redis;
        _time = time;
        _prefix = prefix;
        _instance = instance ?? Guid.NewGuid().ToString("N");
        Name = $"Redis at {string.Join(", ", redis.GetEndPoints().Select(e => e.ToString()))}";
        _heartbeat = time.CreateTimer(_ => _ = HeartbeatAsync(), null, HoldTtl / 3, HoldTtl / 3);
    }

    public string Name { get; }

    /// <summary>How long this instance's holds outlive it (<see cref="DefaultHoldTtl"/> unless set).</summary>
    public TimeSpan HoldTtl { get; }

    /// <summary>This process's id in the hold keys.</summary>
    public string Instance => _instance;

    public async ValueTask<SharedReservation> TryReserveAsync(SharedBudget[] budgets, decimal amountUsd, CancellationToken cancellationToken)
    {
        var keys = new RedisKey[budgets.Length * 3];
        var args = new RedisValue[2 + budgets.Length * 2];
        args[0] = Nano(amountUsd);
        args[1] = (long)HoldTtl.TotalMilliseconds;
        for (var i = 0; i < budgets.Length; i++)
        {
            var b = budgets[i];
            keys[3 * i] = SpentKey(b);
            keys[3 * i + 1] = _prefix + b.BudgetId + ":holders";
            keys[3 * i + 2] = HoldKey(b.BudgetId);
            args[2 + 2 * i] = (long)decimal.Floor(b.LimitUsd * NanoPerUsd);
            args[3 + 2 * i] = End(b);
        }
        var result = (RedisResult[])(await _redis.GetDatabase().ScriptEvaluateAsync(ReserveScript.ExecutableScript, keys, args).WaitAsync(cancellationToken).ConfigureAwait(false))!;
        var index = (int)result[0];
        if (index < 0) return new SharedReservation(-1, 0, 0, UnseededIndex: -index - 1);
        if (index == 0)
        {
            lock (_holdsLock) foreach (var b in budgets) _holds.Add(HoldKey(b.BudgetId));
            return new SharedReservation(-1, 0, 0);
        }
        return new SharedReservation(index - 1, Usd((string)result[1]!), Usd((string)result[2]!));
    }

    public async ValueTask<decimal[]> SettleAsync(SharedBudget[] budgets, decimal reservedUsd, decimal actualUsd)
    {
        var keys = new RedisKey[budgets.Length * 2];
        var args = new RedisValue[2 + budgets.Length];
        args[0] = Nano(reservedUsd);
        args[1] = Nano(actualUsd);
        for (var i = 0; i < budgets.Length; i++)
        {
            keys[2 * i] = HoldKey(budgets[i].BudgetId);
            keys[2 * i + 1] = SpentKey(budgets[i]);
            args[2 + i] = End(budgets[i]);
        }
        var result = (RedisResult[])(await _redis.GetDatabase().ScriptEvaluateAsync(SettleScript.ExecutableScript, keys, args).ConfigureAwait(false))!;
        var spent = new decimal[result.Length];
        for (var i = 0; i < result.Length; i++) spent[i] = Usd((string)result[i]!);
        return spent;
    }

    public async ValueTask SeedAsync(SharedBudget budget, decimal spentUsd) =>
        await _redis.GetDatabase().ScriptEvaluateAsync(SeedScript.ExecutableScript, [SpentKey(budget)], [Nano(spentUsd), End(budget)]).ConfigureAwait(false);

    public async ValueTask<(decimal SpentUsd, decimal ReservedUsd)> ReadAsync(SharedBudget budget)
    {
        var db = _redis.GetDatabase();
        var spent = await db.StringGetAsync(SpentKey(budget)).ConfigureAwait(false);
        var holders = await db.SetMembersAsync(_prefix + budget.BudgetId + ":holders").ConfigureAwait(false);
        var held = holders.Length == 0 ? [] : await db.StringGetAsync(holders.Select(h => (RedisKey)(string)h!).ToArray()).ConfigureAwait(false);
        long total = 0;
        foreach (var h in held) if (h.HasValue) total += (long)h;
        return (spent.HasValue ? Usd((long)spent) : 0m, Usd(total));
    }

    /// <summary>Keeps this instance's holds alive while it runs (they expire <see cref="HoldTtl"/> after it stops).</summary>
    private async Task HeartbeatAsync()
    {
        string[] holds;
        lock (_holdsLock) holds = [.. _holds];
        if (holds.Length == 0) return;
        try
        {
            var db = _redis.GetDatabase();
            await Task.WhenAll(holds.Select(h => db.KeyExpireAsync(h, HoldTtl))).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            // unreachable: the next beat tries again; holds that expire meanwhile are released, never counted twice
        }
    }

    private string SpentKey(SharedBudget b) => _prefix + b.BudgetId + ":spent:" + b.CountFrom.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);

    private string HoldKey(string budgetId) => _prefix + budgetId + ":held:" + _instance;

    private static long End(SharedBudget b) => b.PeriodEnd == DateTimeOffset.MaxValue ? 0 : b.PeriodEnd.ToUnixTimeMilliseconds();

    /// <summary>Dollars as nano-dollars, rounded up: a counter may over-count by less than a nano-dollar, never under-count.</summary>
    public static long Nano(decimal usd) => (long)decimal.Ceiling(Math.Max(0, usd) * NanoPerUsd);

    private static decimal Usd(string nano) => Usd(long.Parse(nano, CultureInfo.InvariantCulture));

    /// <summary>Nano-dollars as dollars, written as people write money: no trailing zeros past the cents ($0.90, $0.000038, not $0.900000000).</summary>
    private static decimal Usd(long nano) => nano / NanoPerUsd / 1.000000000000000000000000000000000m + 0.00m;

    public void Dispose() => _heartbeat.Dispose();
}
