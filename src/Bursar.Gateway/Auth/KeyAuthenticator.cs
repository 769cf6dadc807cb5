using Bursar.Hosting;
using System.Collections.Concurrent;
using Bursar.Core.Keys;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Auth;

/// <summary>
/// Resolves the caller's Bursar virtual key (<c>Authorization: Bearer bsr_…</c> or <c>x-api-key: bsr_…</c>).
/// Keys are found by the SHA-256 of the secret (no secret is compared, or kept, in memory) and trusted for
/// <see cref="BursarOptions.KeyCacheDuration"/>. A revocation through this instance's admin API evicts the key at once
/// (<see cref="Evict"/>); one made elsewhere (the CLI, another instance) takes effect within the cache duration.
/// While the key store is unreachable (PostgreSQL restarting, a network cut) a key this instance has seen goes on being
/// trusted as it was last read, the store retried at most once a second per key, with a logged warning; a key it has
/// not seen gets a 503 naming the store (retry-after), never a 500.
/// </summary>
public sealed partial class KeyAuthenticator(IKeyStore store, BursarOptions options, TimeProvider time, ILogger<KeyAuthenticator> logger)
{
    private const int MaxCachedEntries = 100_000;
    private readonly ConcurrentDictionary<string, (VirtualKey? Key, long Until)> _cache = new(StringComparer.Ordinal);
    // one store read per key at a time: a burst of calls on a cold (or just expired) key waits for the same read instead of
    // each taking a store connection (200 concurrent first calls would otherwise exhaust a PostgreSQL's connections)
    private readonly ConcurrentDictionary<string, Task<VirtualKey?>> _reads = new(StringComparer.Ordinal);
    private readonly long _ttlTicks = (long)(options.KeyCacheDuration.TotalSeconds * time.TimestampFrequency);
    private long _evictions;

    public static string? ReadSecret(HttpRequest request)
    {
        var auth = request.Headers.Authorization;
        if (auth.Count > 0)
        {
            var v = auth[0];
            if (v is not null && v.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return v[7..].Trim();
        }
        var x = request.Headers["x-api-key"];
        return x.Count > 0 ? x[0]?.Trim() : null;
    }

    public async ValueTask<(VirtualKey? Key, ProviderError? Error)> AuthenticateAsync(HttpRequest request, CancellationToken ct)
    {
        var secret = ReadSecret(request);
        if (string.IsNullOrEmpty(secret))
            return (null, ProviderError.Unauthorized("Missing Bursar virtual key: send it as 'Authorization: Bearer bsr_…' or 'x-api-key: bsr_…' (create one with `bursar keys create`)."));
        if (secret.Length > 256)
            return (null, ProviderError.Unauthorized($"Invalid Bursar virtual key '{VirtualKey.DisplayPrefix(secret)}…': no such key. Provider keys are not accepted here; use a key from `bursar keys create`."));
        var hash = VirtualKey.HashSecret(secret);
        var now = time.GetTimestamp();
        if (!_cache.TryGetValue(hash, out var entry) || entry.Until < now)
        {
            var generation = Interlocked.Read(ref _evictions);
            VirtualKey? key = null;
            Exception? down = null;
            try
            {
                key = await ReadAsync(hash).WaitAsync(ct).ConfigureAwait(false);
            }
            catch (Exception e) when (!ct.IsCancellationRequested && e is not OutOfMemoryException)
            {
                down = e;
            }
            if (down is null) entry = (key, now + _ttlTicks);
            else if (entry.Key is null)
                return (null, new ProviderError(503, $"Bursar's key store is unreachable ({down.GetType().Name}: {down.Message}), so key '{VirtualKey.DisplayPrefix(secret)}…' cannot be checked; retry shortly.", ErrorSource.Gateway)
                    { TypeOverride = "key_store_unavailable", Code = "key_store_unavailable", RetryAfterSeconds = 2 });
            else
            {
                // trusted as last read; the store is asked again in a second, not on every call
                LogStaleKey(logger, entry.Key.Id, down.GetType().Name, down.Message);
                entry = (entry.Key, now + Math.Min(_ttlTicks, time.TimestampFrequency));
            }
            // a revoke that evicted while this read was in flight may have been read before it landed: do not cache that answer
            if (generation == Interlocked.Read(ref _evictions) && (entry.Key is not null || _cache.Count < MaxCachedEntries)) _cache[hash] = entry;
        }
        if (entry.Key is null)
            return (null, ProviderError.Unauthorized($"Invalid Bursar virtual key '{VirtualKey.DisplayPrefix(secret)}…': no such key. Provider keys are not accepted here; use a key from `bursar keys create`."));
        if (entry.Key.IsRevoked)
            return (null, ProviderError.Unauthorized($"Bursar virtual key {entry.Key.Prefix}… was revoked at {entry.Key.RevokedAt:u}."));
        return (entry.Key, null);
    }

    /// <summary>The store's answer for <paramref name="hash"/>, shared by every call asking while it is read (not cancelled by any one caller).</summary>
    private Task<VirtualKey?> ReadAsync(string hash)
    {
        if (_reads.TryGetValue(hash, out var running)) return running;
        var mine = new TaskCompletionSource<VirtualKey?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var read = _reads.GetOrAdd(hash, mine.Task);
        if (!ReferenceEquals(read, mine.Task)) return read;
        _ = ReadIntoAsync(hash, mine);
        return mine.Task;
    }

    private async Task ReadIntoAsync(string hash, TaskCompletionSource<VirtualKey?> into)
    {
        try { into.SetResult(await store.FindByHashAsync(hash, CancellationToken.None).ConfigureAwait(false)); }
        catch (Exception e) { into.SetException(e); }
        finally { _reads.TryRemove(new KeyValuePair<string, Task<VirtualKey?>>(hash, into.Task)); }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Key store unreachable ({ErrorType}: {Error}): key {KeyId} is trusted as last read; retried in a second")]
    private static partial void LogStaleKey(ILogger logger, string keyId, string errorType, string error);

    /// <summary>Forgets a key (by id or displayed prefix, as revoke takes it) so the next call reads the store again.</summary>
    public void Evict(string idOrPrefix)
    {
        Interlocked.Increment(ref _evictions);
        foreach (var (hash, entry) in _cache)
            if (entry.Key is { } k && (k.Id == idOrPrefix || k.Prefix == idOrPrefix)) _cache.TryRemove(hash, out _);
    }
}
