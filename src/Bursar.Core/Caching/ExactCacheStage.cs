using Bursar.Core.Metering;
using Bursar.Core.Pipeline;

namespace Bursar.Core.Caching;

/// <summary>
/// The exact response cache: an identical deterministic request (or one the caller opts in with cache control
/// <c>on</c>) of the same tenant is answered from the store at $0, recorded with the saving of the call it replays.
/// Concurrent identical misses wait for one leader's answer instead of paying twice (<see cref="CacheFillCoordinator"/> in
/// an instance; across instances sharing a Redis cache the leader also takes the key's <see cref="IResponseCacheFillLock"/>,
/// and an instance that finds it held waits for the entry, then calls the provider itself if the holder failed).
/// Off for a feature with a zero TTL, for a route with <c>ResponseCache: false</c>, and for cache control <c>off</c>.
/// </summary>
public sealed class ExactCacheStage(IResponseCacheStore cache, ResponseCacheOptions options, CacheFillCoordinator fills, CallMeter meter, TimeProvider time, IResponseCacheFillLock? fillLock = null) : ILeverStage
{
    private readonly IResponseCacheFillLock _fillLock = fillLock ?? IResponseCacheFillLock.None;

    /// <summary>How often an instance waiting on another's fill looks for the entry, at most (it starts at 10 ms).</summary>
    public static readonly TimeSpan FillPollInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>How long a follower waits for the leader's answer before it calls the provider itself.</summary>
    public static readonly TimeSpan FollowerWait = TimeSpan.FromMinutes(2);

    public string Name => "exact-cache";

