using Bursar.Hosting;
using System.Collections.Concurrent;
using Bursar.Core.Keys;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;

namespace Bursar.Gateway.Auth;

/// <summary>
/// Resolves the caller's Bursar virtual key (<c>Authorization: Bearer bsr_…</c> or <c>x-api-key: bsr_…</c>).
/// Keys are found by the SHA-256 of the secret (no secret is compared, or kept, in memory) and trusted for
/// <see cref="BursarOptions.KeyCacheDuration"/>. A revocation through this instance's admin API evicts the key at once
/// (<see cref="Evict"/>); one made elsewhere (the CLI, another instance) takes effect within the cache duration.
/// </summary>
public sealed class KeyAuthenticator(IKeyStore store, BursarOptions options, TimeProvider time)
{
    private const int MaxCachedEntries = 100_000;
    private readonly ConcurrentDictionary<string, (VirtualKey? Key, long Until)> _cache = new(StringComparer.Ordinal);
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
            var key = await store.FindByHashAsync(hash, ct).ConfigureAwait(false);
            entry = (key, now + _ttlTicks);
            // a revoke that evicted while this read was in flight may have been read before it landed: do not cache that answer
            if (generation == Interlocked.Read(ref _evictions) && (key is not null || _cache.Count < MaxCachedEntries)) _cache[hash] = entry;
        }
        if (entry.Key is null)
            return (null, ProviderError.Unauthorized($"Invalid Bursar virtual key '{VirtualKey.DisplayPrefix(secret)}…': no such key. Provider keys are not accepted here; use a key from `bursar keys create`."));
        if (entry.Key.IsRevoked)
            return (null, ProviderError.Unauthorized($"Bursar virtual key {entry.Key.Prefix}… was revoked at {entry.Key.RevokedAt:u}."));
        return (entry.Key, null);
    }

    /// <summary>Forgets a key (by id or displayed prefix, as revoke takes it) so the next call reads the store again.</summary>
    public void Evict(string idOrPrefix)
    {
        Interlocked.Increment(ref _evictions);
        foreach (var (hash, entry) in _cache)
            if (entry.Key is { } k && (k.Id == idOrPrefix || k.Prefix == idOrPrefix)) _cache.TryRemove(hash, out _);
    }
}
