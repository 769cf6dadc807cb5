using Bursar.Hosting;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Auth;

/// <summary>What an admin credential check found.</summary>
public enum AdminCheck { Ok, Missing, Wrong, Throttled }

/// <summary>
/// The admin credential: the admin key (<c>x-admin-key</c> or <c>Authorization: Bearer</c>) or a dashboard session cookie.
/// Keys are compared as SHA-256 hashes in constant time (the length of the key does not leak); sessions are 32 random bytes,
/// kept only as their hash, with a fixed lifetime (<see cref="BursarOptions.DashboardSessionLifetime"/>).
/// Wrong keys and failed sign-ins are counted per client IP: after <see cref="BursarOptions.AdminMaxFailuresPerMinute"/> in a minute,
/// every admin attempt from that IP is answered 429 (with retry-after) until the minute is over, before the key is even looked at.
/// </summary>
public sealed partial class AdminAuth(BursarOptions options, TimeProvider time, ILogger<AdminAuth> logger)
{
    /// <summary>The name of the HttpOnly cookie the dashboard's sign-in sets; it holds a session token, never the admin key.</summary>
    public const string SessionCookie = "bursar_admin";

    private const int MaxSessions = 10_000;
    private const int MaxTrackedClients = 100_000;
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(1);

    private readonly byte[]? _adminHash = string.IsNullOrEmpty(options.AdminKey) ? null : Hash(options.AdminKey);
    private readonly ConcurrentDictionary<string, DateTimeOffset> _sessions = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Failures> _failures = new(StringComparer.Ordinal);

    private sealed class Failures
    {
        public DateTimeOffset WindowStart;
        public int Count;
        public DateTimeOffset BlockedUntil;
    }

    public bool Enabled => _adminHash is not null;

    /// <summary>SHA-256 of the UTF-8 text: fixed-size, so comparing two of them in constant time leaks nothing about either length.</summary>
    public static byte[] Hash(string text) => SHA256.HashData(Encoding.UTF8.GetBytes(text));

    /// <summary>Constant-time comparison of a presented secret with the expected one, through their hashes.</summary>
    public static bool SecretEquals(string given, string expected) => CryptographicOperations.FixedTimeEquals(Hash(given), Hash(expected));

    public bool IsAdminKey(string given) => _adminHash is not null && CryptographicOperations.FixedTimeEquals(Hash(given), _adminHash);

    /// <summary>The client's address as the throttle counts it (the socket's peer; behind a reverse proxy that is the proxy).</summary>
    public static string ClientOf(HttpContext ctx) => ctx.Connection.RemoteIpAddress?.ToString() ?? "unknown";

    /// <summary>Checks the request's admin credential: a valid session cookie, else the admin key; a wrong key counts as a failure of its IP.</summary>
    public AdminCheck Check(HttpContext ctx, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        var req = ctx.Request;
        var given = req.Headers["x-admin-key"].ToString();
        if (string.IsNullOrEmpty(given) && req.Headers.Authorization.ToString() is { } auth && auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) given = auth[7..].Trim();
        if (string.IsNullOrEmpty(given))
        {
            // a session token is 256 random bits: guessing is hopeless, and an expired cookie polling the reports must not lock its owner out
            return req.Cookies[SessionCookie] is { Length: > 0 } token && IsSession(token) ? AdminCheck.Ok : AdminCheck.Missing;
        }
        return Attempt(ctx, IsAdminKey(given), out retryAfter);
    }

    /// <summary>
    /// Records one attempt with the admin key from the request's client: a blocked client is refused (<see cref="AdminCheck.Throttled"/>)
    /// whatever it sent; a wrong key counts; the right key clears the client's count.
    /// </summary>
    public AdminCheck Attempt(HttpContext ctx, bool correct, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        var client = ClientOf(ctx);
        var now = time.GetUtcNow();
        if (_failures.TryGetValue(client, out var f))
        {
            lock (f)
            {
                if (f.BlockedUntil > now)
                {
                    retryAfter = f.BlockedUntil - now;
                    return AdminCheck.Throttled;
                }
            }
        }
        if (correct)
        {
            _failures.TryRemove(client, out _);
            return AdminCheck.Ok;
        }
        if (_failures.Count >= MaxTrackedClients) Prune(now);
        f = _failures.GetOrAdd(client, _ => new Failures { WindowStart = now });
        var blocked = false;
        lock (f)
        {
            if (now - f.WindowStart >= Window)
            {
                f.WindowStart = now;
                f.Count = 0;
            }
            if (++f.Count >= options.AdminMaxFailuresPerMinute)
            {
                f.BlockedUntil = f.WindowStart + Window;
                retryAfter = f.BlockedUntil - now;
                blocked = true;
            }
        }
        if (blocked) LogThrottled(logger, client, f.Count, (int)Math.Ceiling(retryAfter.TotalSeconds));
        return AdminCheck.Wrong;
    }

    private void Prune(DateTimeOffset now)
    {
        foreach (var (client, f) in _failures)
        {
            bool stale;
            lock (f) stale = f.BlockedUntil <= now && now - f.WindowStart >= Window;
            if (stale) _failures.TryRemove(client, out _);
        }
        // still full of live entries (a spread-out attack): forget those that are not blocked rather than grow without bound
        if (_failures.Count >= MaxTrackedClients)
            foreach (var (client, f) in _failures)
            {
                bool blocked;
                lock (f) blocked = f.BlockedUntil > now;
                if (!blocked) _failures.TryRemove(client, out _);
            }
    }

    /// <summary>Starts a dashboard session: a random token for the cookie; only its hash is kept, until the fixed lifetime ends.</summary>
    public string CreateSession()
    {
        var now = time.GetUtcNow();
        if (_sessions.Count >= MaxSessions)
        {
            foreach (var (h, until) in _sessions)
                if (until <= now) _sessions.TryRemove(h, out _);
            // still full: the oldest sessions make room (every one of them was opened with the admin key)
            foreach (var (h, _) in _sessions.OrderBy(s => s.Value).Take(Math.Max(0, _sessions.Count - MaxSessions + 1)))
                _sessions.TryRemove(h, out _);
        }
        Span<byte> bytes = stackalloc byte[32];
        RandomNumberGenerator.Fill(bytes);
        var token = Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        _sessions[Convert.ToHexStringLower(Hash(token))] = now + options.DashboardSessionLifetime;
        return token;
    }

    public bool IsSession(string token)
    {
        if (token.Length > 64) return false;
        var h = Convert.ToHexStringLower(Hash(token));
        if (!_sessions.TryGetValue(h, out var until)) return false;
        if (until > time.GetUtcNow()) return true;
        _sessions.TryRemove(h, out _);
        return false;
    }

    public void EndSession(string token)
    {
        if (token.Length <= 64) _sessions.TryRemove(Convert.ToHexStringLower(Hash(token)), out _);
    }

    public int SessionCount => _sessions.Count;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Admin sign-in throttled for client {Client}: {Failures} wrong admin keys within a minute; its admin requests are refused for {RetryAfterSeconds} s")]
    private static partial void LogThrottled(ILogger logger, string client, int failures, int retryAfterSeconds);
}