    public ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var req = call.Request;
        var ttl = options.TtlFor(call.Attribution.Feature);
        call.CacheStatus ??= "bypass";
        string? key = null;
        if (options.Enabled && call.Policy?.ResponseCache != false && ttl > TimeSpan.Zero && req.CacheControl != "off" && (req.Deterministic || req.CacheControl == "on"))
        {
            try
            {
                if (req.TryBody(out var body)) key = ResponseCacheKey.Compute(ResponseCacheKey.Tenant(call.Key, call.Attribution), call.Dialect, req.Stream, body);
            }
            catch (Exception e) when (CallRequest.IsBadJson(e))
            {
                key = null;
            }
        }
        // not cacheable: straight on, without an async frame of its own
        return key is null ? next(call, cancellationToken) : CachedAsync(call, key, ttl, next, cancellationToken);
    }

    private async ValueTask CachedAsync(LeverCall call, string key, TimeSpan ttl, LeverNext next, CancellationToken cancellationToken)
    {
        if (await cache.GetAsync(key, cancellationToken).ConfigureAwait(false) is { } hit)
        {
            Hit(call, hit, semantic: false);
            return;
        }
        if (!fills.TryLead(key, out var wait))
        {
            // an identical call is already on its way upstream: wait for its answer instead of paying twice
            CachedResponse? filled;
            try { filled = await wait.WaitAsync(FollowerWait, time, cancellationToken).ConfigureAwait(false); }
            catch (TimeoutException) { filled = null; }
            if (filled is not null)
            {
                Hit(call, filled, semantic: false);
                return;
            }
            await next(call, cancellationToken).ConfigureAwait(false);
            return;
        }
        CachedResponse? shared = null;
        var locked = false;
        try
        {
            // another instance may be filling this key: wait for its entry rather than paying for the same answer
            var (lead, filledElsewhere) = await LeadAcrossInstancesAsync(key, cancellationToken).ConfigureAwait(false);
            if (filledElsewhere is not null)
            {
                Hit(call, filledElsewhere, semantic: false);
                shared = filledElsewhere;
                return;
            }
            locked = lead;
            call.CacheStatus = "miss";
            call.CaptureAnswer = true;
            await next(call, cancellationToken).ConfigureAwait(false);
            if (call.Answer is { } answer && call.Outcome == "ok" && !cancellationToken.IsCancellationRequested)
            {
                var entry = Stored(call, answer, meter, time);
                await cache.SetAsync(key, entry, ttl, CancellationToken.None).ConfigureAwait(false);
                shared = entry;
            }
        }
        finally
        {
            // released after the entry is stored: an instance waiting on the lock finds the entry, not an empty key
            if (locked) await _fillLock.ReleaseAsync(key).ConfigureAwait(false);
            fills.Complete(key, shared);
        }
    }

    /// <summary>
    /// Takes the key's fill lock (true), or waits while another instance holds it until its entry appears (returned)
    /// or the lock is free again (the holder failed, or died and its lock lapsed after <see cref="ResponseCacheOptions.FillLockTtl"/>:
    /// taken, true); a live holder keeps its lock however slow its call, and after <see cref="FollowerWait"/> of waiting
    /// the call goes upstream without it (false), as a follower in one instance does. Each time the lock is taken the cache is looked at once more:
    /// a leader (of this instance or another) may have stored its entry and let go since this call's first look.
    /// </summary>
    private async ValueTask<(bool Locked, CachedResponse? Filled)> LeadAcrossInstancesAsync(string key, CancellationToken cancellationToken)
    {
        if (await _fillLock.TryAcquireAsync(key, cancellationToken).ConfigureAwait(false)) return await TakenAsync(key, cancellationToken).ConfigureAwait(false);
        var started = time.GetTimestamp();
        var delay = TimeSpan.FromMilliseconds(10);
        while (time.GetElapsedTime(started) < FollowerWait)
        {
            await Task.Delay(delay, time, cancellationToken).ConfigureAwait(false);
            if (delay < FillPollInterval) delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, FillPollInterval.Ticks));
            if (await cache.GetAsync(key, cancellationToken).ConfigureAwait(false) is { } filled) return (false, filled);
            // free again: the holder failed or died, or stored its entry and let go between the two looks
            if (await _fillLock.TryAcquireAsync(key, cancellationToken).ConfigureAwait(false)) return await TakenAsync(key, cancellationToken).ConfigureAwait(false);
        }
        return (false, null);
    }

    /// <summary>The lock is this call's: the entry stored meanwhile is served (and the lock given back), else the call leads.</summary>
    private async ValueTask<(bool Locked, CachedResponse? Filled)> TakenAsync(string key, CancellationToken cancellationToken)
    {
        if (await cache.GetAsync(key, cancellationToken).ConfigureAwait(false) is not { } late) return (true, null);
        await _fillLock.ReleaseAsync(key).ConfigureAwait(false);
        return (false, late);
    }

    /// <summary>Ends the call with a cached answer: $0, the saving of the call it replays.</summary>
    internal static void Hit(LeverCall call, CachedResponse hit, bool semantic)
    {
        call.CacheHit = hit;
        call.SemanticHit = semantic;
        call.CacheStatus = semantic ? "semantic-hit" : "hit";
        call.Provider = semantic ? "bursar-semantic-cache" : "bursar-cache";
        call.Summary.Model = hit.Model;
        call.StatusCode = 200;
    }

    /// <summary>What a cache keeps of an answer: the bytes the caller got and what the call cost (the saving of each later hit).</summary>
    internal static CachedResponse Stored(LeverCall call, (byte[] Body, string ContentType) answer, CallMeter meter, TimeProvider time) =>
        new(answer.Body, answer.ContentType, call.Summary.Model, meter.CostOf(call), call.Summary.Usage.TotalInputTokens, call.Summary.Usage.OutputTokens, time.GetUtcNow());
}

public static class ExactCacheStageExtensions
{
    /// <summary>Identical deterministic requests answered from the response cache (options: <see cref="ResponseCacheOptions"/>).</summary>
    public static LeverPipelineBuilder UseExactCache(this LeverPipelineBuilder builder) => builder.Use<ExactCacheStage>();
}
