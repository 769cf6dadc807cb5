using System.Collections.Concurrent;
using Bursar.Core.Keys;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;

namespace Bursar.Gateway.Auth;

/// <summary>
/// Resolves the caller's Bursar virtual key (<c>Authorization: Bearer bsr_…</c> or <c>x-api-key: bsr_…</c>).
/// Keys are read from the store and trusted for <see cref="BursarOptions.KeyCacheDuration"/>, so a revocation takes effect within it.
/// </summary>
public sealed class KeyAuthenticator(IKeyStore store, BursarOptions options, TimeProvider time)
{
    private const int MaxCachedEntries = 100_000;
    private readonly ConcurrentDictionary<string, (VirtualKey? Key, long Until)> _cache = new(StringComparer.Ordinal);
    private readonly long _ttlTicks = (long)(options.KeyCacheDuration.TotalSeconds * time.TimestampFrequency);

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
        var now = time.GetTimestamp();
        if (!_cache.TryGetValue(secret, out var entry) || entry.Until < now)
        {
            var key = secret.Length > 256 ? null : await store.FindByHashAsync(VirtualKey.HashSecret(secret), ct).ConfigureAwait(false);
            entry = (key, now + _ttlTicks);
            if (key is not null || _cache.Count < MaxCachedEntries) _cache[secret] = entry;
        }
        if (entry.Key is null)
            return (null, ProviderError.Unauthorized($"Invalid Bursar virtual key '{VirtualKey.DisplayPrefix(secret)}…': no such key. Provider keys are not accepted here; use a key from `bursar keys create`."));
        if (entry.Key.IsRevoked)
            return (null, ProviderError.Unauthorized($"Bursar virtual key {entry.Key.Prefix}… was revoked at {entry.Key.RevokedAt:u}."));
        return (entry.Key, null);
    }
}
